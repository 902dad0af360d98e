"""Files and folders on a local disk, in Google Cloud Storage or S3, behind one interface.

A location is a local path, `gs://bucket/key` or `s3://bucket/key` (s3.py). In a bucket a "folder" is a
key prefix. Writes are atomic: a local file is written beside its final name
and renamed into place; an object is uploaded whole from a finished local
temporary file.

Conditional writes (for the run lock, `storage.lock`) are made atomic by the
store itself, one method each: create-if-absent, replace-if-generation, read
(with the generation) and delete-if-generation. Locally: O_EXCL, with the
folder locked (flock) for the compare-and-replace; in Cloud Storage: the
ifGenerationMatch precondition (0 for create-if-absent). An S3 backend maps them
to `If-None-Match: *` and `If-Match: <ETag>`. The google-cloud-storage client honours
GOOGLE_APPLICATION_CREDENTIALS and STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, ClassVar

GCS_SCHEME = "gs://"
S3_SCHEME = "s3://"
_READ_BUFFER = 1 << 20
_TEMP_SUFFIX = ".tmp"
# What tempfile.mkstemp(prefix=".<name>.", suffix=".tmp") makes.
_TEMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


class StorageError(Exception):
    """A location that cannot be read or written (missing, unreachable, denied)."""


def is_hidden(name: str) -> bool:
    """Markers and side files (`_SUCCESS`, `_rejects.*`, dot files) are not data."""
    return name.startswith("_") or name.startswith(".")


def is_part_name(name: str) -> bool:
    """Names of data files inside a folder: part-*, *.json, *.ndjson, *.parquet."""
    if is_hidden(name):
        return False
    return name.startswith("part-") or name.endswith((".json", ".ndjson", ".parquet"))


class PendingWrites:
    """Files written in full that take their final names only at `commit()`, in the order
    written; `discard()` leaves none of them behind. A stage gives its outputs their names only
    once its rejects list is in place: a failure leaves nothing under a final name."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], None], Callable[[], None]]] = []

    def add(self, commit: Callable[[], None], discard: Callable[[], None]) -> None:
        self._pending.append((commit, discard))

    def commit(self) -> None:
        while self._pending:
            commit, discard = self._pending.pop(0)
            try:
                commit()
            except BaseException:
                discard()
                raise

    def discard(self) -> None:
        pending, self._pending = self._pending, []
        for _, discard in pending:
            with contextlib.suppress(OSError):
                discard()


class Location:
    """Base class; use `location()` to make one."""

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and self.uri == other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    uri: str

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def has_data(self) -> bool:
        """A data file, or a folder holding at least one data file."""
        return self.is_file() or (self.is_dir() and any(is_part_name(c.name) for c in self.children()))

    def parts(self) -> list[Location]:
        """The data files to read: itself if a file, else its data files (sorted by name)."""
        if self.is_file():
            return [self]
        if not self.is_dir():
            raise StorageError(f"{self.uri} does not exist")
        return [child for child in self.children() if is_part_name(child.name)]

    # Implemented by the subclasses.
    def create_bucket(self) -> None:
        """Make sure the bucket (or local folder) exists."""
        raise NotImplementedError

    def join(self, *names: str) -> Location:
        raise NotImplementedError

    def is_file(self) -> bool:
        raise NotImplementedError

    def is_dir(self) -> bool:
        raise NotImplementedError

    def children(self) -> list[Location]:
        """Files directly inside this folder, sorted by name."""
        raise NotImplementedError

    def walk(self) -> list[tuple[str, Location]]:
        """(relative name, file) for every file below this folder."""
        raise NotImplementedError

    def folders(self) -> list[str]:
        """Names of the folders directly inside this one, sorted (a listing of every file below it,
        unless the subclass can list one level)."""
        return sorted({name.split("/", 1)[0] for name, _ in self.walk() if "/" in name})

    def open_read(self) -> IO[bytes]:
        raise NotImplementedError

    def version(self) -> str:
        """A token that changes whenever this file is written again (size and modification
        time, or object generation): what a cache made from the file is tied to."""
        raise NotImplementedError

    @contextlib.contextmanager
    def open_write(self, pending: PendingWrites | None = None) -> Iterator[IO[bytes]]:
        """A binary file that appears at this location only if the block succeeds (with
        `pending`: only once `pending` is committed)."""
        raise NotImplementedError
        yield

    def delete(self) -> None:
        raise NotImplementedError

    # Conditional writes: `generation` is the store's token for one version of the object.
    def create_if_absent(self, data: bytes) -> str | None:
        """Write `data` here only if nothing is here: the new generation, or None if something is."""
        raise NotImplementedError

    def replace_if_generation(self, data: bytes, generation: str) -> str | None:
        """Replace the object only while it is at `generation`: the new generation, or None if it
        changed or is gone."""
        raise NotImplementedError

    def read_generation(self) -> tuple[bytes, str] | None:
        """The object's bytes and their generation, or None if there is no object."""
        raise NotImplementedError

    def delete_if_generation(self, generation: str) -> bool:
        """Delete the object only while it is at `generation`; whether it was deleted."""
        raise NotImplementedError

    def prune(self) -> None:
        """Remove empty folders below this one, where folders exist."""

    def clear_stale_temporaries(self, names: Iterable[str] | None = None) -> int:
        """Delete what killed writers left in this folder (of the files `names`, if given): temporary
        files, or unfinished multipart uploads in S3 (gs:// expires unfinished uploads itself); how many."""
        return 0

    def read_bytes(self) -> bytes:
        with self.open_read() as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        with self.open_write() as f:
            f.write(data)


class LocalLocation(Location):
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.uri = str(self.path)

    def create_bucket(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def join(self, *names: str) -> LocalLocation:
        return LocalLocation(self.path.joinpath(*names))

    def is_file(self) -> bool:
        return self.path.is_file()

    def is_dir(self) -> bool:
        return self.path.is_dir()

    def children(self) -> list[Location]:
        try:
            entries = sorted(self.path.iterdir())
        except OSError as exc:
            raise StorageError(f"cannot list {self.uri}: {exc.strerror}") from None
        return [LocalLocation(p) for p in entries if p.is_file()]

    def folders(self) -> list[str]:
        try:
            return sorted(p.name for p in self.path.iterdir() if p.is_dir())
        except OSError as exc:
            raise StorageError(f"cannot list {self.uri}: {exc.strerror}") from None

    def walk(self) -> list[tuple[str, Location]]:
        if not self.path.is_dir():
            return []
        return sorted(
            (str(p.relative_to(self.path)), LocalLocation(p)) for p in self.path.rglob("*") if p.is_file()
        )

    def open_read(self) -> IO[bytes]:
        try:
            # Shares are tens of kilobytes a line: read in large blocks.
            return open(self.path, "rb", buffering=_READ_BUFFER)
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri}: {exc.strerror}") from None

    def version(self) -> str:
        try:
            info = self.path.stat()
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri}: {exc.strerror}") from None
        return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"

    @contextlib.contextmanager
    def open_write(self, pending: PendingWrites | None = None) -> Iterator[IO[bytes]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=_TEMP_SUFFIX, dir=self.path.parent
            )
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                try:
                    f.flush()
                    os.fsync(f.fileno())
                    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs follow the umask
                except OSError as exc:  # a full disk shows here
                    raise StorageError(f"cannot write {self.uri}: {exc.strerror or exc}") from None
            if pending is None:
                self._rename(tmp)
            else:
                pending.add(lambda: self._rename(tmp), lambda: os.unlink(tmp))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _rename(self, tmp: str) -> None:
        try:
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri}: {exc.strerror or exc}") from None

    def clear_stale_temporaries(self, names: Iterable[str] | None = None) -> int:
        """Delete the temporary files a killed writer left in this folder (of `names` only, if
        given); how many. Only names our writers make match: `.<name>.<8 random>.tmp`."""
        if not self.path.is_dir():
            return 0
        wanted = None if names is None else set(names)
        removed = 0
        for path in self.path.iterdir():
            match = _TEMP_NAME.fullmatch(path.name)
            if match and (wanted is None or match.group(1) in wanted) and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def delete(self) -> None:
        # Another process may delete the same files at the same moment: gone is what we want.
        if self.path.is_dir():
            while self.path.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @contextlib.contextmanager
    def _folder_locked(self) -> Iterator[None]:
        """Conditional writes in this file's folder one at a time, across processes."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri}: {exc.strerror}") from None
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)

    @staticmethod
    def _generation(info: os.stat_result, data: bytes) -> str:
        # The file and its bytes: a replaced file is a new inode, and equal bytes mean the same lock.
        return f"{info.st_ino}:{info.st_mtime_ns}:{hashlib.sha256(data).hexdigest()[:16]}"

    def _write_new(self, path: Path | str, data: bytes) -> str:
        """`data` into a new file at `path` (O_EXCL: never one that exists); its generation."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return self._generation(os.fstat(f.fileno()), data)

    def _temporary(self) -> str:
        return str(self.path.parent / f".{self.path.name}.{os.urandom(4).hex()}{_TEMP_SUFFIX}")

    def create_if_absent(self, data: bytes) -> str | None:
        with self._folder_locked():
            try:
                return self._write_new(self.path, data)
            except FileExistsError:
                return None
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise StorageError(f"cannot write {self.uri}: {exc.strerror}") from None

    def replace_if_generation(self, data: bytes, generation: str) -> str | None:
        with self._folder_locked():
            found = self.read_generation()
            if found is None or found[1] != generation:
                return None
            temporary = self._temporary()
            try:
                new = self._write_new(temporary, data)
                os.replace(temporary, self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise StorageError(f"cannot write {self.uri}: {exc.strerror}") from None
            return new

    def read_generation(self) -> tuple[bytes, str] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
                return data, self._generation(os.fstat(f.fileno()), data)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri}: {exc.strerror}") from None

    def delete_if_generation(self, generation: str) -> bool:
        with self._folder_locked():
            found = self.read_generation()
            if found is None or found[1] != generation:
                return False
            try:
                self.path.unlink()
            except OSError as exc:
                raise StorageError(f"cannot delete {self.uri}: {exc.strerror}") from None
            return True

    def prune(self) -> None:
        """Remove empty folders below this one (objects in buckets leave none behind)."""
        for folder in sorted(
            (p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            if not any(folder.iterdir()):
                folder.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@lru_cache(maxsize=1)
def _gcs_client() -> Any:
    try:
        from google.cloud import storage
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise StorageError("google-cloud-storage is not installed") from exc
    try:
        return storage.Client()
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
        raise StorageError(f"cannot create a Cloud Storage client: {exc}") from None


def _gcs_call(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        return func(*args, **kwargs)
    except api_exceptions.NotFound:
        raise StorageError(f"{what}: not found") from None
    except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
        raise StorageError(f"{what}: {exc.__class__.__name__}: {getattr(exc, 'message', exc)}") from None
    except OSError as exc:  # connection refused and the like
        raise StorageError(f"{what}: {exc}") from None


def _unless_precondition_fails(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`func`'s result, or None when the store refused it: its precondition failed (HTTP 412) or
    the object is gone (404)."""
    from google.api_core import exceptions as api_exceptions

    def call() -> Any:
        try:
            return func(*args, **kwargs)
        except (api_exceptions.PreconditionFailed, api_exceptions.NotFound):
            return None

    return _gcs_call(what, call)


class ObjectLocation(Location):
    """An object (or a prefix) in a bucket: written whole through an unnamed temporary file
    (nothing is left behind even if the process is killed), then uploaded by `_upload`."""

    SCHEME: ClassVar[str]

    def __init__(self, bucket: str, key: str) -> None:
        if not bucket:
            raise StorageError(f"a location in {self.SCHEME} needs a bucket name")
        self.bucket_name = bucket
        self.key = key.strip("/")
        self.uri = f"{self.SCHEME}{bucket}/{self.key}" if self.key else f"{self.SCHEME}{bucket}"

    def _prefix(self) -> str:
        return f"{self.key}/" if self.key else ""

    @contextlib.contextmanager
    def open_write(self, pending: PendingWrites | None = None) -> Iterator[IO[bytes]]:
        tmp = tempfile.TemporaryFile(prefix="prio-upload-")  # noqa: SIM115  # closed after its upload
        try:
            yield tmp
            try:
                tmp.flush()
            except OSError as exc:
                raise StorageError(f"cannot write {self.uri}: {exc.strerror or exc}") from None
        except BaseException:
            tmp.close()
            raise
        if pending is None:
            self._upload(tmp)
        else:
            pending.add(lambda: self._upload(tmp), tmp.close)

    def _upload(self, tmp: IO[bytes]) -> None:
        """Upload the spooled file (from its start) to this object, then close it."""
        raise NotImplementedError


class GcsLocation(ObjectLocation):
    SCHEME = GCS_SCHEME

    @property
    def _bucket(self) -> Any:
        return _gcs_client().bucket(self.bucket_name)

    def create_bucket(self) -> None:
        client = _gcs_client()

        def create() -> None:
            if client.lookup_bucket(self.bucket_name) is None:
                client.create_bucket(self.bucket_name)

        _gcs_call(f"cannot create bucket {self.bucket_name}", create)

    def join(self, *names: str) -> GcsLocation:
        key = "/".join([self.key, *names]) if self.key else "/".join(names)
        return GcsLocation(self.bucket_name, key)

    def is_file(self) -> bool:
        if not self.key:
            return False
        return bool(_gcs_call(f"cannot read {self.uri}", self._bucket.blob(self.key).exists))

    def is_dir(self) -> bool:
        blobs = _gcs_call(
            f"cannot list {self.uri}",
            lambda: list(_gcs_client().list_blobs(self.bucket_name, prefix=self._prefix(), max_results=1)),
        )
        return bool(blobs)

    def children(self) -> list[Location]:
        prefix = self._prefix()

        def names() -> list[str]:
            blobs = _gcs_client().list_blobs(self.bucket_name, prefix=prefix, delimiter="/")
            return sorted(b.name for b in blobs if b.name != prefix)

        return [GcsLocation(self.bucket_name, name) for name in _gcs_call(f"cannot list {self.uri}", names)]

    def folders(self) -> list[str]:
        prefix = self._prefix()

        def names() -> list[str]:
            blobs = _gcs_client().list_blobs(self.bucket_name, prefix=prefix, delimiter="/")
            for _ in blobs:  # the prefixes are known once every page was read
                pass
            return sorted(p[len(prefix) :].rstrip("/") for p in blobs.prefixes)

        return list(_gcs_call(f"cannot list {self.uri}", names))

    def walk(self) -> list[tuple[str, Location]]:
        prefix = self._prefix()

        def names() -> list[str]:
            return sorted(b.name for b in _gcs_client().list_blobs(self.bucket_name, prefix=prefix))

        return [
            (name[len(prefix) :], GcsLocation(self.bucket_name, name))
            for name in _gcs_call(f"cannot list {self.uri}", names)
            if name != prefix
        ]

    def open_read(self) -> IO[bytes]:
        blob = self._bucket.blob(self.key)
        # Fetch metadata first so a missing object fails here, clearly.
        _gcs_call(f"cannot read {self.uri}", blob.reload)
        reader = _gcs_call(f"cannot read {self.uri}", blob.open, "rb", chunk_size=8 * 1024 * 1024)
        # The blob reader has no peek(), so readline() alone would call read(1) per byte.
        return io.BufferedReader(reader, buffer_size=_READ_BUFFER)

    def version(self) -> str:
        blob = _gcs_call(f"cannot read {self.uri}", self._bucket.get_blob, self.key)
        if blob is None:
            raise StorageError(f"cannot read {self.uri}: no such object")
        return f"{blob.size}:{blob.generation}"

    def _upload(self, tmp: IO[bytes]) -> None:
        with tmp:
            blob = self._bucket.blob(self.key)
            _gcs_call(f"cannot write {self.uri}", blob.upload_from_file, tmp, rewind=True)

    def delete(self) -> None:
        # Another process may delete the same objects at the same moment: gone is what we want.
        if self.is_file():
            _unless_precondition_fails(f"cannot delete {self.uri}", self._bucket.blob(self.key).delete)
        for _, child in self.walk():
            if isinstance(child, GcsLocation):
                _unless_precondition_fails(f"cannot delete {child.uri}", child._bucket.blob(child.key).delete)

    def _upload_if(self, data: bytes, generation: int) -> str | None:
        blob = self._bucket.blob(self.key)

        def upload() -> bool:
            blob.upload_from_string(data, if_generation_match=generation)
            return True

        done = _unless_precondition_fails(f"cannot write {self.uri}", upload)
        return None if done is None else str(blob.generation)

    def create_if_absent(self, data: bytes) -> str | None:
        return self._upload_if(data, 0)

    def replace_if_generation(self, data: bytes, generation: str) -> str | None:
        return self._upload_if(data, int(generation))

    def read_generation(self) -> tuple[bytes, str] | None:
        for _attempt in range(5):  # the object may be replaced between its metadata and its bytes
            blob = _gcs_call(f"cannot read {self.uri}", self._bucket.get_blob, self.key)
            if blob is None:
                return None
            generation = blob.generation  # (a download may reset the blob's properties)
            data = _unless_precondition_fails(
                f"cannot read {self.uri}", blob.download_as_bytes, if_generation_match=generation
            )
            if data is not None:
                return data, str(generation)
        raise StorageError(f"cannot read {self.uri}: it keeps changing")

    def delete_if_generation(self, generation: str) -> bool:
        blob = self._bucket.blob(self.key)

        def delete() -> bool:
            blob.delete(if_generation_match=int(generation))
            return True

        return bool(_unless_precondition_fails(f"cannot delete {self.uri}", delete))


def overlapping(a: Location, b: Location) -> bool:
    """Whether `a` and `b` are the same place or one lies inside the other (local paths resolved,
    so `..` and symbolic links do not hide it)."""
    if isinstance(a, LocalLocation) and isinstance(b, LocalLocation):
        first, second = a.path.resolve(), b.path.resolve()
        return first == second or first in second.parents or second in first.parents
    uri_a, uri_b = a.uri.rstrip("/") + "/", b.uri.rstrip("/") + "/"
    return type(a) is type(b) and (uri_a.startswith(uri_b) or uri_b.startswith(uri_a))


def location(path: str | os.PathLike | Location) -> Location:
    """A Location from a local path, a gs:// or an s3:// URI."""
    if isinstance(path, Location):
        return path
    text = os.fspath(path)
    if text.startswith(GCS_SCHEME):
        bucket, _, key = text[len(GCS_SCHEME) :].partition("/")
        return GcsLocation(bucket, key)
    if text.startswith(S3_SCHEME):
        from .s3 import s3_location

        return s3_location(text)
    return LocalLocation(text)
