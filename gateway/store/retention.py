"""What the store lets go of, so that a box running for months keeps a bounded database
(docs/architecture.md, "Months unattended"):

1. outbox items delivered more than ``store.delivered_keep_days`` ago (their content reached every
   uplink; the local Observations stay);
2. Observations received more than ``store.retention_days`` ago that were forwarded: the Bundle
   that carried them is delivered (or gone from the outbox), or they were never to be sent (no
   uplink) — never one whose Bundle is still pending or dead, never a held one (no patient yet).

Each call deletes at most ``limit`` rows of each kind (short write transactions: the gateway keeps
storing readings between them); the caller repeats while there is more. Space freed is reused by
SQLite and given back to the filesystem by :func:`give_back` — in a database made before schema 5
once :func:`make_incremental` has converted it, when the gateway opens it.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.store.store import to_text

BATCH: Final = 2000
ROOM_BATCH: Final = 200  # making room: small steps, the usage is measured between them
# An Observation (``o``) that may go: its Bundle is delivered or gone (or there never was one),
# and it is not held for want of a patient. Parameter 1: the uplinks the outbox holds items for
# (a JSON array, from UPLINKS), so that the lookup uses the outbox's (uplink, id) index.
FORWARDED: Final = """NOT EXISTS (SELECT 1 FROM outbox
                      WHERE uplink IN (SELECT value FROM json_each(?1))
                        AND outbox.id = o.bundle AND state != 'delivered')
    AND o.identifier NOT IN (SELECT value FROM held, json_each(held.keys))"""
# The distinct uplinks in the outbox, one index seek each (not a scan of every item).
UPLINKS: Final = """WITH RECURSIVE u(name) AS (
        SELECT min(uplink) FROM outbox
        UNION ALL
        SELECT (SELECT min(uplink) FROM outbox WHERE uplink > u.name) FROM u
        WHERE u.name IS NOT NULL)
    SELECT json_group_array(name) FROM u WHERE name IS NOT NULL"""
log = logging.getLogger(__name__)

VACUUM_PAGES: Final = 4096  # pages given back per call (16 MiB with 4 KiB pages)


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows deleted by one :func:`prune` (one at its limit: call again)."""

    delivered: int
    observations: int


def prune(
    conn: sqlite3.Connection,
    *,
    now: dt.datetime,
    retention_days: float,
    delivered_keep_days: float,
    limit: int = BATCH,
) -> Pruned:
    """Delete what retention lets go of, at most ``limit`` rows of each kind (one transaction:
    call inside ``Store.transaction()``)."""
    delivered = conn.execute(
        """DELETE FROM outbox WHERE seq IN (
               SELECT seq FROM outbox INDEXED BY outbox_delivered
               WHERE state = 'delivered' AND updated < ?
               ORDER BY updated LIMIT ?)""",
        (to_text(now - dt.timedelta(days=delivered_keep_days)), limit),
    ).rowcount
    observations = conn.execute(
        f"""DELETE FROM observations WHERE row IN (
               SELECT row FROM observations AS o WHERE received < ?2 AND {FORWARDED}
               ORDER BY received, row LIMIT ?3)""",  # noqa: S608 - a constant condition
        (_uplinks(conn), to_text(now - dt.timedelta(days=retention_days)), limit),
    ).rowcount
    return Pruned(delivered, observations)


def make_room(conn: sqlite3.Connection, *, limit: int = ROOM_BATCH) -> Pruned:
    """Over the disk budget: delete the outbox items delivered longest ago, else (none left) the
    oldest forwarded Observations whatever their age — at most ``limit`` rows; never anything
    still to be sent or held. Nothing deleted: nothing more can go."""
    delivered = conn.execute(
        """DELETE FROM outbox WHERE seq IN (
               SELECT seq FROM outbox INDEXED BY outbox_delivered
               WHERE state = 'delivered' ORDER BY updated LIMIT ?)""",
        (limit,),
    ).rowcount
    if delivered:
        return Pruned(delivered, 0)
    observations = conn.execute(
        f"""DELETE FROM observations WHERE row IN (
               SELECT row FROM observations AS o WHERE {FORWARDED} ORDER BY row LIMIT ?2)""",  # noqa: S608 - a constant condition
        (_uplinks(conn), limit),
    ).rowcount
    return Pruned(0, observations)


def _uplinks(conn: sqlite3.Connection) -> str:
    (names,) = conn.execute(UPLINKS).fetchone()
    return str(names)


@dataclass(frozen=True, slots=True)
class Usage:
    """The database file: its size and how much of it holds data (the rest is free pages)."""

    file_bytes: int
    free_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.file_bytes - self.free_bytes


def usage(conn: sqlite3.Connection) -> Usage:
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    return Usage(int(pages) * int(page_size), int(free) * int(page_size))


# The WAL next to the budget: checkpointed every 1/WAL_SHARE of it, between SQLite's own default
# (1000 pages) and a floor that keeps checkpoints (an fsync each) rare on a small budget.
WAL_SHARE: Final = 16
WAL_MIN_PAGES: Final = 100
WAL_MAX_PAGES: Final = 1000


def bound_wal(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Keep the writer's WAL to a share of the disk budget ``max_bytes``: checkpoint it every
    that many pages (``PRAGMA wal_autocheckpoint``) and cut it back to that size once
    checkpointed (``PRAGMA journal_size_limit``). Returns the WAL's bound in bytes."""
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    pages = max(WAL_MIN_PAGES, min(WAL_MAX_PAGES, max_bytes // int(page_size) // WAL_SHARE))
    conn.execute(f"PRAGMA wal_autocheckpoint = {pages:d}")
    conn.execute(f"PRAGMA journal_size_limit = {pages * int(page_size):d}")
    return pages * int(page_size)


def give_back(conn: sqlite3.Connection, pages: int = VACUUM_PAGES) -> int:
    """Return up to ``pages`` free pages to the filesystem (``PRAGMA incremental_vacuum``, then a
    WAL checkpoint; a database made before ``auto_vacuum = INCREMENTAL`` reuses them instead).
    Returns the bytes the database shrank by. Outside a transaction only (0 inside one)."""
    if conn.in_transaction:
        return 0
    before = usage(conn).file_bytes
    # executescript steps the pragma to its end; execute() would free a single page
    conn.executescript(
        f"PRAGMA incremental_vacuum({int(pages):d}); PRAGMA wal_checkpoint(TRUNCATE);"
    )
    return before - usage(conn).file_bytes


INCREMENTAL: Final = 2  # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental


def make_incremental(conn: sqlite3.Connection, path: Path) -> bool:
    """Convert a database made before schema 5 to ``auto_vacuum = INCREMENTAL`` (so that
    :func:`give_back` can return freed pages): once, with a full ``VACUUM``, which rewrites the
    file through a temporary copy and the WAL. Skipped, with a warning, while the disk lacks room
    for that (twice the file, the copy in the temporary directory); tried again at the next
    start. Returns True when it converted. Outside a transaction, before other work."""
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    if int(mode) == INCREMENTAL:
        return False
    size = usage(conn).file_bytes
    room = {
        "the data directory": (shutil.disk_usage(path.parent).free, 2 * size),
        "the temporary directory": (shutil.disk_usage(tempfile.gettempdir()).free, size),
    }
    for where, (free, needed) in room.items():
        if free < needed:
            log.warning(
                "%s: not converted for incremental vacuum (freed space stays in the file, "
                "reused): %s has %d bytes free, %d needed; free some and restart",
                path,
                where,
                free,
                needed,
            )
            return False
    log.info("%s: converting for incremental vacuum, once (%d bytes)", path, size)
    started = time.monotonic()
    conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL:d}")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info(
        "%s: converted in %.1f s, now %d bytes",
        path,
        time.monotonic() - started,
        usage(conn).file_bytes,
    )
    return True
