"""``bedside ingest`` and ``bedside search``; ``gateway.cli`` calls :func:`register` on its app.

Both print JSON on stdout; ``ingest`` draws its progress bar on stderr. Exit status: 0 success;
2 a usage or input error (no such path, unsupported file type, a file that could not be ingested,
an empty index), one line per problem on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from gateway.command_options import USAGE_ERROR, fail
from gateway.errors import BedsideError
from gateway.rag.ingest import ingest
from gateway.rag.retriever import DEFAULT_K, MAX_K, Retriever
from gateway.rag.settings import EMBEDDED_MODEL, RagSettings

DATA_DIR_ENV = "BEDSIDE_DATA_DIR"
RAG_ENV_PREFIX = "BEDSIDE_RAG__"  # as the `rag` section of the gateway's settings would read them

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        file_okay=False,
        help="The gateway's data directory (default: the per-user data directory).",
        show_default=False,
    ),
]


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _data_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    from gateway.paths import default_data_dir

    return default_data_dir()


def _settings(**overrides: Any) -> RagSettings:
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return RagSettings(**given)
    except ValidationError as exc:
        fail(
            "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg']}"
                for error in exc.errors()
            )
        )


class _Bar:
    """:class:`gateway.rag.ingest.IngestProgress` on a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, files: int) -> None:
        self._task = self._progress.add_task("ingest", total=files)

    def advance(self, path: Path) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, description=path.name)


def ingest_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="PATH...",
            help="Files or directories: Markdown, HTML, plain text, PDF.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove indexed documents whose file is gone.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            envvar=f"{RAG_ENV_PREFIX}MODEL",
            help=f"Embedding model (default: the embedded {EMBEDDED_MODEL}); a local "
            "sentence-transformers directory or a model in the Hugging Face cache.",
            show_default=False,
        ),
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(
            "--chunk-tokens", envvar=f"{RAG_ENV_PREFIX}CHUNK_TOKENS", help="Tokens per chunk."
        ),
    ] = None,
    chunk_overlap: Annotated[
        int | None,
        typer.Option(
            "--chunk-overlap",
            envvar=f"{RAG_ENV_PREFIX}CHUNK_OVERLAP",
            help="Tokens shared by consecutive chunks.",
        ),
    ] = None,
) -> None:
    """Index documents for the assistant; unchanged files are skipped, changed ones replaced."""
    if not paths and not prune:
        fail("give at least one PATH (a file or a directory), or --prune")
    settings = _settings(model=model, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            summary = ingest(
                paths or [],
                _data_dir(data_dir),
                settings,
                remove_missing=prune,
                progress=_Bar(progress),
            )
    except BedsideError as exc:
        fail(str(exc))
    _print_json(summary.as_dict())
    if summary.failures:
        for path, problem in summary.failures:
            typer.echo(f"error: {path}: {problem}", err=True)
        raise typer.Exit(USAGE_ERROR)


def search_command(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="What to look for, in plain words.")
    ],
    k: Annotated[
        int, typer.Option("-k", "--top-k", min=1, max=MAX_K, help="Passages at most.")
    ] = DEFAULT_K,
    data_dir: DataDir = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=-1.0,
            max=1.0,
            envvar=f"{RAG_ENV_PREFIX}THRESHOLD",
            help="Drop passages with a cosine similarity below this (default 0.35).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the passages that best answer QUERY as JSON, with document, page/section, score."""
    settings = _settings(threshold=threshold)
    try:
        with Retriever(_data_dir(data_dir), settings) as retriever:
            passages = retriever.search_sync(query, k)
    except BedsideError as exc:
        fail(str(exc))
    _print_json(
        {
            "query": query,
            "k": k,
            "threshold": settings.threshold,
            "index": str(retriever.path),
            "passages": [passage.as_dict() for passage in passages],
        }
    )


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``search`` to the ``bedside`` app."""
    app.command("ingest")(ingest_command)
    app.command("search")(search_command)
