#!/usr/bin/env python3
"""gcp-storage-emulator, the GCS API server of the tests and demos, with object preconditions enforced.

The emulator ignores `ifGenerationMatch` and `ifGenerationNotMatch`: a create-if-absent
(`ifGenerationMatch=0`) twice would succeed twice, and a run lock built on it would lock
nothing. This thin layer starts the emulator with every object handler that honours these
preconditions in Cloud Storage wrapped: uploads (media, multipart and every request of a
resumable upload), deletes, metadata reads, downloads and metadata patches. Before the
handler runs, the precondition is checked against the object's current generation (0 when
there is none); a failed one is answered as Cloud Storage answers it, 412 Precondition
Failed, and the handler does not run. The check and the handler run under one lock, so
concurrent requests cannot slip between them.

Usage: scripts/gcs_api_server.py --host 127.0.0.1 --port PORT [--on-disk]
In memory, or with --on-disk in the emulator's folder (STORAGE_BASE/STORAGE_DIR), where
the objects outlive a restart; any other arguments of `gcp-storage-emulator start` are
passed on.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from gcp_storage_emulator import server
from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_ONE_AT_A_TIME = threading.Lock()
Handler = Callable[..., Any]


def _object_name(request: Any, storage: Any) -> str | None:
    """The object a request is about: in its path, its query, its resumable upload or its metadata."""
    params = request.params or {}
    if params.get("object_id"):
        return str(params["object_id"])
    if request.query.get("name"):
        return str(request.query["name"][0])
    if request.query.get("upload_id"):
        try:
            return str(storage.get_resumable_file_obj(request.query["upload_id"][0])["name"])
        except NotFound:
            return None
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta", data)
        return meta.get("name") if isinstance(meta, dict) else None
    return None


def _current_generation(storage: Any, bucket: str, name: str) -> int:
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return 0


def _failed_precondition(request: Any, storage: Any) -> str | None:
    """Why the request's generation precondition fails, or None when it holds (or there is none)."""
    match = request.query.get("ifGenerationMatch")
    not_match = request.query.get("ifGenerationNotMatch")
    if not match and not not_match:
        return None
    name = _object_name(request, storage)
    if name is None:
        return None
    current = _current_generation(storage, request.params["bucket_name"], name)
    if match and int(match[0]) != current:
        return f"ifGenerationMatch={match[0]}, but {name} is at generation {current}"
    if not_match and int(not_match[0]) == current:
        return f"ifGenerationNotMatch={not_match[0]}, and {name} is at that generation"
    return None


def _guarded(handler: Handler) -> Handler:
    def run(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        with _ONE_AT_A_TIME:
            why = _failed_precondition(request, storage)
            if why is not None:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": f"Precondition Failed: {why}"}})
                return None
            return handler(request, response, storage, *args, **kwargs)

    run.__name__ = handler.__name__
    return run


def enforce_preconditions() -> None:
    """Wrap the object handlers of the emulator's routes (and its fallback upload route)."""
    wrapped = {}
    for name in ("insert", "upload_partial", "delete", "get", "download", "patch"):
        original = getattr(objects, name)
        wrapped[original] = _guarded(original)
        setattr(objects, name, wrapped[original])
    for _pattern, handlers in server.HANDLERS:
        for method, handler in handlers.items():
            if handler in wrapped:
                handlers[method] = wrapped[handler]


if __name__ == "__main__":
    enforce_preconditions()
    arguments = sys.argv[1:]
    where = [] if "--on-disk" in arguments else ["--in-memory"]
    main(["start", *where, "--quiet", *(a for a in arguments if a != "--on-disk")])
