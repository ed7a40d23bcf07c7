"""What the ``bedside`` subcommands share: the usage-error exit, one-line errors, and the
``--config`` / ``--data-dir`` options (a light module: typer and the standard library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, NoReturn

import typer

USAGE_ERROR: Final = 2

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default: per-user data dir).", file_okay=False
    ),
]


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """One line ``error: …`` on stderr and the exit status (2: an error the user can fix)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
