"""The audit trail's table: append-only, hash-chained (docs/architecture.md, "Audit trail").

Each entry is a JSON object; the row keeps its canonical JSON (RFC 8785), ``prev`` (the previous
row's hash; 64 zeros for the first) and ``hash`` = SHA-256 of ``prev`` followed by the canonical
entry, which includes its own ``seq``. :func:`verify` walks the chain: a changed entry breaks its
hash, a deleted or reordered one breaks the links or the numbering, and a deleted last entry
leaves ``sqlite_sequence`` ahead of the last row.

Appends run inside the store's write transaction (the caller's ``Store.transaction``), durable
like the outbox: an entry is on disk before the action it records is acknowledged.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.fhir import jsonio

GENESIS: Final = "0" * 64


def chain_hash(prev: str, canonical_entry: bytes) -> str:
    return hashlib.sha256(prev.encode("ascii") + canonical_entry).hexdigest()


def append(conn: sqlite3.Connection, entry: Mapping[str, Any]) -> int:
    """Append one entry (inside the caller's transaction); returns its ``seq``."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    seq = (row[0] if row is not None else 0) + 1
    prev = last[1] if last is not None else GENESIS
    canonical = jsonio.canonical({**entry, "seq": seq})
    conn.execute(
        "INSERT INTO audit (seq, entry, prev, hash) VALUES (?, ?, ?, ?)",
        (seq, canonical.decode("utf-8"), prev, chain_hash(prev, canonical)),
    )
    return seq


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The result of :func:`verify`: how many entries, and the first problem found (if any)."""

    entries: int
    problem: str | None = None
    seq: int | None = None  # the entry where the problem shows

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "entries": self.entries}
        if self.problem is not None:
            out |= {"problem": self.problem, "seq": self.seq}
        return out


def _rows(conn: sqlite3.Connection) -> Iterator[tuple[int, str, str, str]]:
    yield from conn.execute("SELECT seq, entry, prev, hash FROM audit ORDER BY seq")


def verify(conn: sqlite3.Connection) -> AuditCheck:
    """Walk the chain from the first entry (see the module text)."""
    expected_prev, count, last = GENESIS, 0, 0
    for seq, text, prev, digest in _rows(conn):
        count += 1
        if seq != last + 1:
            return AuditCheck(count, f"entries {last + 1} to {seq - 1} are missing", seq)
        if prev != expected_prev:
            return AuditCheck(count, f"entry {seq} does not follow entry {last}", seq)
        try:
            entry = jsonio.loads(text)
        except jsonio.FhirJsonError:
            return AuditCheck(count, f"entry {seq} is not JSON any more", seq)
        canonical = jsonio.canonical(entry)
        if entry.get("seq") != seq or chain_hash(prev, canonical) != digest:
            return AuditCheck(count, f"entry {seq} was changed", seq)
        expected_prev, last = digest, seq
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    if row is not None and row[0] > last:
        return AuditCheck(count, f"entries {last + 1} to {row[0]} were deleted", last + 1)
    return AuditCheck(count)


def unforwarded(conn: sqlite3.Connection, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """The oldest entries not yet handed to the outbox."""
    rows = conn.execute(
        "SELECT seq, entry FROM audit WHERE forwarded = 0 ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [(row[0], jsonio.loads(row[1])) for row in rows]


def mark_forwarded(conn: sqlite3.Connection, seqs: list[int]) -> None:
    conn.executemany("UPDATE audit SET forwarded = 1 WHERE seq = ?", [(s,) for s in seqs])


def entries(conn: sqlite3.Connection, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT entry FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ).fetchall()
    return [jsonio.loads(row[0]) for row in rows]
