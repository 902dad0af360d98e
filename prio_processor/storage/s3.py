"""`s3://bucket/key` locations on Amazon S3 or any S3-compatible store, through boto3.

Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, profiles, instance
roles; AWS_ENDPOINT_URL for an S3-compatible store), except for the buckets that
PRIO_S3_CONFIG names: each of those has its own endpoint and keys, so that one process
can read one organisation's bucket and write another's (see `load_config`).

Writes are atomic as for gs://: the data is spooled to an unnamed temporary file and
uploaded once complete, in one PUT or as a multipart upload, which S3 shows only once
it is completed. A writer killed mid-upload leaves an unfinished multipart upload that
no reader sees; the next write of that key, a stage starting on its output folder
(`clear_stale_temporaries`) and `delete` abort it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

from .locations import S3_SCHEME, Location, ObjectLocation, StorageError

CONFIG_ENV = "PRIO_S3_CONFIG"
_READ_BUFFER = 1 << 20
# Parts of 16 MiB, four at a time: a verify1 output of a million shares (about 65 GB) stays
# within S3's 10,000 parts per upload only with larger parts, which boto3 picks itself.
_PART_SIZE = 16 * 1024 * 1024
_CONFIG_KEYS = {"endpoint", "region", "access_key", "secret_key_file", "secret_key_env"}


@dataclass(frozen=True)
class BucketAccess:
    """How to reach one bucket: its endpoint (None: AWS's own) and keys (None: the AWS chain).

    The secret key is named, never held: a file (`secret_key_file`) or an environment
    variable (`secret_key_env`), read when the client is made.
    """

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key_file: str | None = None
    secret_key_env: str | None = None

    def secret_key(self, bucket: str) -> str | None:
        if self.secret_key_file:
            try:
                with open(self.secret_key_file, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as exc:
                raise StorageError(
                    f"{CONFIG_ENV}: cannot read the secret key file of bucket {bucket}: {exc.strerror}"
                ) from None
        if self.secret_key_env:
            value = os.environ.get(self.secret_key_env, "")
            if not value:
                raise StorageError(
                    f"{CONFIG_ENV}: {self.secret_key_env} (bucket {bucket}'s secret key) is not set"
                )
            return value
        return None


def load_config(text: str) -> dict[str, BucketAccess]:
    """The bucket -> access mapping of PRIO_S3_CONFIG, a JSON object such as

        {"b-private": {"endpoint": "https://s3.example.org", "access_key": "AKIA...",
                       "secret_key_file": "/run/secrets/b-key"},
         "a-shared": {"endpoint": "https://storage.other.example", "access_key": "...",
                      "secret_key_env": "BUCKET_EXTERNAL_SECRET_KEY"}}

    A bucket named twice is a configuration error (one name, one endpoint).
    """
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise StorageError(f"{CONFIG_ENV}: bucket {key} is named twice (one bucket, one endpoint)")
            seen[key] = value
        return seen

    try:
        raw = json.loads(text, object_pairs_hook=no_duplicates)
    except ValueError:
        raise StorageError(f"{CONFIG_ENV} is not a JSON object of bucket names") from None
    if not isinstance(raw, dict):
        raise StorageError(f"{CONFIG_ENV} is not a JSON object of bucket names")
    config = {}
    for bucket, entry in raw.items():
        if not isinstance(entry, dict) or not set(entry) <= _CONFIG_KEYS:
            raise StorageError(
                f"{CONFIG_ENV}: bucket {bucket} needs an object of {', '.join(sorted(_CONFIG_KEYS))}"
            )
        if not all(isinstance(v, str) for v in entry.values()):
            raise StorageError(f"{CONFIG_ENV}: bucket {bucket}: every value must be a string")
        access = BucketAccess(**entry)
        if access.secret_key_file and access.secret_key_env:
            raise StorageError(
                f"{CONFIG_ENV}: bucket {bucket}: give secret_key_file or secret_key_env, not both"
            )
        if bool(access.access_key) != bool(access.secret_key_file or access.secret_key_env):
            raise StorageError(f"{CONFIG_ENV}: bucket {bucket}: an access key needs its secret key, and back")
        config[bucket] = access
    return config


@lru_cache(maxsize=1)
def _config() -> dict[str, BucketAccess]:
    text = os.environ.get(CONFIG_ENV, "").strip()
    return load_config(text) if text else {}


def bucket_access(bucket: str) -> BucketAccess | None:
    """What PRIO_S3_CONFIG says of `bucket` (None: the AWS chain)."""
    return _config().get(bucket)


def configured_buckets() -> dict[str, BucketAccess]:
    """Every bucket PRIO_S3_CONFIG names, with its access."""
    return dict(_config())


# One client per endpoint and key (a client is costly to make: boto3 loads its service model).
_clients: dict[BucketAccess, Any] = {}


def client(bucket: str) -> Any:
    """The boto3 S3 client for `bucket`: its own endpoint and keys, or the AWS chain's."""
    access = bucket_access(bucket) or BucketAccess()
    if access not in _clients:
        _clients[access] = _make_client(access, bucket)
    return _clients[access]


def _make_client(access: BucketAccess, bucket: str) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = access.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"mode": "standard", "max_attempts": 4},
        # S3-compatible stores are reached by address: the bucket goes in the path.
        s3={"addressing_style": "path"} if endpoint else {},
    )
    try:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=access.endpoint,  # None: AWS_ENDPOINT_URL, or AWS's own endpoint
            region_name=access.region or None,
            aws_access_key_id=access.access_key,
            aws_secret_access_key=access.secret_key(bucket),
            config=config,
        )
    except StorageError:
        raise
    except Exception as exc:  # botocore's configuration errors (bad endpoint URL, unknown profile)
        raise StorageError(f"cannot make an S3 client for bucket {bucket}: {exc}") from None


def reset() -> None:
    """Forget the clients and PRIO_S3_CONFIG (after the environment changed)."""
    _clients.clear()
    _config.cache_clear()


def _code(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "AllAccessDisabled"}


def _call(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`func(...)`, its failures one StorageError naming `what` (never a key or a traceback)."""
    from botocore import exceptions as boto

    try:
        return func(*args, **kwargs)
    except boto.ClientError as exc:
        code = _code(exc)
        if code in _NOT_FOUND:
            raise StorageError(f"{what}: not found ({code})") from None
        if code in _DENIED:
            raise StorageError(
                f"{what}: access denied ({code}): check the bucket's endpoint and keys"
            ) from None
        message = exc.response.get("Error", {}).get("Message", "")
        raise StorageError(f"{what}: {code}{': ' + message if message else ''}") from None
    except boto.NoCredentialsError:
        raise StorageError(
            f"{what}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, "
            f"or the bucket's keys in {CONFIG_ENV})"
        ) from None
    except (boto.EndpointConnectionError, boto.ConnectionClosedError, boto.ReadTimeoutError,
            boto.ConnectTimeoutError) as exc:
        raise StorageError(f"{what}: cannot reach the S3 endpoint ({exc.__class__.__name__})") from None
    except boto.BotoCoreError as exc:
        raise StorageError(f"{what}: {exc}") from None
    except OSError as exc:
        raise StorageError(f"{what}: {exc}") from None


class _ObjectReader(io.RawIOBase):
    """An object read as a seekable file: one streaming GET from the position read, again after a seek
    (Parquet readers seek to the footer first)."""

    def __init__(self, loc: S3Location, size: int, etag: str) -> None:
        self._loc = loc
        self._size = size
        self._etag = etag  # a rewrite between two GETs fails the second one, not mixes two versions
        self._pos = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        position = max(0, base + offset)
        if position != self._pos:
            self._drop_body()
            self._pos = position
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        if self._body is None:
            loc = self._loc
            response = _call(
                f"cannot read {loc.uri}", client(loc.bucket_name).get_object,
                Bucket=loc.bucket_name, Key=loc.key, Range=f"bytes={self._pos}-", IfMatch=self._etag,
            )
            self._body = response["Body"]
        data = _call(f"cannot read {self._loc.uri}", self._body.read, len(buffer))
        if not data:
            raise StorageError(f"cannot read {self._loc.uri}: the object ended early")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class S3Location(ObjectLocation):
    SCHEME = S3_SCHEME

    @property
    def _client(self) -> Any:
        return client(self.bucket_name)

    def create_bucket(self) -> None:
        from botocore import exceptions as boto

        s3 = self._client
        what = f"cannot create bucket {self.bucket_name}"
        try:
            s3.head_bucket(Bucket=self.bucket_name)
            return
        except boto.ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                _call(what, _reraise, exc)
        except boto.BotoCoreError as exc:
            _call(what, _reraise, exc)
        region = s3.meta.region_name
        extra = {}
        if region not in (None, "us-east-1"):
            extra = {"CreateBucketConfiguration": {"LocationConstraint": region}}
        _call(what, s3.create_bucket, Bucket=self.bucket_name, **extra)

    def join(self, *names: str) -> S3Location:
        key = "/".join([self.key, *names]) if self.key else "/".join(names)
        return S3Location(self.bucket_name, key)

    def _head(self) -> dict[str, Any] | None:
        """The object's metadata, or None when there is no such object."""
        if not self.key:
            return None
        found = _unless(_NOT_FOUND, f"cannot read {self.uri}", self._client.head_object,
                        Bucket=self.bucket_name, Key=self.key)
        return None if found is None else dict(found)

    def is_file(self) -> bool:
        return self._head() is not None

    def _list(self, delimiter: bool, limit: int | None = None) -> list[str]:
        """Keys below this prefix (directly below it, with `delimiter`), sorted."""
        prefix = self._prefix()

        def keys() -> list[str]:
            kwargs: dict[str, Any] = {"Bucket": self.bucket_name, "Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = "/"
            if limit is not None:
                kwargs["PaginationConfig"] = {"MaxItems": limit}
            found: list[str] = []
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                found.extend(item["Key"] for item in page.get("Contents", ()))
            return sorted(key for key in found if key != prefix)

        return list(_call(f"cannot list {self.uri}", keys))

    def is_dir(self) -> bool:
        return bool(self._list(delimiter=False, limit=2))

    def children(self) -> list[Location]:
        return [S3Location(self.bucket_name, key) for key in self._list(delimiter=True)]

    def walk(self) -> list[tuple[str, Location]]:
        prefix = self._prefix()
        return [
            (key[len(prefix) :], S3Location(self.bucket_name, key)) for key in self._list(delimiter=False)
        ]

    def open_read(self) -> IO[bytes]:
        head = self._head()
        if head is None:
            raise StorageError(f"cannot read {self.uri}: no such object")
        return io.BufferedReader(_ObjectReader(self, int(head["ContentLength"]), head["ETag"]), _READ_BUFFER)

    def version(self) -> str:
        head = self._head()
        if head is None:
            raise StorageError(f"cannot read {self.uri}: no such object")
        modified = head["LastModified"].timestamp()
        return f"{head['ContentLength']}:{head['ETag'].strip(chr(34))}:{modified:.6f}"

    def _upload(self, tmp: IO[bytes]) -> None:
        from boto3.s3.transfer import TransferConfig

        with tmp:
            tmp.seek(0)
            self._abort_uploads(self.key, lambda key: key == self.key)
            transfer = TransferConfig(multipart_threshold=_PART_SIZE, multipart_chunksize=_PART_SIZE,
                                      max_concurrency=4)
            # boto3 aborts its own multipart upload when a part fails; a killed process leaves it
            # unfinished (invisible), and the next write of this key aborts it.
            _call(f"cannot write {self.uri}", self._client.upload_fileobj, tmp, self.bucket_name, self.key,
                  Config=transfer)

    # Conditional writes (see `Location`): the generation is the object's entity tag; every lock
    # record differs (owner, pid, times), so two versions never share a tag.
    #: A condition that did not hold: the object changed, exists already, or is gone.
    _FAILED_CONDITION = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", *_NOT_FOUND)

    def _put_if(self, data: bytes, **condition: str) -> str | None:
        """PutObject under `condition` (If-None-Match or If-Match): the new tag, or None if it failed."""
        response = _unless(self._FAILED_CONDITION, f"cannot write {self.uri}", self._client.put_object,
                           Bucket=self.bucket_name, Key=self.key, Body=data, **condition)
        return None if response is None else str(response["ETag"])

    def create_if_absent(self, data: bytes) -> str | None:
        """`If-None-Match: *`: of two writers racing, exactly one wins."""
        return self._put_if(data, IfNoneMatch="*")

    def replace_if_generation(self, data: bytes, generation: str) -> str | None:
        return self._put_if(data, IfMatch=generation)

    def read_generation(self) -> tuple[bytes, str] | None:
        response = _unless(_NOT_FOUND, f"cannot read {self.uri}", self._client.get_object,
                           Bucket=self.bucket_name, Key=self.key)
        if response is None:
            return None
        data = _call(f"cannot read {self.uri}", response["Body"].read)
        return data, str(response["ETag"])

    def delete_if_generation(self, generation: str) -> bool:
        deleted = _unless(self._FAILED_CONDITION, f"cannot delete {self.uri}", self._client.delete_object,
                          Bucket=self.bucket_name, Key=self.key, IfMatch=generation)
        return deleted is not None

    def clear_stale_temporaries(self, names: Iterable[str] | None = None) -> int:
        """Abort the unfinished multipart uploads below this folder (of the files `names` in it
        only, if given): what killed writers left, invisible but stored and billed. How many."""
        prefix = self._prefix()
        if names is None:
            return self._abort_uploads(prefix, lambda key: True)
        wanted = {prefix + name for name in names}
        return self._abort_uploads(prefix, wanted.__contains__)

    def _abort_uploads(self, prefix: str, wanted: Callable[[str], bool]) -> int:
        """Abort the unfinished multipart uploads of the keys under `prefix` that are `wanted`.

        A store that does not let these keys list uploads (no s3:ListBucketMultipartUploads)
        keeps them: its lifecycle rule for incomplete uploads is then what removes them.
        """
        from botocore import exceptions as boto

        s3 = self._client
        uploads: list[tuple[str, str]] = []
        try:
            paginator = s3.get_paginator("list_multipart_uploads")
            pages = paginator.paginate(Bucket=self.bucket_name, Prefix=prefix)
            for page in pages:
                uploads.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", ()) if wanted(u["Key"]))
        except boto.ClientError as exc:
            if _code(exc) in _DENIED or _code(exc) in ("NotImplemented", "501"):
                return 0
            _call(f"cannot list the uploads of {self.uri}", _reraise, exc)
        except (boto.BotoCoreError, OSError) as exc:
            _call(f"cannot list the uploads of {self.uri}", _reraise, exc)
        for key, upload_id in uploads:
            with contextlib.suppress(StorageError):  # finished or aborted meanwhile
                _call(f"cannot abort an upload to {key}", s3.abort_multipart_upload,
                      Bucket=self.bucket_name, Key=key, UploadId=upload_id)
        return len(uploads)

    def delete(self) -> None:
        keys = ([self.key] if self.is_file() else []) + [
            child.key for _, child in self.walk() if isinstance(child, S3Location)
        ]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at most
            batch = {"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
            response = _call(f"cannot delete {self.uri}", self._client.delete_objects,
                             Bucket=self.bucket_name, Delete=batch)
            if response.get("Errors"):
                first = response["Errors"][0]
                where = f"{S3_SCHEME}{self.bucket_name}/{first['Key']}"
                raise StorageError(f"cannot delete {where}: {first['Code']}")
        self.clear_stale_temporaries()


def _reraise(exc: BaseException) -> Any:
    raise exc


def _unless(codes: Iterable[str], what: str, func: Callable[..., Any], **kwargs: Any) -> Any:
    """`func(**kwargs)`, or None when the store answers with one of the error `codes` (no such
    object, a failed condition); other failures as `_call` gives them."""
    from botocore import exceptions as boto

    try:
        return func(**kwargs)
    except boto.ClientError as exc:
        if _code(exc) in codes:
            return None
        return _call(what, _reraise, exc)
    except (boto.BotoCoreError, OSError) as exc:
        return _call(what, _reraise, exc)


def s3_location(text: str) -> S3Location:
    bucket, _, key = text[len(S3_SCHEME) :].partition("/")
    return S3Location(bucket, key)
