"""The consultation records: one JSON file per consultation (``<id>.json``, mode 0600) in the
archive directory, written atomically after every reply and on closing."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gateway.fhir import jsonio

ARCHIVE_MODE: Final = 0o600
ARCHIVE_DIR_MODE: Final = 0o700
SUMMARY_FIELDS: Final = ("id", "status", "created", "closed")


class ConsultationArchive:
    """One JSON file per consultation (``<id>.json``, mode 0600), written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

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
        out = []
        for path in self.directory.glob("*.json") if self.directory.is_dir() else []:
            try:
                record = jsonio.loads(path.read_text(encoding="utf-8"))
            except (OSError, jsonio.FhirJsonError):
                continue  # a file being replaced, or not ours: skipped, never fatal
            if self.path(str(record.get("id"))) == path:
                out.append({k: record.get(k) for k in SUMMARY_FIELDS})
        return out

    async def summaries(self) -> list[dict[str, Any]]:
        """``{"id", "status", "created", "closed"}`` of every archived consultation."""
        return await asyncio.to_thread(self._summaries)
