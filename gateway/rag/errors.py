"""Errors of retrieval: each names the input (file, index, model) and says what was expected."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import BedsideError


def one_line(error: BaseException) -> str:
    """``TypeName: message`` of a third-party exception, whitespace runs (newlines) as one space."""
    return " ".join(f"{type(error).__name__}: {error}".split())


class RagError(BedsideError):
    """Root of the retrieval package's errors."""


class SourceError(RagError, ValueError):
    """A document that cannot be ingested: missing, unsupported, unreadable, corrupt or empty."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class EmptyIndexError(RagError, LookupError):
    """Search over an index that does not exist yet or holds no passages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path}: no documents are indexed; run `bedside ingest PATH...` with the same "
            "--data-dir first"
        )


class IndexMismatchError(RagError, ValueError):
    """The index was built with another embedding model than the one configured."""

    def __init__(self, path: Path, indexed: str, configured: str) -> None:
        self.path = path
        self.indexed = indexed
        self.configured = configured
        super().__init__(
            f"{path}: the index was built with embedding model {indexed!r}, the configuration "
            f"names {configured!r}; vectors of different models cannot be mixed: configure "
            f"{indexed!r} again, or delete {path.name} (or use another --data-dir) and ingest anew"
        )


class IndexStorageError(RagError, RuntimeError):
    """The index file cannot be opened, read or written (corrupt, newer schema, disk full)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class ModelError(RagError, RuntimeError):
    """The embedding model cannot be loaded, or cannot do what chunking needs."""
