"""``bedside keys|verify|outbox``: the forwarding sub-commands of the gateway.

``gateway.cli`` calls :func:`register` on its typer app (``bedside receive``, the hospital side,
is registered by :mod:`gateway.hospital.commands`). Exit status: 0 success; 1 a Bundle that does
not verify (``verify``); 2 a usage or input error, one line on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import BedsideError
from gateway.fhir import jsonio
from gateway.forward.errors import SignatureError, VerifyFailure
from gateway.forward.signing import (
    KeyStore,
    SigningKey,
    load_keyring,
    public_key_file_text,
    verify_bundle,
    verify_detached,
)
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


# -- keys ------------------------------------------------------------------------------------------

keys_app = typer.Typer(help="The gateway's signing key.", no_args_is_help=True)


def _key_command(data_dir: Path, action: Callable[[KeyStore], tuple[str, SigningKey]]) -> None:
    """Run ``action`` (headline, key) on the key directory; print it with the public JWK last."""
    store = KeyStore(data_dir)
    try:
        headline, key = action(store)
        kept = len(store.public_keys())
    except BedsideError as exc:
        _fail(str(exc))
    typer.echo(headline)
    typer.echo(f"public keys kept for verification: {kept} in {store.public_directory}")
    typer.echo(public_key_file_text(key))


@keys_app.command("show")
def keys_show(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Print the public key as a JWK (last line); creates the key on first use."""

    def show(store: KeyStore) -> tuple[str, SigningKey]:
        key = store.load_or_create()
        return f"key id (RFC 7638 thumbprint): {key.kid}", key

    _key_command(data_dir, show)


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Make a new signing key; earlier public keys stay listed for verification."""

    def rotate(store: KeyStore) -> tuple[str, SigningKey]:
        old, new = store.rotate()
        return f"rotated: {old.kid if old else '(none)'} -> {new.kid}", new

    _key_command(data_dir, rotate)


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
        bundle = jsonio.loads(text)
    except jsonio.NotAnObjectError:
        bundle = {}  # valid JSON, but not a resource: reported as not a Bundle below
    except jsonio.FhirJsonError as exc:
        _fail(f"{file}: invalid: not-json: {exc}", INVALID)
    if bundle.get("resourceType") != "Bundle":
        _fail(f"{file}: invalid: not-a-bundle: resourceType is not Bundle", INVALID)
    try:
        kid = verify_bundle(bundle, keys)
    except SignatureError as exc:
        _fail(f"{file}: invalid: {exc}", INVALID)
    message = f"valid: Bundle {bundle.get('id')} signed by key {kid}"
    try:
        reviewer = clinician_signature(bundle, keys)
    except SignatureError as exc:
        _fail(f"{file}: invalid: the clinician's signature: {exc}", INVALID)
    if reviewer is not None:
        name, clinician_kid = reviewer
        message += f"; approved by {name} with key {clinician_kid}"
    typer.echo(message)


def clinician_signature(
    bundle: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[str, str] | None:
    """(name, kid) of the clinician whose Verification Signature the reviewed Bundle carries,
    checked over its signing payload (gateway.fhir.review); None for a Bundle without one."""
    from gateway.fhir.review import (
        ReviewError,
        review_provenance,
        signing_payload,
        verification_jws,
        verifier_name,
    )

    try:
        if not review_provenance(bundle).get("signature"):
            return None
    except ReviewError:
        return None
    try:
        jws_text = verification_jws(bundle)
    except ReviewError as exc:
        raise SignatureError(VerifyFailure.MALFORMED_JWS, str(exc)) from exc
    kid = verify_detached(jws_text, signing_payload(bundle), keys)
    return verifier_name(bundle) or "an unnamed reviewer", kid


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
    # held: readings kept out of the outbox because no patient was assigned (docs/contracts.md)
    summary: dict[str, object] = {**stats.as_dict(), "held": stats.held}
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
    """Add ``keys``, ``verify`` and ``outbox`` to the ``bedside`` app."""
    app.add_typer(keys_app, name="keys")
    app.command("verify")(verify)
    app.add_typer(outbox_app, name="outbox")
