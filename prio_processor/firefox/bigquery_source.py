"""Staging's `bigquery` source: the prio pings of one date in a `payload_bytes_decoded` table.

The table holds one row per submitted document; its `payload` column is the gzip'd body, here a
prio ping's JSON. The rows of a date are those whose `submission_timestamp` falls on it (UTC), as
the original's Spark job filtered them. They are read with BigQuery's Storage Read API: one read
session on the table that selects the `payload` column only and leaves the timestamp filter to the
service (it prunes the table's partitions), so a day costs the bytes of its payloads and no query.
The table itself is looked up first through the BigQuery API (google-cloud-bigquery), so that a
wrong name, missing permission or a table without those columns is one clear error before anything
is read.

Credentials come from a key file (`--credentials`, GOOGLE_APPLICATION_CREDENTIALS) or, without one,
from the environment's default credentials (a VM's service account, `gcloud auth
application-default login`).
"""

from __future__ import annotations

import datetime
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..storage import StorageError
from .staging import PingStream, Rejected, ping_from_json

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

PAYLOAD = "payload"
SUBMISSION_TIMESTAMP = "submission_timestamp"
#: Reads tables; the Storage Read API accepts it too.
SCOPES = ("https://www.googleapis.com/auth/bigquery",)
#: A ping's JSON is some tens of kilobytes; more than this once gunzipped is not a ping (a bomb).
MAX_PING_BYTES = 16 * 1024 * 1024
#: What a table's columns must be for this source.
_COLUMN_TYPES = {PAYLOAD: ("BYTES",), SUBMISSION_TIMESTAMP: ("TIMESTAMP",)}


@dataclass(frozen=True)
class Table:
    """A table as PROJECT.DATASET.TABLE (the project may hold dots and a colon: example.com:project)."""

    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, text: str) -> Table:
        project, _, rest = text.rpartition(".")
        project, _, dataset = project.rpartition(".")
        if not (project and dataset and rest) or any(c.isspace() or c in "`/" for c in text):
            raise StorageError(f"--input {text!r} is not a BigQuery table as PROJECT.DATASET.TABLE")
        return cls(project, dataset, rest)

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def resource(self) -> str:
        """The name the Storage Read API knows the table by."""
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table}"


def row_restriction(date: str) -> str:
    """The filter of a date's rows: submission_timestamp within that UTC day."""
    day = datetime.date.fromisoformat(date)
    following = day + datetime.timedelta(days=1)
    return (
        f"{SUBMISSION_TIMESTAMP} >= TIMESTAMP '{day.isoformat()}' "
        f"AND {SUBMISSION_TIMESTAMP} < TIMESTAMP '{following.isoformat()}'"
    )


#: The kinds of credentials file taken: keys and user logins. Others (external accounts) make the
#: auth library fetch URLs or run commands the file names, so they are not taken from a file here.
_FILE_TYPES = ("service_account", "authorized_user")


def load_credentials(path: str | None) -> tuple[Credentials, str | None]:
    """Credentials and their project from a key file, or the environment's defaults without one."""
    import google.auth
    from google.auth.exceptions import GoogleAuthError

    try:
        if path is None:
            return google.auth.default(scopes=SCOPES)
        return _from_file(path)
    except (GoogleAuthError, ValueError) as exc:
        where = f"--credentials {path}" if path else "no --credentials and no default credentials"
        raise StorageError(f"{where}: {_one_line(exc)}") from None


def _from_file(path: str) -> tuple[Credentials, str | None]:
    from google.oauth2 import credentials as user
    from google.oauth2 import service_account

    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    except ValueError:
        raise ValueError("it is not JSON") from None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        key = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        return key, info.get("project_id")
    if kind == "authorized_user":
        login = user.Credentials.from_authorized_user_info(info, scopes=SCOPES)
        return login, info.get("quota_project_id")
    raise ValueError(f"type {kind!r} is not one of {', '.join(_FILE_TYPES)}")


@dataclass
class Clients:
    """The two BigQuery clients a read needs, and the project that pays for the read session."""

    tables: bigquery.Client
    reads: BigQueryReadClient
    project: str


def connect(table: Table, credentials_path: str | None) -> Clients:
    """Clients on Google's endpoints; the read session is billed to the credentials' project,
    else to the table's."""
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

    credentials, project = load_credentials(credentials_path)
    billed = project or table.project
    return Clients(
        bigquery.Client(project=billed, credentials=credentials),
        BigQueryReadClient(credentials=credentials),
        billed,
    )


def table_pings(clients: Clients, table: Table, date: str) -> PingStream:
    """The pings of `date` in `table`, one item per row. The table is checked at once (StorageError),
    the rows are read as the stream is consumed; a failed read is a StorageError too."""
    _check_table(clients.tables, table)
    return _rows(clients, table, date)


def _check_table(client: bigquery.Client, table: Table) -> None:
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    try:
        found = client.get_table(str(table))
    except (GoogleAPIError, GoogleAuthError) as exc:
        raise StorageError(f"cannot read BigQuery table {table}: {_one_line(exc)}") from None
    columns = {f.name: f.field_type for f in found.schema}
    for name, types in _COLUMN_TYPES.items():
        if columns.get(name) not in types:
            have = columns.get(name) or "no such column"
            raise StorageError(
                f"BigQuery table {table} is not a payload_bytes_decoded table: "
                f"{name} must be {' or '.join(types)} ({have})"
            )


def _rows(clients: Clients, table: Table, date: str) -> Iterator[dict[str, Any] | Rejected]:
    import pyarrow.ipc
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from google.cloud.bigquery_storage_v1 import types

    session = types.ReadSession(
        table=table.resource,
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(
            selected_fields=[PAYLOAD], row_restriction=row_restriction(date)
        ),
    )
    try:
        session = clients.reads.create_read_session(
            parent=f"projects/{clients.project}", read_session=session, max_stream_count=1
        )
        schema = pyarrow.ipc.read_schema(pyarrow.py_buffer(session.arrow_schema.serialized_schema))
        row = 0
        for stream in session.streams:
            # The stream resumes by itself, at the row it reached, after a transient error.
            for response in clients.reads.read_rows(stream.name):
                serialized = pyarrow.py_buffer(response.arrow_record_batch.serialized_record_batch)
                batch = pyarrow.ipc.read_record_batch(serialized, schema)
                for payload in batch.column(PAYLOAD).to_pylist():
                    row += 1
                    yield ping_from_payload(payload, f"row {row} of {table}")
    except (GoogleAPIError, GoogleAuthError) as exc:
        raise StorageError(f"cannot read BigQuery table {table}: {_one_line(exc)}") from None


def ping_from_payload(payload: bytes | None, where: str) -> dict[str, Any] | Rejected:
    """The ping in a row's gzip'd payload, or why it holds none."""
    if not payload:
        return Rejected("bad_row", f"{where} has no payload")
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip framing only
    try:
        text = inflater.decompress(payload, MAX_PING_BYTES + 1)
    except zlib.error:
        return Rejected("bad_gzip", f"{where}: payload is not gzip data")
    if len(text) > MAX_PING_BYTES:
        return Rejected("bad_gzip", f"{where}: payload is more than {MAX_PING_BYTES} bytes gunzipped")
    if not inflater.eof:
        return Rejected("bad_gzip", f"{where}: payload is a truncated gzip stream")
    return ping_from_json(text, f"payload of {where}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
