"""The store's schema as ordered migrations, versioned by ``PRAGMA user_version``.

Migration N (1-based position in :data:`MIGRATIONS`) takes a database from version N-1 to N. Each
runs in its own ``BEGIN IMMEDIATE`` transaction together with the ``user_version`` update, so a
failed migration leaves the previous version intact, and two processes opening the same file at
once migrate it once. A database newer than the code is refused (:class:`SchemaVersionError`):
an older gateway must not write into a layout it does not know.

Times are TEXT in ISO 8601, UTC, microseconds (``2024-05-01T12:00:00.000000+00:00``) so that
text order is time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from gateway.fhir import jsonio
from gateway.store.errors import SchemaVersionError

Migration = Callable[[sqlite3.Connection], None]


def _run(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    # executescript() would COMMIT first; statements one by one stay in our transaction.
    for statement in statements:
        conn.execute(statement)


_V1_DEVICES_OBSERVATIONS = (
    """CREATE TABLE devices (
        address TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT,
        system_id TEXT,
        info TEXT NOT NULL DEFAULT '{}',
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX devices_system_id ON devices(system_id)",
    """CREATE TABLE observations (
        row INTEGER PRIMARY KEY,
        identifier TEXT NOT NULL UNIQUE,
        code TEXT NOT NULL,
        device_address TEXT NOT NULL,
        effective TEXT,
        received TEXT NOT NULL,
        resource TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX observations_code ON observations(code)",
    """CREATE INDEX observations_device_code_effective
        ON observations(device_address, code, effective)""",
)


def _v1_devices_observations(conn: sqlite3.Connection) -> None:
    """Sensors and the Observations made from their measurements (schema version 1)."""
    _run(conn, _V1_DEVICES_OBSERVATIONS)


# AUTOINCREMENT: a pruned item's seq is never reused, so a pump's "after seq" cursor cannot skip
# a new item. outbox_usage keeps per-state counts and bytes up to date through triggers, so the
# quota check and the status summary are O(1) however long the outbox grows.
_V2_OUTBOX = (
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        uplink TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('observations', 'devices', 'drafts')),
        payload TEXT NOT NULL,
        size INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        UNIQUE (uplink, id)
    ) STRICT""",
    "CREATE INDEX outbox_uplink_state_seq ON outbox(uplink, state, seq)",
    "CREATE INDEX outbox_state_seq ON outbox(state, seq)",
    """CREATE TABLE outbox_usage (
        state TEXT PRIMARY KEY,
        items INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    ) STRICT""",
    """INSERT INTO outbox_usage (state, items, bytes)
        VALUES ('pending', 0, 0), ('delivered', 0, 0), ('dead', 0, 0)""",
    """CREATE TRIGGER outbox_usage_insert AFTER INSERT ON outbox BEGIN
        UPDATE outbox_usage SET items = items + 1, bytes = bytes + NEW.size
            WHERE state = NEW.state;
    END""",
    """CREATE TRIGGER outbox_usage_delete AFTER DELETE ON outbox BEGIN
        UPDATE outbox_usage SET items = items - 1, bytes = bytes - OLD.size
            WHERE state = OLD.state;
    END""",
    """CREATE TRIGGER outbox_usage_update AFTER UPDATE OF state ON outbox
        WHEN OLD.state <> NEW.state BEGIN
        UPDATE outbox_usage SET items = items - 1, bytes = bytes - OLD.size
            WHERE state = OLD.state;
        UPDATE outbox_usage SET items = items + 1, bytes = bytes + NEW.size
            WHERE state = NEW.state;
    END""",
)


def _v2_outbox(conn: sqlite3.Connection) -> None:
    """The durable outbox of signed Bundles per uplink (schema version 2)."""
    _run(conn, _V2_OUTBOX)


# Readings taken while no patient was assigned are stored but not forwarded: their Bundle waits,
# unsigned, in `held` until a patient is assigned and claims them (docs/contracts.md, "Patient").
# observations.patient is the patient reference assigned when the reading was received (NULL:
# none), so a later change of patient never re-labels it.
_V3_PATIENT_HELD = (
    "ALTER TABLE observations ADD COLUMN patient TEXT",
    """CREATE TABLE held (
        row INTEGER PRIMARY KEY,
        reason TEXT NOT NULL CHECK (reason IN ('no patient')),
        kind TEXT NOT NULL CHECK (kind IN ('observations')),
        bundle TEXT NOT NULL,
        keys TEXT NOT NULL,
        readings INTEGER NOT NULL,
        created TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX held_created ON held(created)",
)


def _v3_patient_held(conn: sqlite3.Connection) -> None:
    """The patient of each reading and the Bundles held back for want of one (version 3)."""
    _run(conn, _V3_PATIENT_HELD)


# The outbox gains the kind 'audit' (a CHECK cannot be altered: the table is rebuilt with its
# rows, indexes and usage triggers). Draft reports keep every version (drafts, draft_versions);
# clinicians' decisions are remembered by id so that a replayed one does nothing (decisions).
# The audit trail is append-only and hash-chained: hash = SHA-256(prev || canonical entry); its
# AUTOINCREMENT seq leaves a trace in sqlite_sequence, so a deleted last entry is found too.
_V4_REVIEW_AUDIT = (
    "ALTER TABLE outbox RENAME TO outbox_v3",
    *(_V2_OUTBOX[0].replace("'drafts')", "'drafts', 'audit')"),),
    """INSERT INTO outbox (seq, id, uplink, kind, payload, size, state, attempts, last_error,
                           created, updated)
        SELECT seq, id, uplink, kind, payload, size, state, attempts, last_error, created, updated
        FROM outbox_v3""",
    # keep the sequence: a pruned item's seq is never reused, even across this rebuild
    "DELETE FROM sqlite_sequence WHERE name = 'outbox'",
    """INSERT INTO sqlite_sequence (name, seq)
        SELECT 'outbox', seq FROM sqlite_sequence WHERE name = 'outbox_v3'""",
    "DROP TABLE outbox_v3",
    *_V2_OUTBOX[1:3],
    *_V2_OUTBOX[5:],
    """CREATE TABLE drafts (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        patient TEXT,
        version INTEGER NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX drafts_created ON drafts(created)",
    "CREATE INDEX drafts_status_created ON drafts(status, created)",
    """CREATE TABLE draft_versions (
        draft TEXT NOT NULL REFERENCES drafts(id),
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        action TEXT NOT NULL
            CHECK (action IN ('drafted', 'edited', 'approved', 'rejected')),
        author TEXT NOT NULL,
        at TEXT NOT NULL,
        bundle TEXT NOT NULL,
        signed TEXT,
        PRIMARY KEY (draft, version)
    ) STRICT""",
    """CREATE TABLE decisions (
        id TEXT PRIMARY KEY,
        draft TEXT NOT NULL REFERENCES drafts(id),
        version INTEGER NOT NULL,
        action TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        via TEXT NOT NULL,
        at TEXT NOT NULL
    ) STRICT""",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        entry TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL,
        forwarded INTEGER NOT NULL DEFAULT 0
    ) STRICT""",
    "CREATE INDEX audit_unforwarded ON audit(seq) WHERE forwarded = 0",
)


def _v4_review_audit(conn: sqlite3.Connection) -> None:
    """Draft versions, review decisions and the audit trail (schema version 4)."""
    _run(conn, _V4_REVIEW_AUDIT)


BATCH: Final = 500
_V5_COMPACT = (
    """CREATE TABLE dictionaries (
        id INTEGER PRIMARY KEY,
        data BLOB NOT NULL,
        created TEXT NOT NULL
    ) STRICT""",
    "ALTER TABLE observations ADD COLUMN samples BLOB",
    "ALTER TABLE observations ADD COLUMN body BLOB",
    "ALTER TABLE observations ADD COLUMN dictionary INTEGER REFERENCES dictionaries(id)",
    # the id of the Bundle that carried it (None: not sent, held, or stored before version 5)
    "ALTER TABLE observations ADD COLUMN bundle TEXT",
    "CREATE INDEX observations_received ON observations(received)",
    "CREATE INDEX outbox_id ON outbox(id)",
)


def _v5_compact_samples(conn: sqlite3.Connection) -> None:
    """Observations stored compactly (version 5; gateway/store/compact.py): waveform samples
    apart as compressed binary (existing rows packed here, in batches), the JSON compressed with
    a dictionary trained on the store's own Observations (new rows, once there is one); and the
    Bundle that carried each one, for retention (gateway/store/retention.py)."""
    from gateway.store.compact import pack  # zstandard only for this step

    _run(conn, _V5_COMPACT)
    after = 0
    while True:
        rows = conn.execute(
            """SELECT row, resource FROM observations
               WHERE row > ? AND resource LIKE '%"valueSampledData"%' ORDER BY row LIMIT ?""",
            (after, BATCH),
        ).fetchall()
        if not rows:
            return
        for row, text in rows:
            rest, samples = pack(jsonio.loads(text))
            if samples is not None:
                conn.execute(
                    "UPDATE observations SET resource = ?, samples = ? WHERE row = ?",
                    (rest, samples, row),
                )
        after = rows[-1][0]


_V6_COMPACT_OUTBOX = (
    # what a dictionary was trained on: Observations (version 5) or the outbox's signed Bundles
    """ALTER TABLE dictionaries ADD COLUMN purpose TEXT NOT NULL DEFAULT 'observations'
        CHECK (purpose IN ('observations', 'bundles'))""",
    # a payload is either the text, or '' with the compressed text in body and its dictionary
    "ALTER TABLE outbox ADD COLUMN body BLOB",
    "ALTER TABLE outbox ADD COLUMN dictionary INTEGER REFERENCES dictionaries(id)",
    # retention finds a Bundle by (uplink, id), the unique index; this one only cost every insert
    "DROP INDEX outbox_id",
    # delivered items by delivery time, for retention (entries only once an item is delivered)
    "CREATE INDEX outbox_delivered ON outbox(updated) WHERE state = 'delivered'",
)


def _v6_compact_outbox(conn: sqlite3.Connection) -> None:
    """Signed Bundles in the outbox compressed with a dictionary trained on them (version 6;
    gateway/store/compact.py). Items enqueued before stay as they are, readable as ever."""
    _run(conn, _V6_COMPACT_OUTBOX)


MIGRATIONS: tuple[Migration, ...] = (
    _v1_devices_observations,
    _v2_outbox,
    _v3_patient_held,
    _v4_review_audit,
    _v5_compact_samples,
    _v6_compact_outbox,
)
"""Append only: never edit or reorder a released migration."""


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the database at ``path`` (open on ``conn``, autocommit mode) up to date.

    Returns the version reached. Raises :class:`SchemaVersionError` for a newer database.
    """
    latest = len(migrations)
    found = user_version(conn)
    if found > latest:
        raise SchemaVersionError(path, found, latest)
    for version in range(found + 1, latest + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            _step(conn, path, version, migrations)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return user_version(conn)


def _step(
    conn: sqlite3.Connection, path: Path, version: int, migrations: Sequence[Migration]
) -> None:
    """Inside the write lock: apply migration ``version`` unless another process already did."""
    current = user_version(conn)
    if current > len(migrations):
        raise SchemaVersionError(path, current, len(migrations))
    if current < version:
        migrations[version - 1](conn)
        conn.execute(f"PRAGMA user_version = {version:d}")
