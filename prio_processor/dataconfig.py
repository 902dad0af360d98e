"""DATA_CONFIG: the batches a deployment processes, as a JSON list of {batch_id, n_data}.

A batch id becomes a folder name (`batch_id=<id>`) in both servers' buckets, so
ids are held to a strict pattern here, where every script and generator reads
them; `prio`'s stage commands still accept any UTF-8 --batch-id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .engine.config import MAX_N_DATA
from .storage import Location, StorageError

# Letters, digits, '.', '_' and '-', starting with a letter or digit: never '.',
# '..', a leading '-' (an option to a command) or a path separator.
BATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class DataConfigError(StorageError):
    """A DATA_CONFIG that is not a list of valid {batch_id, n_data} objects."""


@dataclass(frozen=True)
class Batch:
    batch_id: str
    n_data: int


def check_batch_id(value: object) -> str:
    """The batch id if it is safe as a path component, else DataConfigError."""
    if not isinstance(value, str):
        raise DataConfigError(f"batch_id must be a string, got {json.dumps(value)}")
    if not BATCH_ID_PATTERN.fullmatch(value):
        raise DataConfigError(
            f"batch_id {value!a} is not allowed: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_n_data(value: object, batch_id: str) -> int:
    # bool is an int in Python, and 7.9 or "7" must not pass as 7.
    if type(value) is not int:
        raise DataConfigError(f"batch {batch_id}: n_data must be an integer, got {json.dumps(value)}")
    if not 1 <= value <= MAX_N_DATA:
        raise DataConfigError(f"batch {batch_id}: n_data must be between 1 and {MAX_N_DATA}, got {value}")
    return value


def parse(text: bytes, source: str) -> list[Batch]:
    """The batches of a DATA_CONFIG document; every problem names `source` and the entry."""
    try:
        entries = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataConfigError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise DataConfigError(f"{source} must be a non-empty JSON list of {{batch_id, n_data}} objects")
    batches = []
    for index, entry in enumerate(entries, start=1):  # as a person counts them
        if not isinstance(entry, dict) or set(entry) != {"batch_id", "n_data"}:
            raise DataConfigError(
                f"{source} entry {index}: expected an object with exactly batch_id and n_data"
            )
        try:
            batch_id = check_batch_id(entry["batch_id"])
            batches.append(Batch(batch_id, check_n_data(entry["n_data"], batch_id)))
        except DataConfigError as exc:
            raise DataConfigError(f"{source} entry {index}: {exc}") from None
    seen: set[str] = set()
    for batch in batches:
        if batch.batch_id in seen:
            raise DataConfigError(f"{source} names batch {batch.batch_id} twice")
        seen.add(batch.batch_id)
    return batches


def load(path: Location) -> list[Batch]:
    """The batches of the DATA_CONFIG file at `path` (local, gs:// or s3://)."""
    return parse(path.read_bytes(), str(path))


#: The data config of the test data generators' default (config/test-small.json links to it).
TEST_SMALL = "test-small.json"


def load_default() -> list[Batch]:
    """The batches of config/test-small.json, as the installed package ships it."""
    from importlib import resources

    shipped = resources.files("prio_processor").joinpath("data", TEST_SMALL)
    return parse(shipped.read_bytes(), f"config/{TEST_SMALL}")
