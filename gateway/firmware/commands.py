"""``bedside firmware list|upload|confirm|revert``: sensor firmware through the running gateway's
API (docs/contracts.md, "Firmware"), as a technician or admin: ``--url`` and ``--token`` (or
``BEDSIDE_TOKEN``), by default the address and token the gateway recorded in its data directory.

``upload`` sends the image, follows the update with a progress bar on stderr and prints its
result: exit 0 when the new image runs and is confirmed (or runs under test, with
``--no-confirm``), 1 with the reason when the image, the sensor or the check refused it. Exit 2:
a usage error, or no gateway answering.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

import typer

from gateway.command_options import ConfigOption, DataDirOption, fail
from gateway.errors import BedsideError

REFUSED: Final = 1
SUCCEEDED: Final = frozenset({"confirmed", "testing"})
LISTED_SLOT_FIELDS: Final = ("slot", "version", "hash", "active", "confirmed", "pending")

firmware_app = typer.Typer(
    help="Sensor firmware over MCUmgr: list, upload (test, check, confirm), confirm, revert.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The gateway's API (default: the one it recorded when it started)."),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="BEDSIDE_TOKEN", help="A technician's or admin's API token."),
]
AddressArgument = Annotated[str, typer.Argument(help="Bluetooth address, e.g. F0:12:34:56:78:9A.")]


def _refused(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(REFUSED)


class _Api:
    """The gateway's API, failing the command with one line (1: refused, 2: not reached)."""

    def __init__(
        self, config: Path | None, data_dir: Path | None, url: str | None, token: str | None
    ) -> None:
        from gateway.config import load_settings
        from gateway.web.local import LocalApi

        try:
            settings = load_settings(config, data_dir=data_dir)
            self._api = LocalApi(settings.http, settings.data_dir, url, token)
        except BedsideError as exc:
            fail(str(exc))

    def __call__(
        self, method: str, path: str, body: dict[str, Any] | None = None, raw: bytes | None = None
    ) -> Any:
        from gateway.web.local import LocalApiError

        try:
            return self._api.call(method, path, body, raw=raw)
        except LocalApiError as exc:
            if exc.status is None:  # nothing answered
                fail(str(exc))
            _refused(str(exc))


def _address(address: str) -> str:
    from gateway.ble.registry import SensorListError, check_address

    try:
        return check_address(address)
    except SensorListError as exc:
        fail(str(exc))


@firmware_app.command("list")
def firmware_list(
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Every connected sensor with MCUmgr and its image slots, as JSON."""
    answer = _Api(config, data_dir, url, token)("GET", "/api/firmware")
    listed = [
        {
            "address": row["address"],
            "name": row["name"],
            "kind": row["kind"],
            "images": [{k: image[k] for k in LISTED_SLOT_FIELDS} for image in row["images"]],
        }
        for row in answer["sensors"]
        if row["images"] is not None
    ]
    typer.echo(json.dumps(listed, indent=2))


def _follow(api: _Api, address: str, job: dict[str, Any]) -> dict[str, Any]:
    """Show the job's progress until it ends; its last state."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    seen_steps = 0
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(job["phase"], total=job["size"])
        while True:
            for step in job["steps"][seen_steps:]:
                progress.console.print(f"{step['phase']}: {step['text']}", highlight=False)
            seen_steps = len(job["steps"])
            progress.update(bar, completed=job["offset"], description=job["phase"])
            if job["outcome"] is not None:
                return job
            job = api("GET", f"/api/firmware/{address}/job?after={job['revision']}")["job"]


@firmware_app.command("upload")
def firmware_upload(
    address: AddressArgument,
    file: Annotated[Path, typer.Argument(help="The MCUboot image (imgtool's output).")],
    force: Annotated[
        bool, typer.Option("--force", help="Install even if it is not newer than what runs.")
    ] = False,
    no_confirm: Annotated[
        bool,
        typer.Option(
            "--no-confirm",
            help="Leave the new image under test (MCUboot reverts it at the next restart "
            "unless confirmed).",
        ),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Upload an image to a sensor, restart it into the image, check it, confirm it."""
    address = _address(address)
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read it ({exc.strerror})")
    api = _Api(config, data_dir, url, token)
    query = f"force={str(force).lower()}&confirm={str(not no_confirm).lower()}"
    job = api("POST", f"/api/firmware/{address}/upload?{query}", raw=data)["job"]
    job = _follow(api, address, job)
    if job["outcome"] not in SUCCEEDED:
        _refused(job["message"])
    typer.echo(job["message"])


def _slots_command(command: str, address: str, api: _Api) -> None:
    answer = api("POST", f"/api/firmware/{_address(address)}/{command}")
    typer.echo(json.dumps(answer, indent=2))


@firmware_app.command("confirm")
def firmware_confirm(
    address: AddressArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Confirm the image the sensor runs (keep an image under test)."""
    _slots_command("confirm", address, _Api(config, data_dir, url, token))


@firmware_app.command("revert")
def firmware_revert(
    address: AddressArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Go back to the sensor's previous image (restarts it)."""
    _slots_command("revert", address, _Api(config, data_dir, url, token))


def register(app: typer.Typer) -> None:
    app.add_typer(firmware_app, name="firmware")
