"""Staging from a payload_bytes_decoded table: the real BigQuery clients against servers on 127.0.0.1.

One HTTP server plays Google's OAuth token endpoint (it checks the service account's signed JWT) and
the BigQuery API's tables.get; one gRPC server plays the Storage Read API (CreateReadSession and
ReadRows, Arrow record batches of real gzip'd pings). Both record what the clients send and check the
bearer token the token endpoint issued.
"""

from __future__ import annotations

import base64
import copy
import datetime
import gzip
import json
import re
import secrets
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pyarrow as pa
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.grpc import AuthMetadataPlugin
from google.auth.transport.requests import Request
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

from prio_processor.firefox import bigquery_source, staging
from prio_processor.firefox.commands import entry_point
from prio_processor.storage import StorageError, location

DATA = Path(__file__).parent / "data"
DATE = "2019-06-26"
TABLE = "moz-fx-data-shared-prod.payload_bytes_decoded.telemetry_telemetry__prio_v4"
BILLED = "prio-admin"  # the service account's project, which pays for the read session
_READ = "/google.cloud.bigquery.storage.v1.BigQueryRead/"
_BOUNDS = re.compile(r"TIMESTAMP '(\d{4}-\d{2}-\d{2})'")


@pytest.fixture(scope="module")
def real_ping() -> dict:
    return json.loads((DATA / "fx-69.0a1.json").read_text())


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)


@dataclass
class FakeGoogle:
    """What the servers hold and what they were sent."""

    key: rsa.RSAPrivateKey
    email: str = "prio-staging@prio-admin.iam.gserviceaccount.com"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    rows: list[tuple[datetime.datetime, bytes | None]] = field(default_factory=list)
    columns: dict[str, str] = field(
        default_factory=lambda: {"submission_timestamp": "TIMESTAMP", "payload": "BYTES", "uri": "STRING"}
    )
    fail_after: int | None = None  # abort ReadRows after this many rows, as a revoked permission would
    interrupt_after: int | None = None  # drop the stream once after this many rows, as a restart would
    batch_rows: int = 3
    assertions: list[dict[str, Any]] = field(default_factory=list)
    table_requests: list[tuple[str, str | None]] = field(default_factory=list)
    sessions: list[types.CreateReadSessionRequest] = field(default_factory=list)
    reads: list[types.ReadRowsRequest] = field(default_factory=list)
    read_tokens: list[str | None] = field(default_factory=list)
    http_port: int = 0
    grpc_port: int = 0

    # OAuth: the JWT bearer grant of a service account.
    def issue_token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type"}
        header, claims, signature = form["assertion"][0].split(".")
        signed = f"{header}.{claims}".encode()
        try:
            self.key.public_key().verify(_unb64(signature), signed, padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return 400, {"error": "invalid_grant", "error_description": "bad signature"}
        self.assertions.append(json.loads(_unb64(claims)))
        return 200, {"access_token": self.token, "expires_in": 3600, "token_type": "Bearer"}

    def table(self, path: str) -> tuple[int, dict[str, Any]]:
        project, dataset, table = TABLE.split(".")
        if path != f"/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}":
            return 404, {"error": {"code": 404, "message": f"Not found: Table {path}", "status": "NOT_FOUND"}}
        return 200, {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {
                "fields": [{"name": n, "type": t, "mode": "NULLABLE"} for n, t in self.columns.items()]
            },
            "timePartitioning": {"type": "DAY", "field": "submission_timestamp"},
        }

    # The Storage Read API.
    def create_read_session(
        self, request: types.CreateReadSessionRequest, context: grpc.ServicerContext
    ) -> types.ReadSession:
        self.sessions.append(request)
        self.read_tokens.append(dict(context.invocation_metadata()).get("authorization"))
        session = types.ReadSession(request.read_session)
        session.name = f"projects/{BILLED}/locations/us/sessions/s1"
        session.arrow_schema = types.ArrowSchema(serialized_schema=self._schema().serialize().to_pybytes())
        session.streams = [types.ReadStream(name=f"{session.name}/streams/0")]
        return session

    def read_rows(self, request: types.ReadRowsRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        self.reads.append(request)
        self.read_tokens.append(dict(context.invocation_metadata()).get("authorization"))
        start, end = (
            _at(d) for d in _BOUNDS.findall(self.sessions[-1].read_session.read_options.row_restriction)
        )
        payloads = [payload for at, payload in self.rows if start <= at < end][request.offset :]
        for first in range(0, len(payloads), self.batch_rows):
            if self.fail_after is not None and first >= self.fail_after:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "the read session's permission was revoked")
            if self.interrupt_after is not None and request.offset + first >= self.interrupt_after:
                self.interrupt_after = None
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is restarting")
            chunk = payloads[first : first + self.batch_rows]
            batch = pa.record_batch([pa.array(chunk, pa.binary())], schema=self._schema())
            yield types.ReadRowsResponse(
                row_count=len(chunk),
                arrow_record_batch=types.ArrowRecordBatch(
                    serialized_record_batch=batch.serialize().to_pybytes(), row_count=len(chunk)
                ),
            )

    @staticmethod
    def _schema() -> pa.Schema:
        return pa.schema([("payload", pa.binary())])


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _http_server(google: FakeGoogle) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if self.path != "/token":
                self._reply(404, {"error": "not found"})
                return
            self._reply(*google.issue_token(urllib.parse.parse_qs(body)))

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            authorization = self.headers.get("Authorization")
            google.table_requests.append((path, authorization))
            if authorization != f"Bearer {google.token}":
                self._reply(401, {"error": {"code": 401, "message": "Request had invalid credentials."}})
                return
            self._reply(*google.table(path))

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def _grpc_server(google: FakeGoogle) -> grpc.Server:
    handlers = {
        "CreateReadSession": grpc.unary_unary_rpc_method_handler(
            google.create_read_session,
            request_deserializer=types.CreateReadSessionRequest.deserialize,
            response_serializer=types.ReadSession.serialize,
        ),
        "ReadRows": grpc.unary_stream_rpc_method_handler(
            google.read_rows,
            request_deserializer=types.ReadRowsRequest.deserialize,
            response_serializer=types.ReadRowsResponse.serialize,
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("google.cloud.bigquery.storage.v1.BigQueryRead", handlers)]
    )
    return server


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    http = _http_server(fake)
    fake.http_port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    rpc = _grpc_server(fake)
    # Local-connection credentials: the channel may carry the bearer token without TLS.
    fake.grpc_port = rpc.add_secure_port(
        "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    rpc.start()
    try:
        yield fake
    finally:
        rpc.stop(grace=None)
        http.shutdown()
        http.server_close()
        thread.join(timeout=30)


def _key_file(google: FakeGoogle, tmp_path: Path) -> Path:
    """A service account key file as the Cloud console makes one, for a freshly generated key."""
    pem = google.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": BILLED,
                "private_key_id": secrets.token_hex(20),
                "private_key": pem,
                "client_email": google.email,
                "client_id": "1" * 21,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": f"http://127.0.0.1:{google.http_port}/token",
            }
        )
    )
    return path


def _clients(google: FakeGoogle, key_file: Path) -> bigquery_source.Clients:
    """The real clients, on the credentials of the key file, pointed at the local servers."""
    credentials, project = bigquery_source.load_credentials(str(key_file))
    assert project == BILLED
    tables = bigquery.Client(
        project=project,
        credentials=credentials,
        client_options={"api_endpoint": f"http://127.0.0.1:{google.http_port}"},
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{google.grpc_port}",
        grpc.composite_channel_credentials(
            grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
            grpc.metadata_call_credentials(AuthMetadataPlugin(credentials, Request())),
        ),
    )
    reads = BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    return bigquery_source.Clients(tables, reads, project)


def _gzip(document: Any) -> bytes:
    return gzip.compress(json.dumps(document).encode())


def _ping(real_ping: dict, ping_id: str) -> dict:
    ping = copy.deepcopy(real_ping)
    ping["id"] = ping_id
    return ping


def _day_rows(real_ping: dict) -> list[tuple[datetime.datetime, bytes | None]]:
    """Four good pings (one twice) within the day, bad rows, and pings just outside it."""
    inside = [
        _at(f"{DATE}T00:00:00"),
        _at(f"{DATE}T09:30:00"),
        _at(f"{DATE}T17:45:10"),
        _at(f"{DATE}T23:59:59"),
    ]
    rows: list[tuple[datetime.datetime, bytes | None]] = [
        (at, _gzip(_ping(real_ping, f"good-{k}"))) for k, at in enumerate(inside)
    ]
    rows.append((inside[1], _gzip(_ping(real_ping, "good-1"))))  # a retried submission
    rows += [
        (inside[2], None),  # no payload
        (inside[2], b"not gzip at all"),
        (inside[2], _gzip(_ping(real_ping, "cut"))[:200]),  # truncated
        (inside[2], gzip.compress(b"{not json")),
        (inside[2], _gzip([1, 2, 3])),
        (inside[2], gzip.compress(b" " * (bigquery_source.MAX_PING_BYTES + 1))),  # a gzip bomb
    ]
    rows.append(
        (_at(f"{DATE}T00:00:00") - datetime.timedelta(microseconds=1), _gzip(_ping(real_ping, "before")))
    )
    rows.append((_at("2019-06-27T00:00:00"), _gzip(_ping(real_ping, "after"))))
    return rows


def test_a_day_of_the_table_is_staged_through_the_storage_read_api(google, real_ping, tmp_path):
    google.rows = _day_rows(real_ping)
    clients = _clients(google, _key_file(google, tmp_path))
    rejects: list[dict] = []
    out = tmp_path / "out"
    summary = staging.stage(
        bigquery_source.table_pings(clients, bigquery_source.Table.parse(TABLE), DATE),
        location(out),
        DATE,
        rejects=rejects.append,
    )

    # The request: the table, the payload column only, the day's bounds; billed to the key's project.
    [session_request] = google.sessions
    assert session_request.parent == f"projects/{BILLED}"
    assert session_request.read_session.table == (
        "projects/moz-fx-data-shared-prod/datasets/payload_bytes_decoded/tables/telemetry_telemetry__prio_v4"
    )
    assert session_request.read_session.data_format == types.DataFormat.ARROW
    options = session_request.read_session.read_options
    assert list(options.selected_fields) == ["payload"]
    assert options.row_restriction == (
        "submission_timestamp >= TIMESTAMP '2019-06-26' AND submission_timestamp < TIMESTAMP '2019-06-27'"
    )
    assert [r.read_stream for r in google.reads] == [f"projects/{BILLED}/locations/us/sessions/s1/streams/0"]
    # The table was looked up first; every call carried the token issued for the service account's JWT.
    assert [path for path, _ in google.table_requests] == [
        "/bigquery/v2/projects/moz-fx-data-shared-prod/datasets/payload_bytes_decoded/tables/"
        "telemetry_telemetry__prio_v4"
    ]
    assert {token for _, token in google.table_requests} | set(google.read_tokens) == {
        f"Bearer {google.token}"
    }
    assert google.assertions and {a["iss"] for a in google.assertions} == {google.email}
    assert {a["scope"] for a in google.assertions} == {"https://www.googleapis.com/auth/bigquery"}
    # Posted to the key file's token_uri; addressed, as Google wants it, to Google's token endpoint.
    assert {a["aud"] for a in google.assertions} == {"https://oauth2.googleapis.com/token"}

    # The rows: 11 of the day, the pings decoded and staged, the bad rows counted by reason.
    assert summary.pings == 11 and summary.duplicates == 1
    assert dict(summary.rejects) == {"bad_row": 1, "bad_gzip": 3, "bad_ping": 2}
    assert Counter(r["reason"] for r in rejects) == summary.rejects
    assert all(r["detail"].startswith("row ") or "row " in r["detail"] for r in rejects)
    assert any("truncated" in r["detail"] for r in rejects)
    assert any(f"more than {bigquery_source.MAX_PING_BYTES} bytes" in r["detail"] for r in rejects)
    assert sum(summary.entries.values()) == 4 * len(real_ping["payload"]["prioData"])
    day = out / f"submission_date={DATE}"
    shares = {e["prio"]["b"] for e in real_ping["payload"]["prioData"]}
    for batch_id in {e["encoding"] for e in real_ping["payload"]["prioData"]}:
        staged = [
            json.loads(line)
            for line in (day / "server_id=b" / f"batch_id={batch_id}" / "part-00000.json").open()
        ]
        assert sorted(r["id"] for r in staged) == list(range(1, 13))
        assert {r["payload"] for r in staged} <= shares
    assert (out / "_SUCCESS").is_file()


def test_a_dropped_stream_resumes_where_it_stopped(google, real_ping, tmp_path):
    google.rows = _day_rows(real_ping)
    google.interrupt_after = 6
    clients = _clients(google, _key_file(google, tmp_path))
    table = bigquery_source.Table.parse(TABLE)
    summary = staging.stage(bigquery_source.table_pings(clients, table, DATE), location(tmp_path / "o"), DATE)
    assert [r.offset for r in google.reads] == [0, 6]
    assert summary.pings == 11 and summary.duplicates == 1
    assert sum(summary.rejects.values()) == 6


def test_a_read_that_fails_part_way_leaves_the_day_as_it_was(google, real_ping, tmp_path):
    google.rows = _day_rows(real_ping)
    clients = _clients(google, _key_file(google, tmp_path))
    table = bigquery_source.Table.parse(TABLE)
    out = tmp_path / "out"
    staging.stage(bigquery_source.table_pings(clients, table, DATE), location(out), DATE)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    google.rows = [
        (at, _gzip(_ping(real_ping, f"new-{k}"))) for k, (at, _) in enumerate(_day_rows(real_ping))
    ]
    google.fail_after = 3
    with pytest.raises(
        StorageError, match=f"cannot read BigQuery table {TABLE}: 403 .*permission was revoked"
    ):
        staging.stage(bigquery_source.table_pings(clients, table, DATE), location(out), DATE)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_tables_that_cannot_be_read_are_one_error_before_any_row(google, tmp_path):
    clients = _clients(google, _key_file(google, tmp_path))
    missing = bigquery_source.Table.parse("moz-fx-data-shared-prod.payload_bytes_decoded.nothing_here")
    with pytest.raises(StorageError, match=r"cannot read BigQuery table .*nothing_here: 404 .*Not found"):
        bigquery_source.table_pings(clients, missing, DATE)
    google.columns = {"submission_timestamp": "TIMESTAMP", "payload": "STRING"}
    with pytest.raises(StorageError, match="not a payload_bytes_decoded table: payload must be BYTES"):
        bigquery_source.table_pings(clients, bigquery_source.Table.parse(TABLE), DATE)
    assert google.sessions == []


def _staging(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    command = ["staging", "--source", "bigquery", "--date", DATE, "--output", str(tmp_path / "out"), *args]
    return CliRunner().invoke(
        entry_point, command, env={"GOOGLE_APPLICATION_CREDENTIALS": None, **(env or {})}
    )


def test_command_line_errors_are_one_line_and_touch_nothing(tmp_path):
    bad_key = tmp_path / "key.json"
    bad_key.write_text(json.dumps({"type": "service_account", "project_id": "p"}))
    cases = [
        (
            ["--input", "just-a-table"],
            None,
            "--input 'just-a-table' is not a BigQuery table as PROJECT.DATASET.TABLE",
        ),
        (
            ["--input", TABLE, "--credentials", str(tmp_path / "none.json")],
            None,
            f"--credentials {tmp_path}/none.json",
        ),
        (["--input", TABLE], {"GOOGLE_APPLICATION_CREDENTIALS": str(bad_key)}, f"--credentials {bad_key}: "),
    ]
    cases.append(
        (
            ["--source", "gcs", "--input", str(tmp_path), "--credentials", str(bad_key)],
            None,
            "--credentials is for",
        )
    )
    for args, env, message in cases:
        result = _staging(tmp_path, *args, env=env)
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (None, "bad_row"),
        (b"", "bad_row"),
        (b"\x1f\x8b\x08garbage", "bad_gzip"),
        (gzip.compress(b'{"id": "x"}', mtime=0)[:-4], "bad_gzip"),
        (gzip.compress(b'{"id": "\xff"}', mtime=0), "bad_ping"),
        (gzip.compress(b'"a string"', mtime=0), "bad_ping"),
        (gzip.compress(b"[" * 100_000, mtime=0), "bad_ping"),
    ],
    ids=["null", "empty", "not-gzip", "truncated", "not-utf-8", "not-an-object", "too-deep"],
)
def test_bad_payloads_are_counted_by_reason(payload, reason):
    found = bigquery_source.ping_from_payload(payload, "row 7 of p.d.t")
    assert isinstance(found, staging.Rejected) and found.reason == reason
    assert "row 7 of p.d.t" in found.detail


def test_a_gzip_ping_is_decoded(real_ping):
    assert bigquery_source.ping_from_payload(_gzip(real_ping), "row 1") == real_ping


def test_connect_uses_the_key_file_and_bills_its_project(google, tmp_path):
    """The clients the command makes (Google's endpoints; nothing is sent until a read)."""
    table = bigquery_source.Table.parse(TABLE)
    clients = bigquery_source.connect(table, str(_key_file(google, tmp_path)))
    assert clients.project == clients.tables.project == BILLED
    assert clients.tables._credentials.service_account_email == google.email
    assert clients.reads._transport._host == "bigquerystorage.googleapis.com:443"
    # A user login without a quota project bills the table's project.
    login = tmp_path / "login.json"
    login.write_text(
        json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"})
    )
    assert bigquery_source.connect(table, str(login)).project == "moz-fx-data-shared-prod"
    external = tmp_path / "external.json"
    # A file that would have the auth library read files or fetch URLs it names is refused.
    external.write_text(json.dumps({"type": "external_account", "credential_source": {"file": "/etc/hosts"}}))
    with pytest.raises(StorageError, match="'external_account' is not one of service_account"):
        bigquery_source.connect(table, str(external))
