"""Options of the `prio` command line: declared once, validated once, by click parameter types.

Names, environment variables and help follow the original prio-processor.
Secrets may also come from files (--private-key-file, --shared-secret-file)
so that they never need to appear in a process listing; they are read with a
size limit and never appear in messages. Surrounding white space of keys and
secrets is ignored (`$(cat file)` keeps a trailing newline).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..engine import keys
from ..engine.config import MAX_N_DATA, SEED_BYTES, Config, PrgKeying, Schedule
from ..storage import Location, location
from .base import ConfigError

__all__ = ["ConfigError"]

#: Secret files hold a line of hex or base64; anything longer is not one.
MAX_SECRET_FILE_BYTES = 4096


def _apply(*decorators: Callable) -> Callable:
    def wrap(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return wrap


def _option_name(param: click.Parameter | None, fallback: str) -> str:
    return param.opts[0] if param is not None and param.opts else fallback


class NDataType(click.ParamType):
    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                raise ConfigError(f"{_option_name(param, '--n-data')} must be an integer") from None
        if not 1 <= number <= MAX_N_DATA:
            raise ConfigError(
                f"{_option_name(param, '--n-data')} must be between 1 and {MAX_N_DATA}, got {number}"
            )
        return number


class BatchIdType(click.ParamType):
    """The batch id as the bytes libprio binds into every packet (UTF-8, as the original encoded it)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bytes:
        if isinstance(value, bytes):
            return value
        try:
            return str(value).encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{_option_name(param, '--batch-id')} is not valid UTF-8 text") from None


class PublicKeyType(click.ParamType):
    """64 hex digits of a Curve25519 public key that can be encrypted to."""

    name = "hex"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> X25519PublicKey:
        return public_key_from_hex(value, _option_name(param, "public key"))


@dataclass(frozen=True)
class SharedSeed:
    """The shared secret; `given_bytes` says how long it was before libprio's 16-byte cut."""

    seed: bytes
    given_bytes: int


def parse_shared_secret(text: str) -> SharedSeed:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("bad shared secret: not valid base64") from None
    if len(raw) < SEED_BYTES:
        raise ConfigError(f"bad shared secret: it must decode to {SEED_BYTES} bytes, not {len(raw)}")
    # libprio uses the first 16 bytes of a longer seed; so do we (with a warning).
    return SharedSeed(raw[:SEED_BYTES], len(raw))


def parse_private_key(text: str) -> X25519PrivateKey:
    try:
        return keys.private_key_from_hex(text)
    except keys.KeyFormatError as exc:
        raise ConfigError(f"bad private key: {exc}") from None


class SecretType(click.ParamType):
    """A secret given inline; the value is never shown in messages."""

    name = "secret"

    def __init__(self, parse: Callable[[str], Any]) -> None:
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if not isinstance(value, str) else self._parse(value)


class SecretFileType(click.ParamType):
    """A file holding a secret, read with a size limit (so /dev/zero cannot hang us)."""

    name = "file"

    def __init__(self, parse: Callable[[str], Any], what: str) -> None:
        self._parse = parse
        self._what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        return self._parse(read_secret_file(value, self._what))


def read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"the {what} file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} file {path} is not ASCII text") from None


def public_key_from_hex(text: str | X25519PublicKey, option: str) -> X25519PublicKey:
    """A public key from hex (an already parsed key passes through)."""
    if isinstance(text, X25519PublicKey):
        return text
    try:
        key = keys.public_key_from_hex(text)
    except keys.KeyFormatError as exc:
        raise ConfigError(f"bad {option}: {exc}") from None
    try:  # a low-order point (all zeros, say) gives no shared secret: nothing can be encrypted to it
        X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise ConfigError(f"bad {option}: not a usable Curve25519 public key") from None
    return key


N_DATA = NDataType()
BATCH_ID = BatchIdType()
PUBLIC_KEY = PublicKeyType()

data_config = _apply(
    click.option(
        "--n-data",
        envvar="N_DATA",
        type=N_DATA,
        required=True,
        show_envvar=True,
        help="The size of the input bit-vector.",
    ),
    click.option(
        "--batch-id",
        envvar="BATCH_ID",
        type=BATCH_ID,
        required=True,
        show_envvar=True,
        help="A shared batch identifier used as a validity check.",
    ),
)

server_id_option = click.option(
    "--server-id",
    envvar="SERVER_ID",
    type=click.Choice(["A", "B"]),
    required=True,
    show_envvar=True,
    help="The identifier for match.",
)

private_key_options = _apply(
    click.option(
        "--private-key-hex",
        envvar="PRIVATE_KEY_HEX",
        type=SecretType(parse_private_key),
        show_envvar=True,
        help="The private key of the processing server as a hex string.",
    ),
    click.option(
        "--private-key-file",
        envvar="PRIVATE_KEY_FILE",
        type=SecretFileType(parse_private_key, "private key"),
        show_envvar=True,
        help="A file holding the private key as a hex string (instead of --private-key-hex).",
    ),
)

shared_secret_options = _apply(
    click.option(
        "--shared-secret",
        envvar="SHARED_SECRET",
        type=SecretType(parse_shared_secret),
        show_envvar=True,
        help="The shared server secret encoded in base64.",
    ),
    click.option(
        "--shared-secret-file",
        envvar="SHARED_SECRET_FILE",
        type=SecretFileType(parse_shared_secret, "shared secret"),
        show_envvar=True,
        help="A file holding the shared secret in base64 (instead of --shared-secret).",
    ),
)

public_key = _apply(
    click.option(
        "--public-key-hex-internal",
        envvar="PUBLIC_KEY_HEX_INTERNAL",
        type=PUBLIC_KEY,
        required=True,
        show_envvar=True,
        help="The public key of the processing server as a hex string.",
    ),
    click.option(
        "--public-key-hex-external",
        envvar="PUBLIC_KEY_HEX_EXTERNAL",
        type=PUBLIC_KEY,
        required=True,
        show_envvar=True,
        help="The public key of the co-processing server as a hex string.",
    ),
)

LOCATION_HELP = "local path, gs://bucket/prefix or s3://bucket/prefix"

input_1 = click.option(
    "--input",
    "input_",
    envvar="INPUT",
    required=True,
    show_envvar=True,
    help=f"File containing shares from clients, or a folder of part files ({LOCATION_HELP}).",
)

client_input = click.option(
    "--input",
    "input_",
    envvar="INPUT",
    required=True,
    show_envvar=True,
    help='File of plaintext client data, one {"payload": [0, 1, ...]} per line, or a folder of part '
    f"files ({LOCATION_HELP}). Not shares: encode-shares makes the shares.",
)

input_2 = _apply(
    click.option(
        "--input-internal",
        envvar="INPUT_INTERNAL",
        required=True,
        show_envvar=True,
        help=f"File containing data generated by the processing server, or a folder ({LOCATION_HELP}).",
    ),
    click.option(
        "--input-external",
        envvar="INPUT_EXTERNAL",
        required=True,
        show_envvar=True,
        help=f"File containing data generated by the co-processing server, or a folder ({LOCATION_HELP}).",
    ),
)

output_1 = click.option(
    "--output",
    envvar="OUTPUT",
    required=True,
    show_envvar=True,
    help=f"The path to the output directory ({LOCATION_HELP}).",
)

output_2 = _apply(
    click.option(
        "--output-A",
        "output_a",
        envvar="OUTPUT_A",
        required=True,
        show_envvar=True,
        help="The path to the input directory of server A.",
    ),
    click.option(
        "--output-B",
        "output_b",
        envvar="OUTPUT_B",
        required=True,
        show_envvar=True,
        help="The path to the input directory of server B.",
    ),
)

rejects_option = click.option(
    "--rejects",
    envvar="REJECTS",
    default=None,
    show_envvar=True,
    help="Where to list rejected records as {id, reason, detail} lines (local, gs:// or s3://): a file "
    "if the name ends in .ndjson or .json, else a folder that gets rejects-<stage>-<server>.ndjson "
    "(rejects-encode-shares.ndjson). Without it rejects are only counted. Never inside an output folder.",
)

prg_keying = click.option(
    "--prg-keying",
    envvar="PRG_KEYING",
    type=click.Choice([k.value for k in PrgKeying]),
    default=PrgKeying.HASHED.value,
    show_default=True,
    show_envvar=True,
    help=(
        "How seeds key the PRG; both servers and the clients must agree. 'hashed' "
        "(SHA-256 of seed and batch id) is libprio after July 2020 and the PyPI prio 1.1 "
        "bindings the original pins; 'raw' (the seed itself) is libprio 1.6 and older."
    ),
)

evaluation_point = click.option(
    "--evaluation-point",
    envvar="EVALUATION_POINT",
    type=click.Choice([s.value for s in Schedule]),
    default=Schedule.SEQUENTIAL.value,
    show_default=True,
    show_envvar=True,
    help=(
        "Which random point verifies each packet; both servers must agree. 'sequential' "
        "is the original command line: each packet that opens draws the next point, so a "
        "packet that fails at one server only shifts every later point. 'fixed' is the "
        "original Spark pipeline: every packet uses the first draw, robust to such packets. "
        "Careful when mixing: bin/process and prio-spark use fixed, this command alone "
        "sequential; a server run by hand against one run by bin/process needs "
        "--evaluation-point fixed, or every proof fails (invalid_proof)."
    ),
)

workers_option = click.option(
    "--workers",
    envvar="WORKERS",
    type=click.IntRange(min=1),
    default=None,
    show_envvar=True,
    help="Processes that read, decrypt and verify packets (default: every processor this command may "
    "use). Outputs are the same for any number; two servers on one machine each take half.",
)

cache_option = click.option(
    "--cache",
    envvar="CACHE",
    default=None,
    show_envvar=True,
    help="A folder (local, gs:// or s3://) in this server's private storage where verify1 keeps what "
    "verify2 and aggregate need of each share, so that they do not decrypt and decode the shares "
    "again: give the three stages the same folder. It holds this server's shares in clear, so never "
    "a bucket the partner reads; delete it after aggregate. It is used only when made from the same "
    "--input with the same settings "
    "(otherwise the shares are read, with the same results).",
)

#: What every server stage takes: the batch, the server, its secrets and both public keys.
server_command = _apply(data_config, server_id_option, private_key_options, shared_secret_options, public_key)

#: publish, on `prio` and `prio-spark` alike.
publish_options = _apply(
    server_command,
    input_2,
    output_1,
    rejects_option,
    click.option(
        "--min-batch-size",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Refuse to publish totals of fewer valid clients than this (a privacy floor; 0 turns it off).",
    ),
    click.option(
        "--max-error-ratio",
        type=click.FloatRange(0, 1),
        default=None,
        help="Refuse to publish (exit 2) when more than this share of either server's clients failed: "
        "most likely the servers' keys, shared seed, --prg-keying or --evaluation-point differ, and the "
        "totals would be zeros or wrong. Without it, publish whatever the error count (as the original).",
    ),
    click.option(
        "--prec",
        type=click.IntRange(1, 64),
        default=None,
        help="The batch holds unsigned integers of this many bits: publish integer totals, not bit counts.",
    ),
)

prec_option = click.option(
    "--prec",
    type=click.IntRange(1, 64),
    default=None,
    help="Unsigned integers of this many bits (most significant first) instead of bits; "
    "--n-data is then the number of integers times --prec.",
)

#: encode-shares, on `prio` and `prio-spark` alike.
encode_shares_options = _apply(
    data_config, public_key, client_input, output_2, prg_keying, prec_option, rejects_option
)


def one_secret(inline: Any, from_file: Any, names: tuple[str, str]) -> Any:
    """The secret given by exactly one of an option and its file variant."""
    if (inline is None) == (from_file is None):
        raise ConfigError(
            f"give the {names[0][2:].replace('-hex', '').replace('-', ' ')} with exactly one of "
            f"{names[0]} or {names[1]}"
        )
    return inline if from_file is None else from_file


@dataclass(frozen=True)
class ServerOptions:
    """A server's settings as typed values."""

    n_data: int
    batch_id: bytes
    server_id: str
    public_key_internal: X25519PublicKey
    public_key_external: X25519PublicKey
    prg_keying: PrgKeying

    @property
    def config(self) -> Config:
        """The batch configuration; the internal key is this server's, so B's are swapped."""
        pair = (self.public_key_internal, self.public_key_external)
        key_a, key_b = pair if self.server_id == "A" else pair[::-1]
        return Config(self.n_data, key_a, key_b, self.batch_id)

    @property
    def label(self) -> str:
        """How stderr lines name this server and batch."""
        return f"server {self.server_id}, batch {self.batch_id.decode('utf-8', 'replace')}"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ServerOptions:
        return cls(
            params["n_data"],
            params["batch_id"],
            params["server_id"],
            params["public_key_hex_internal"],
            params["public_key_hex_external"],
            PrgKeying(params.get("prg_keying") or PrgKeying.HASHED),
        )


def optional_location(path: str | None) -> Location | None:
    return None if path is None else location(path)


def make_config(
    n_data: int,
    batch_id: bytes | str,
    key_a: X25519PublicKey | str,
    key_b: X25519PublicKey | str,
    names: tuple[str, str],
) -> Config:
    """A Config from possibly unparsed values (for callers outside click)."""
    return Config(
        N_DATA.convert(n_data, None, None),
        public_key_from_hex(key_a, names[0]),
        public_key_from_hex(key_b, names[1]),
        BATCH_ID.convert(batch_id, None, None),
    )
