"""The consultation archive's listing: right after every change, and without reading unchanged
records again."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.assistant.archive import ConsultationArchive
from gateway.fhir import jsonio


def _record(status: str = "open", **extra: Any) -> dict[str, Any]:
    cid = str(uuid.uuid4())
    return {"id": cid, "status": status, "created": "2026-12-03T05:00:00Z", "closed": None} | extra


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The record files the archive reads, in order."""
    seen: list[Path] = []
    real = ConsultationArchive._summary

    def counting(self: ConsultationArchive, path: Path) -> dict[str, Any] | None:
        seen.append(path)
        return real(self, path)

    monkeypatch.setattr(ConsultationArchive, "_summary", counting)
    return seen


async def test_listing_reads_each_record_once_until_it_changes(
    tmp_path: Path, reads: list[Path]
) -> None:
    archive = ConsultationArchive(tmp_path / "consultations")
    assert await archive.summaries() == []  # no directory yet
    records = [_record(transcript=["x" * n]) for n in range(3)]
    for record in records:
        await archive.save(record)

    first = _by_id(await archive.summaries())
    assert set(first) == {r["id"] for r in records}
    assert first[records[0]["id"]] == {
        "id": records[0]["id"],
        "status": "open",
        "created": "2026-12-03T05:00:00Z",
        "closed": None,
    }
    assert len(reads) == 3

    assert _by_id(await archive.summaries()) == first
    assert len(reads) == 3  # nothing changed: nothing read

    closed = records[1] | {"status": "closed", "closed": "2026-12-03T05:10:00Z"}
    await archive.save(closed)
    second = _by_id(await archive.summaries())
    assert second[closed["id"]]["status"] == "closed"
    assert second[closed["id"]]["closed"] == "2026-12-03T05:10:00Z"
    assert reads[3:] == [archive.path(closed["id"])]  # only the changed record

    # Same size, same modification time, another file (as another process's atomic replace).
    path = archive.path(closed["id"])
    assert path is not None
    stat = path.stat()
    replaced = closed | {"status": "signed"}  # as long as "closed"
    other = path.with_suffix(".new")
    other.write_text(jsonio.dumps(replaced), encoding="utf-8")
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert other.stat().st_size == stat.st_size
    other.replace(path)
    assert _by_id(await archive.summaries())[closed["id"]]["status"] == "signed"


async def test_listing_forgets_removed_records_and_skips_foreign_files(tmp_path: Path) -> None:
    archive = ConsultationArchive(tmp_path)
    kept, removed = _record(), _record()
    await archive.save(kept)
    await archive.save(removed)
    assert len(await archive.summaries()) == 2

    path = archive.path(removed["id"])
    assert path is not None
    path.unlink()
    (tmp_path / "notes.json").write_text('{"id": "notes"}', encoding="utf-8")  # not a record's name
    (tmp_path / f"{uuid.uuid4()}.json").write_text("{not json", encoding="utf-8")
    misnamed = tmp_path / f"{uuid.uuid4()}.json"  # a record under another record's name
    misnamed.write_text(f'{{"id": "{kept["id"]}"}}', encoding="utf-8")

    assert [r["id"] for r in await archive.summaries()] == [kept["id"]]
