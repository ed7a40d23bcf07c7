"""``bedside backup OUT`` and ``bedside restore FILE`` (docs/contracts.md, "Backup and
restore"). The passphrase comes from ``--passphrase-file``, else ``BEDSIDE_BACKUP_PASSPHRASE``,
else a prompt (asked twice for a backup). A progress bar on stderr while the files go through;
exit 0 with a JSON summary on stdout; 2 with one line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from gateway.command_options import ConfigOption, DataDirOption, fail
from gateway.errors import BedsideError

if TYPE_CHECKING:
    from gateway.backup import Progress, Summary

PASSPHRASE_ENV: Final = "BEDSIDE_BACKUP_PASSPHRASE"  # noqa: S105 - a variable name

PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"A file holding the passphrase (else {PASSPHRASE_ENV}, else asked).",
    ),
]


def _passphrase(path: Path | None, *, confirm: bool) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"{path}: cannot read the passphrase ({exc.strerror})")
    given = os.environ.get(PASSPHRASE_ENV)
    if given:
        return given
    answer: str = typer.prompt(
        "Passphrase for the keys in the backup", hide_input=True, confirmation_prompt=confirm
    )
    return answer


@contextmanager
def _progress(description: str, total: Callable[[], int]) -> Iterator[Progress]:
    """A progress bar on stderr over ``total()`` bytes; told the bytes as they are done."""
    from rich import progress as bars
    from rich.console import Console

    columns = (
        bars.TextColumn(description),
        bars.BarColumn(),
        bars.DownloadColumn(),
        bars.TransferSpeedColumn(),
    )
    with bars.Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(description, total=total() or None)
        yield lambda done: progress.advance(bar, done)


def _run(
    config: Path | None,
    data_dir: Path | None,
    passphrase_file: Path | None,
    action: Callable[[Path, str], Summary],
    *,
    confirm: bool,
) -> None:
    """Resolve the data directory and the passphrase, run ``action``, print its summary."""
    from gateway.config import load_settings

    try:
        settings = load_settings(config, data_dir=data_dir)
        summary = action(settings.data_dir, _passphrase(passphrase_file, confirm=confirm))
    except BedsideError as exc:
        fail(str(exc))
    typer.echo(json.dumps(summary.as_json()))


def backup(
    out: Annotated[Path, typer.Argument(help="The backup file to write (a new file).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Back up the gateway while it runs: store, users, keys (encrypted), configuration."""
    from gateway.backup import backup_size, make_backup

    def action(directory: Path, secret: str) -> Summary:
        with _progress("backing up", lambda: backup_size(directory, config)) as told:
            return make_backup(directory, out, secret, config=config, progress=told)

    _run(config, data_dir, passphrase_file, action, confirm=True)


def restore(
    file: Annotated[Path, typer.Argument(help="A file bedside backup wrote.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Restore a backup into a new data directory (same gateway identity and keys)."""
    from gateway.backup import restore_backup, restore_size

    def action(directory: Path, secret: str) -> Summary:
        with _progress("restoring", lambda: restore_size(file)) as told:
            return restore_backup(file, directory, secret, progress=told)

    _run(config, data_dir, passphrase_file, action, confirm=False)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
