"""The tables of draft reports and their review: every version of a draft kept, decisions
remembered by id (docs/architecture.md, "Drafts and their review").

Functions over the store's connection, called inside ``Store.transaction`` (writes) or on the
reader's connection; a draft's ``version`` is its latest, and a write naming an older one is
refused (:class:`StaleVersionError`): two reviewers cannot overwrite each other unseen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.fhir import jsonio
from gateway.store.errors import StoreError

MAX_PAGE: Final = 100


class StaleVersionError(StoreError):
    """A change to a draft version that is not the latest any more."""


class UnknownDraftError(StoreError):
    """No draft with that id."""


@dataclass(frozen=True, slots=True)
class DraftRecord:
    id: str
    status: str
    patient: str | None
    version: int
    created: str
    updated: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "patient": self.patient,
            "version": self.version,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True, slots=True)
class VersionRecord:
    version: int
    status: str
    action: str
    author: str
    at: str
    bundle: dict[str, Any]  # unsigned
    signed: dict[str, Any] | None  # the signed Bundle that left the gateway, if one did

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "action": self.action,
            "author": self.author,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to add: what it is and who made it when."""

    status: str
    action: str
    author: str
    at: str
    bundle: Mapping[str, Any]
    signed: Mapping[str, Any] | None = None


def _draft(row: sqlite3.Row | tuple[Any, ...]) -> DraftRecord:
    return DraftRecord(*row)


_DRAFT_COLUMNS: Final = "id, status, patient, version, created, updated"


def add_draft(
    conn: sqlite3.Connection, draft_id: str, patient: str | None, first: NewVersion
) -> bool:
    """Record a new draft with its first version; False when it is already known."""
    inserted = conn.execute(
        """INSERT INTO drafts (id, status, patient, version, created, updated)
           VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO NOTHING""",
        (draft_id, first.status, patient, first.at, first.at),
    ).rowcount
    if inserted:
        _insert_version(conn, draft_id, 1, first)
    return bool(inserted)


def _insert_version(conn: sqlite3.Connection, draft_id: str, version: int, new: NewVersion) -> None:
    conn.execute(
        """INSERT INTO draft_versions (draft, version, status, action, author, at, bundle, signed)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            draft_id,
            version,
            new.status,
            new.action,
            new.author,
            new.at,
            jsonio.dumps(new.bundle),
            None if new.signed is None else jsonio.dumps(new.signed),
        ),
    )


def add_version(conn: sqlite3.Connection, draft_id: str, expected: int, new: NewVersion) -> int:
    """Add the version after ``expected`` (which must be the latest); returns its number."""
    current = get_draft(conn, draft_id)
    if current.version != expected:
        raise StaleVersionError(
            f"draft {draft_id} is at version {current.version}, not {expected}: reload it"
        )
    version = expected + 1
    _insert_version(conn, draft_id, version, new)
    conn.execute(
        "UPDATE drafts SET status = ?, version = ?, updated = ? WHERE id = ?",
        (new.status, version, new.at, draft_id),
    )
    return version


def get_draft(conn: sqlite3.Connection, draft_id: str) -> DraftRecord:
    row = conn.execute(
        f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE id = ?",  # noqa: S608 - fixed columns
        (draft_id,),
    ).fetchone()
    if row is None:
        raise UnknownDraftError(f"no draft {draft_id}")
    return _draft(tuple(row))


def versions(conn: sqlite3.Connection, draft_id: str) -> list[VersionRecord]:
    rows = conn.execute(
        """SELECT version, status, action, author, at, bundle, signed FROM draft_versions
           WHERE draft = ? ORDER BY version""",
        (draft_id,),
    ).fetchall()
    return [
        VersionRecord(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            jsonio.loads(r[5]),
            None if r[6] is None else jsonio.loads(r[6]),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class DraftQuery:
    """Filters and page of a draft listing (newest first)."""

    status: str | None = None
    patient: str | None = None
    since: str | None = None  # created at or after (ISO 8601 text)
    until: str | None = None  # created before
    page: int = 1
    per_page: int = 20


def list_drafts(conn: sqlite3.Connection, query: DraftQuery) -> tuple[list[DraftRecord], int]:
    """One page of drafts matching ``query``, and how many match in all."""
    where, args = [], []
    for column, op, value in (
        ("status", "=", query.status),
        ("patient", "=", query.patient),
        ("created", ">=", query.since),
        ("created", "<", query.until),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    (total,) = conn.execute(f"SELECT count(*) FROM drafts {clause}", args).fetchone()  # noqa: S608 - fixed columns
    per_page = max(1, min(query.per_page, MAX_PAGE))
    rows = conn.execute(
        f"SELECT {_DRAFT_COLUMNS} FROM drafts {clause} ORDER BY created DESC, id "  # noqa: S608
        "LIMIT ? OFFSET ?",
        [*args, per_page, (max(query.page, 1) - 1) * per_page],
    ).fetchall()
    return [_draft(tuple(r)) for r in rows], int(total)


def decision_seen(conn: sqlite3.Connection, decision_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT draft, version, action, reviewer, via, at FROM decisions WHERE id = ?",
        (decision_id,),
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("draft", "version", "action", "reviewer", "via", "at"), row, strict=True))


def add_decision(
    conn: sqlite3.Connection,
    decision_id: str,
    draft_id: str,
    version: int,
    *,
    action: str,
    reviewer: str,
    via: str,
    at: str,
) -> None:
    conn.execute(
        """INSERT INTO decisions (id, draft, version, action, reviewer, via, at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (decision_id, draft_id, version, action, reviewer, via, at),
    )
