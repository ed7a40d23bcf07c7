"""The consultation records: one JSON file per consultation (``<id>.json``, mode 0600) in the
archive directory, written atomically after every reply and on closing.

Listing them must not cost a read of every record on every call (a gateway keeps months of them):
the archive remembers each file's summary with the file's inode, modification time and size and
reads a file again only when one of them changed (a save replaces the file with a new one; another
process's writes are seen the same way)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from gateway.fhir import jsonio

ARCHIVE_MODE: Final = 0o600
ARCHIVE_DIR_MODE: Final = 0o700
SUMMARY_FIELDS: Final = ("id", "status", "created", "closed")


class _Seen(NamedTuple):
    """A file as last read: what identifies its version, and its summary (None: not ours)."""

    version: tuple[int, int, int]  # inode, modification time, size
    summary: dict[str, Any] | None


class ConsultationArchive:
    """One JSON file per consultation (``<id>.json``, mode 0600), written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[Path, _Seen] = {}

    def path(self, cid: str) -> Path | None:
        try:
            canonical_id = str(uuid.UUID(cid))
        except ValueError:
            return None
        return self.directory / f"{canonical_id}.json" if canonical_id == cid else None

    def _write(self, record: Mapping[str, Any]) -> None:
        path = self.path(str(record["id"]))
        if path is None:
            raise ValueError(f"consultation id {record['id']!r} is not a UUID")
        self.directory.mkdir(mode=ARCHIVE_DIR_MODE, parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, ARCHIVE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(jsonio.dumps(record))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)

    def _read(self, cid: str) -> dict[str, Any] | None:
        path = self.path(cid)
        if path is None or not path.is_file():
            return None
        return jsonio.loads(path.read_text(encoding="utf-8"))

    async def save(self, record: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._write, record)

    async def load(self, cid: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._read, cid)

    def _summaries(self) -> list[dict[str, Any]]:
        seen: dict[Path, _Seen] = {}
        for path in self.directory.glob("*.json") if self.directory.is_dir() else []:
            try:
                stat = path.stat()
            except OSError:
                continue  # replaced or removed meanwhile: it is listed at the next call
            known = self._seen.get(path)
            version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if known is None or known.version != version:
                known = _Seen(version, self._summary(path))
            seen[path] = known
        self._seen = seen  # files gone are forgotten
        return [dict(s.summary) for s in seen.values() if s.summary is not None]

    def _summary(self, path: Path) -> dict[str, Any] | None:
        try:
            record = jsonio.loads(path.read_text(encoding="utf-8"))
        except (OSError, jsonio.FhirJsonError):
            return None  # a file being replaced, or not ours: skipped, never fatal
        if self.path(str(record.get("id"))) != path:
            return None
        return {k: record.get(k) for k in SUMMARY_FIELDS}

    async def summaries(self) -> list[dict[str, Any]]:
        """``{"id", "status", "created", "closed"}`` of every archived consultation."""
        return await asyncio.to_thread(self._summaries)
