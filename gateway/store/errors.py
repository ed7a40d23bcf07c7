"""Errors of the SQLite store."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import BedsideError


class StoreError(BedsideError):
    """Root of the store's errors."""


class SchemaVersionError(StoreError, RuntimeError):
    """The database was written by a newer gateway than this one."""

    def __init__(self, path: Path, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"{path}: database schema version {found} is newer than this gateway knows "
            f"(up to {known}); upgrade the gateway, or point --data-dir at another directory"
        )


class StoreClosedError(StoreError, RuntimeError):
    """The store was used after ``close()``."""


class StoreFullError(StoreError):
    """New readings are refused: what must stay fills the store's disk budget (the message says
    what to do)."""
