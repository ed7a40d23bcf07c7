"""``bedside sensors list|accept|forget|pair``: the sensors a running gateway connects to.

The commands talk to the running gateway's API (:mod:`gateway.web.local`: the address it
recorded in the data directory, its token), so a change takes effect at once, without a restart,
and is persisted by the gateway (``DATA_DIR/sensors.json``, bonds in ``DATA_DIR/bonds.json``).
Exit status: 0 success; 2 a usage or input error, or no gateway answering, one line on stderr.
docs/contracts.md, "Sensors".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.command_options import ConfigOption, DataDirOption, fail
from gateway.errors import BedsideError

WIDE = 160

sensors_app = typer.Typer(
    help="The sensors this gateway connects to: list, accept, forget, pair with a passkey.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The gateway's API (default: the one it recorded when it started)."),
]
AddressArgument = Annotated[str, typer.Argument(help="Bluetooth address, e.g. F0:12:34:56:78:9A.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _call(
    config: Path | None,
    data_dir: Path | None,
    url: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    from gateway.ble.registry import check_address
    from gateway.config import load_settings
    from gateway.web.local import LocalApi

    try:
        if path.count("/") > 2:  # /api/sensors/{address}...
            check_address(path.split("/")[3])
        settings = load_settings(config, data_dir=data_dir)
        return LocalApi(settings.http, settings.data_dir, url).call(method, path, body)
    except BedsideError as exc:
        fail(str(exc))


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Sensors")
    for column in ("address", "kind", "name", "state", "accepted", "bonded", "rssi", "seen"):
        table.add_column(column)
    for row in rows:
        state = row["state"] + (" (passkey needed)" if row["waiting_for_passkey"] else "")
        if row["reason"]:
            state += f": {row['reason']}"
        seen = row["last_seen_s"]
        table.add_row(
            row["address"],
            row["kind"] or "",
            row["name"],
            state,
            row["accepted"] or "no",
            "yes" if row["bonded"] else "no",
            "" if row["rssi"] is None else f"{row['rssi']} dBm",
            "" if seen is None else f"{seen:g} s ago",
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a file: do not squeeze the table into 80 columns
        console = Console(width=WIDE)
    console.print(table)


@sensors_app.command("list")
def sensors_list(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every sensor the gateway runs or has seen advertising, problems first."""
    rows = _call(config, data_dir, url, "GET", "/api/sensors")["sensors"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _table(rows)


@sensors_app.command("accept")
def sensors_accept(
    address: AddressArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
) -> None:
    """Connect to the sensor from now on (kept across restarts)."""
    answer = _call(config, data_dir, url, "POST", f"/api/sensors/{address.upper()}/accept")
    typer.echo(f"{answer['address']}: {'accepted' if answer['changed'] else 'already accepted'}")


@sensors_app.command("forget")
def sensors_forget(
    address: AddressArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
) -> None:
    """Stop connecting to the sensor and delete its bond (its readings stay)."""
    answer = _call(config, data_dir, url, "DELETE", f"/api/sensors/{address.upper()}")
    bond = ", bond deleted" if answer["bond_deleted"] else ""
    typer.echo(f"{answer['address']}: forgotten{bond}")


@sensors_app.command("pair")
def sensors_pair(
    address: AddressArgument,
    passkey: Annotated[str, typer.Argument(help="The six digits the sensor shows.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
) -> None:
    """Give the passkey the sensor shows, for its pairing now or next."""
    from gateway.ble.pairing import PasskeyError, check_passkey

    try:
        check_passkey(passkey)
    except PasskeyError as exc:
        fail(str(exc))
    answer = _call(
        config,
        data_dir,
        url,
        "POST",
        f"/api/sensors/{address.upper()}/passkey",
        {"passkey": passkey},
    )
    when = "used now" if answer["used_now"] else "kept for its next pairing"
    typer.echo(f"{answer['address']}: passkey {when}")


def register(app: typer.Typer) -> None:
    app.add_typer(sensors_app, name="sensors")
