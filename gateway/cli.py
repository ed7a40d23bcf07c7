"""The `bedside` command.

Sub-commands live next to the code they drive and are wired here; this module only parses
arguments, calls into the package and turns project errors into one line on stderr with exit
status 2 (no tracebacks for errors a user can cause).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import simplejson
import typer

from gateway import __version__
from gateway.errors import BedsideError

app = typer.Typer(
    name="bedside",
    help="Bedside Gateway: BLE medical sensors to signed HL7 FHIR at the bedside.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
USAGE_ERROR = 2
_HEX_SEPARATORS = re.compile(r"[\s:_-]+")
_UUID16 = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{4})")


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USAGE_ERROR)


def parse_uuid16(text: str) -> int:
    """``2A35``, ``0x2a35`` → 0x2A35."""
    match = _UUID16.fullmatch(text.strip())
    if match is None:
        fail(f"--char {text!r}: expected a 16-bit UUID in hex such as 2A35 or 0x2A35")
    return int(match.group(1), 16)


def parse_hex(text: str) -> bytes:
    """Hex bytes, optionally ``0x``-prefixed and separated by spaces, colons or dashes."""
    cleaned = _HEX_SEPARATORS.sub("", text.strip())
    cleaned = cleaned.removeprefix("0x").removeprefix("0X")
    if not cleaned:
        fail("--hex is empty: expected the characteristic value as hex bytes, e.g. '1E8A00'")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        fail(f"--hex {text!r}: expected an even number of hex digits (0-9, A-F)")


def print_json(data: object) -> None:
    typer.echo(simplejson.dumps(data, use_decimal=True, indent=2, ensure_ascii=False))


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit


@app.command()
def decode(
    char: Annotated[str, typer.Option("--char", help="16-bit characteristic UUID, e.g. 2A35.")],
    hex_value: Annotated[str, typer.Option("--hex", help="The characteristic value in hex.")],
    fhir: Annotated[
        bool, typer.Option("--fhir", help="Print a FHIR R4 collection Bundle instead.")
    ] = False,
) -> None:
    """Decode one characteristic value and print it as JSON (or as FHIR with --fhir)."""
    from gateway import ieee11073
    from gateway.ieee11073._jsonable import jsonable
    from gateway.ieee11073.registry import MeasurementSource

    uuid = parse_uuid16(char)
    data = parse_hex(hex_value)
    try:
        value = ieee11073.decode(uuid, data)
    except BedsideError as exc:
        fail(str(exc))
    if fhir:
        from gateway.fhir.cli import decoded_bundle

        print_json(decoded_bundle(value))
        return
    out: dict[str, object] = {"uuid": f"{uuid:04X}", "name": value.NAME, "value": jsonable(value)}
    if isinstance(value, MeasurementSource):
        out["measurements"] = jsonable(value.measurements())
    print_json(out)


def _overrides(
    data_dir: Path | None,
    mqtt: str | None,
    https: str | None,
    http_port: int | None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"data_dir": data_dir, **extra}
    if mqtt is not None:
        out["mqtt"] = {"url": mqtt}
    if https is not None:
        out["https"] = {"base_url": https}
    if http_port is not None:
        out["http"] = {"port": http_port}
    return out


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


async def _until_signalled(coro: Coroutine[Any, Any, T]) -> T | None:
    """Run ``coro``; SIGINT/SIGTERM cancel it cleanly (exit status 0)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: per-user data dir).")
]
MqttOption = Annotated[
    str | None, typer.Option("--mqtt", help="MQTT uplink URL, mqtt://host:port or mqtts://…")
]
HttpsOption = Annotated[
    str | None, typer.Option("--https", help="FHIR base URL of the HTTPS uplink.")
]
LogOption = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")]
HttpPortOption = Annotated[
    int | None,
    typer.Option("--http-port", min=0, max=65535, help="HTTP API port (default 8080; 0: any)."),
]


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML configuration file.")
    ] = None,
    data_dir: DataDirOption = None,
    mqtt: MqttOption = None,
    https: HttpsOption = None,
    http_port: HttpPortOption = None,
    log_level: LogOption = "info",
) -> None:
    """Run the gateway service (under systemd: Type=notify)."""
    from gateway.app import Gateway
    from gateway.config import load_settings

    _logging(log_level)
    settings = load_settings(config, **_overrides(data_dir, mqtt, https, http_port))
    gateway = Gateway(settings)
    asyncio.run(_until_signalled(gateway.run()))


@app.command()
def demo(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="normal, tachycardia, hypoxia, hypertension, "
            "fever, faults, secure, or a scenario TOML file.",
        ),
    ] = "normal",
    headless: Annotated[
        bool, typer.Option("--headless", help="No live view: run, print a JSON summary, exit.")
    ] = False,
    duration: Annotated[
        float | None, typer.Option("--for", min=0, help="Seconds to run (headless: required).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Signal and fault seed.")] = 0,
    data_dir: DataDirOption = None,
    mqtt: MqttOption = None,
    https: HttpsOption = None,
    http_port: HttpPortOption = None,
    log_level: LogOption = "warning",
) -> None:
    """The simulator's five sensors and the gateway, with embedded defaults.

    The HTTP API (assistant, consultations, /v1) is served while it runs; its bearer token is
    in DATA_DIR/demo-token.
    """
    from gateway.config import load_settings
    from gateway.demo import run_demo

    if headless and duration is None:
        fail("--headless needs --for SECONDS")
    _logging(log_level)
    settings = load_settings(
        None, **_overrides(data_dir, mqtt, https, http_port, ble={"auto_accept": True})
    )
    if settings.http.token_file is None:
        http = settings.http.model_copy(update={"token_file": settings.data_dir / "demo-token"})
        settings = settings.model_copy(update={"http": http})
    summary = asyncio.run(
        _until_signalled(
            run_demo(settings, scenario=scenario, seed=seed, duration_s=duration, headless=headless)
        )
    )
    if summary is not None:
        typer.echo(simplejson.dumps(summary, use_decimal=True))


@app.command()
def doctor(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML configuration file.")
    ] = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check that this box is ready: radio, clock, disk, key, model, uplinks, time zone,
    watchdog. One line per check with the fix; exit 1 when a check fails."""
    from gateway.config import load_settings
    from gateway.doctor import Level, run_checks

    settings = load_settings(config, **_overrides(data_dir, None, None, None))
    checks = asyncio.run(run_checks(settings))
    if as_json:
        typer.echo(json.dumps([c.as_json() for c in checks], indent=2))
    else:
        for check in checks:
            typer.echo(check.line())
    if any(c.level is Level.FAIL for c in checks):
        raise typer.Exit(1)


def _register_subcommands() -> None:
    from gateway.assistant.commands import register as register_assistant
    from gateway.backup_commands import register as register_backup
    from gateway.firmware.commands import register as register_firmware
    from gateway.forward.commands import register as register_forwarding
    from gateway.hospital.commands import register as register_hospital
    from gateway.patients.commands import register as register_patient
    from gateway.rag.commands import register as register_rag
    from gateway.review.commands import register as register_review
    from gateway.sensor_commands import register as register_sensors
    from gateway.users.commands import register as register_users

    register_forwarding(app)
    register_hospital(app)
    register_patient(app)
    register_rag(app)
    register_sensors(app)
    register_users(app)
    register_review(app)
    register_assistant(app)
    register_firmware(app)
    register_backup(app)


_register_subcommands()


def main() -> NoReturn:
    """Console-script entry point."""
    try:
        app()
    except BedsideError as exc:  # a project error a command did not handle itself
        typer.echo(f"error: {exc}", err=True)
        sys.exit(USAGE_ERROR)
    sys.exit(0)
