"""``bedside keys|verify|receive|outbox``: the forwarding sub-commands.

``gateway.cli`` calls :func:`register` on its typer app. Exit status: 0 success; 1 a Bundle that
does not verify (``verify``); 2 a usage or input error, one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from gateway.errors import BedsideError
from gateway.forward import fhirjson
from gateway.forward.errors import SignatureError
from gateway.forward.receiver import receive
from gateway.forward.settings import HttpsSettings, MqttSettings
from gateway.forward.signing import KeyStore, load_keyring, public_key_file_text, verify_bundle
from gateway.paths import default_data_dir
from gateway.store.models import OutboxState
from gateway.store.store import Store, store_path

USAGE_ERROR = 2
INVALID = 1
DATA_DIR_ENV = "BEDSIDE_DATA_DIR"
DEFAULT_DATA_DIR = default_data_dir()  # the same default as `bedside run`

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="The gateway's data directory (keys, store).",
        file_okay=False,
    ),
]


def _fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'value'}: {error['msg']}" for error in exc.errors()
    )


# -- keys ------------------------------------------------------------------------------------------

keys_app = typer.Typer(help="The gateway's signing key.", no_args_is_help=True)


@keys_app.command("show")
def keys_show(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Print the public key as a JWK (last line); creates the key on first use."""
    store = KeyStore(data_dir)
    try:
        key = store.load_or_create()
        kept = len(store.public_keys())
    except BedsideError as exc:
        _fail(str(exc))
    typer.echo(f"key id (RFC 7638 thumbprint): {key.kid}")
    typer.echo(f"public keys kept for verification: {kept} in {store.public_directory}")
    typer.echo(public_key_file_text(key))


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Make a new signing key; earlier public keys stay listed for verification."""
    store = KeyStore(data_dir)
    try:
        old, new = store.rotate()
        kept = len(store.public_keys())
    except BedsideError as exc:
        _fail(str(exc))
    typer.echo(f"rotated: {old.kid if old else '(none)'} -> {new.kid}")
    typer.echo(f"public keys kept for verification: {kept} in {store.public_directory}")
    typer.echo(public_key_file_text(new))


# -- verify ----------------------------------------------------------------------------------------


def verify(
    file: Annotated[Path, typer.Argument(help="A signed FHIR Bundle (JSON).")],
    key: Annotated[
        Path, typer.Option("--key", help="Allowed public key(s): JWK, JWK Set, or a directory.")
    ],
) -> None:
    """Check a Bundle's signature; exit 0 when valid, 1 (with the reason) when not."""
    try:
        keys = load_keyring(key)
        text = file.read_bytes()
    except OSError as exc:
        _fail(f"{file}: {exc.strerror or exc}")
    except BedsideError as exc:
        _fail(str(exc))
    try:
        bundle = fhirjson.loads(text)
    except fhirjson.FhirJsonError as exc:
        _fail(f"{file}: invalid: not-json: {exc}", INVALID)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        _fail(f"{file}: invalid: not-a-bundle: resourceType is not Bundle", INVALID)
    try:
        kid = verify_bundle(bundle, keys)
    except SignatureError as exc:
        _fail(f"{file}: invalid: {exc}", INVALID)
    typer.echo(f"valid: Bundle {bundle.get('id')} signed by key {kid}")


# -- receive ---------------------------------------------------------------------------------------


def receive_command(  # typer passes options by name
    *,
    mqtt: Annotated[str, typer.Option("--mqtt", help="mqtt://host:port or mqtts://host:port")],
    keys: Annotated[
        Path, typer.Option("--keys", help="Allowed gateway public keys: a JWK file or directory.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write accepted Bundles here.", file_okay=False)
    ] = None,
    fhir: Annotated[
        str | None, typer.Option("--fhir", help="POST accepted Bundles to this FHIR base URL.")
    ] = None,
    fhir_ca: Annotated[
        Path | None, typer.Option("--fhir-ca", help="CA bundle for the FHIR server.")
    ] = None,
    fhir_token: Annotated[
        str | None,
        typer.Option("--fhir-token", envvar="BEDSIDE_FHIR_TOKEN", help="Bearer token for it."),
    ] = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="Where accepted Bundle ids are remembered.")
    ] = None,
    topic_prefix: Annotated[str, typer.Option("--topic-prefix")] = "bedside",
    ca: Annotated[Path | None, typer.Option("--ca", help="CA bundle for mqtts://.")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Client certificate (mTLS).")] = None,
    client_key: Annotated[Path | None, typer.Option("--client-key", help="Client key.")] = None,
    client_id: Annotated[str | None, typer.Option("--client-id")] = None,
    max_bundles: Annotated[
        int | None, typer.Option("--max-bundles", min=1, help="Exit after accepting this many.")
    ] = None,
) -> None:
    """Receive signed Bundles, verify, deduplicate, store or forward; Ctrl-C ends it."""
    if out is None and fhir is None:
        _fail("give --out DIR and/or --fhir URL")
    try:
        settings = MqttSettings(
            url=mqtt,
            topic_prefix=topic_prefix,
            ca_file=ca,
            cert_file=cert,
            key_file=client_key,
            client_id=client_id,
        )
        fhir_settings = (
            None
            if fhir is None
            else HttpsSettings.model_validate(
                {"base_url": fhir, "ca_file": fhir_ca, "bearer_token": fhir_token}
            )
        )
    except ValidationError as exc:
        _fail(_validation_message(exc))
    try:
        allowed = load_keyring(keys)
    except BedsideError as exc:
        _fail(str(exc))

    async def run() -> dict[str, object]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, NotImplementedError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
        stats = await receive(
            settings,
            allowed,
            out_dir=out,
            fhir=fhir_settings,
            state_path=state,
            max_bundles=max_bundles,
            stop=stop,
        )
        return stats.as_dict()

    typer.echo(json.dumps(asyncio.run(run())))


# -- outbox ----------------------------------------------------------------------------------------

outbox_app = typer.Typer(help="The durable outbox of signed Bundles.", no_args_is_help=True)


def _open_store(data_dir: Path) -> Store:
    path = store_path(data_dir)
    if not path.exists():
        _fail(f"{path}: no store here; check --data-dir")
    try:
        return Store(path)
    except BedsideError as exc:
        _fail(str(exc))


@outbox_app.command("retry-dead")
def outbox_retry_dead(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    uplink: Annotated[
        str | None, typer.Option("--uplink", help="Only this uplink (mqtt, https).")
    ] = None,
) -> None:
    """Put dead-letter items back in the queue (after fixing what the server complained about)."""
    with _open_store(data_dir) as store:
        count = store.retry_dead(uplink)
    typer.echo(f"{count} dead item(s) queued again")


@outbox_app.command("show")
def outbox_show(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    dead: Annotated[bool, typer.Option("--dead", help="List the dead items too.")] = False,
) -> None:
    """Print the outbox counts as JSON (and the dead items with their reasons)."""
    with _open_store(data_dir) as store:
        stats = store.outbox_stats()
        items = store.outbox_items(state=OutboxState.DEAD, limit=1000) if dead else []
    summary: dict[str, object] = dict(stats.as_dict())
    if dead:
        summary["dead_items"] = [
            {
                "id": item.id,
                "uplink": item.uplink,
                "attempts": item.attempts,
                "error": item.last_error,
            }
            for item in items
        ]
    typer.echo(json.dumps(summary))


def register(app: typer.Typer) -> None:
    """Add ``keys``, ``verify``, ``receive`` and ``outbox`` to the ``bedside`` app."""
    app.add_typer(keys_app, name="keys")
    app.command("verify")(verify)
    app.command("receive")(receive_command)
    app.add_typer(outbox_app, name="outbox")
