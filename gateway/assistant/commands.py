"""``bedside models list|verify``: the models of ``models/manifest.toml`` and their files.

``gateway.cli`` calls :func:`register` on its typer app. Exit status: 0 success; 1 a file whose
size or sha256 does not match the manifest (``verify``, naming the file); 2 a usage error (a
manifest that does not validate, an unknown model), one line on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from gateway.assistant.manifest import (
    FileStatus,
    Location,
    Manifest,
    file_location,
    load_manifest,
    verify_models,
)
from gateway.errors import BedsideError

USAGE_ERROR = 2
MISMATCH = 1
DATA_DIR_ENV = "BEDSIDE_DATA_DIR"

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="The gateway's data directory (embedded models are assembled in its models/).",
        file_okay=False,
    ),
]
ModelsDir = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        help="Where placed models live (default: the manifest's directory).",
        file_okay=False,
    ),
]
ManifestOption = Annotated[
    Path | None,
    typer.Option(
        "--manifest", help="The model manifest (default: models/manifest.toml).", dir_okay=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

models_app = typer.Typer(help="The LLM models the assistant can load.", no_args_is_help=True)


def _fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _manifest(path: Path | None) -> Manifest:
    try:
        return load_manifest(path)
    except BedsideError as exc:
        _fail(str(exc))


def _data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    from gateway.paths import default_data_dir

    return default_data_dir()


@models_app.command("list")
def models_list(
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    manifest: ManifestOption = None,
    as_json: JsonOption = False,
) -> None:
    """The manifest's models, where their files go and whether they are there."""
    listed = _manifest(manifest)
    base = _data_dir(data_dir)
    rows: list[dict[str, object]] = []
    lines: list[str] = []
    for name in sorted(listed.models):
        entry = listed.models[name]
        source = entry.pypi or entry.url
        mark = " (default)" if name == listed.default else ""
        lines.append(f"{name}{mark}: {entry.description}")
        lines.append(
            f"  chat format {entry.chat_format}, trained context {entry.n_ctx_train} tokens, "
            f"from {source}"
        )
        files: list[dict[str, object]] = []
        for role, spec in entry.files():
            path = file_location(
                entry, spec, data_dir=base, models_dir=models_dir or listed.models_dir
            )
            present = path.is_file()
            files.append(
                {
                    "role": role,
                    "path": str(path),
                    "present": present,
                    "sha256": spec.sha256,
                    "size": spec.size,
                }
            )
            state = "present" if present else "absent"
            if entry.location is Location.DATA and not present:
                state += ", assembled on first use"
            lines.append(f"  {role}: {path} [{state}] sha256 {spec.sha256 or '(not recorded)'}")
        rows.append(
            {
                "name": name,
                "default": name == listed.default,
                "description": entry.description,
                "location": str(entry.location),
                "chat_format": entry.chat_format,
                "n_ctx_train": entry.n_ctx_train,
                "source": source,
                "files": files,
            }
        )
    typer.echo(json.dumps(rows, indent=2) if as_json else "\n".join(lines))


@models_app.command("verify")
def models_verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to check (default: all).")
    ] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    manifest: ManifestOption = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Hash the present model files; exit 1 naming any file that does not match."""
    listed = _manifest(manifest)
    try:
        checks = verify_models(
            listed,
            data_dir=_data_dir(data_dir),
            models_dir=models_dir,
            names=names or (),
            progress=progress,
        )
    except BedsideError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}")
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "model": c.model,
                        "role": c.role,
                        "path": str(c.path),
                        "status": str(c.status),
                        "sha256": c.sha256,
                        "detail": c.detail,
                    }
                    for c in checks
                ],
                indent=2,
            )
        )
    else:
        for check in checks:
            typer.echo(
                f"{check.status:>8}  {check.model} {check.role}: {check.path}: {check.detail}"
            )
    bad = [c for c in checks if c.status is FileStatus.MISMATCH]
    for check in bad:
        typer.echo(f"error: {check.path}: {check.detail}", err=True)
    if bad:
        raise typer.Exit(MISMATCH)


def register(app: typer.Typer) -> None:
    """Add ``models`` to the ``bedside`` app."""
    app.add_typer(models_app, name="models")
