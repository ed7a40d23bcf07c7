"""``bedside receive``: the hospital side's command (receive, verify, deduplicate, deliver).

``gateway.cli`` calls :func:`register` on its typer app. Exit status: 0 after Ctrl-C / SIGTERM or
``--max-bundles``; 2 a usage or input error, one line on stderr. Says on stderr when it is
subscribed (``receiving as ID: subscribed to TOPICS``); prints the counts as one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from pathlib import Path
from typing import Annotated, Final

import typer
from pydantic import ValidationError

from gateway.command_options import fail
from gateway.errors import BedsideError
from gateway.forward.settings import HttpsSettings, MqttSettings, validation_message
from gateway.hospital.keyring import KeyDirectory
from gateway.hospital.receiver import default_client_id, receive

GROUP_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


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
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Share the load with the other receivers of this group (MQTT v5 $share).",
        ),
    ] = None,
    max_bundles: Annotated[
        int | None, typer.Option("--max-bundles", min=1, help="Exit after accepting this many.")
    ] = None,
) -> None:
    """Receive signed Bundles, verify, deduplicate, store or forward; Ctrl-C ends it."""
    if out is None and fhir is None:
        fail("give --out DIR and/or --fhir URL")
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
        fail(validation_message(exc))
    if group is not None and not GROUP_NAME.fullmatch(group):
        fail(f"--group {group!r}: expected 1-64 of A-Z a-z 0-9 . _ - (one MQTT topic level)")
    try:
        allowed = KeyDirectory(keys)
    except (BedsideError, OSError) as exc:
        fail(str(exc))

    async def run() -> dict[str, object]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, NotImplementedError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
        stats = await receive(
            settings,
            allowed,
            group=group,
            out_dir=out,
            fhir=fhir_settings,
            state_path=state,
            max_bundles=max_bundles,
            stop=stop,
            on_subscribed=lambda topics: typer.echo(
                f"receiving as {settings.client_id or default_client_id(group)}: "
                f"subscribed to {', '.join(topics)}",
                err=True,
            ),
        )
        return stats.as_dict()

    typer.echo(json.dumps(asyncio.run(run())))


def register(app: typer.Typer) -> None:
    """Add ``receive`` to the ``bedside`` app."""
    app.command("receive")(receive_command)
