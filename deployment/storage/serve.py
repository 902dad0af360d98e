"""The storage project's GCS API server: scripts/gcs_api_server.py, with its objects on disk.

Run in prio-processor:dev by deployment/storage/docker-compose.yml, beside gcs_api_server.py
(both mounted from the clone). Like Cloud Storage, and unlike gcp-storage-emulator as it is:

- object preconditions (`ifGenerationMatch`) are enforced: gcs_api_server.py's layer, so that
  the run lock really locks;
- every file of the store is written whole or not at all (a temporary file renamed into
  place). The emulator rewrites its index of all objects (`.meta`) in place on every write:
  a container killed or restarted in the middle left a truncated index that the emulator
  cannot start from, and the whole store was lost, where Cloud Storage loses at most the
  upload in flight.

Objects live under STORAGE_BASE (the compose volume), so they outlive a restart.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import gcs_api_server
from gcp_storage_emulator import storage
from gcp_storage_emulator.__main__ import main

_write_in_place = storage._FileStore.write_bytes


def _write_whole(self: Any, rel: str, content: bytes) -> None:
    if self._use_memory:
        _write_in_place(self, rel, content)
        return
    path = self._disk_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside the store's root, never inside a bucket's folder; the same file system as `path`.
    fd, tmp = tempfile.mkstemp(prefix=".writing-", dir=self._disk_path(""))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    storage._FileStore.write_bytes = _write_whole
    gcs_api_server.enforce_preconditions()
    main(["start", "--host", "0.0.0.0", "--port", "9023", "--quiet"])
