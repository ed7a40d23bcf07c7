"""The blocking store: one SQLite connection, used from one thread.

SQLite in WAL mode. A commit that touches the outbox runs with ``synchronous=FULL`` (the WAL is
synced before COMMIT returns: a Bundle acknowledged as enqueued survives power loss); other commits
use ``NORMAL`` (consistent after power loss, the last ones may be lost). Observations and the outbox
item carrying them are written in one transaction, so there is never an Observation without its
Bundle, nor a Bundle for an Observation that was rolled back.

Use :class:`gateway.store.aio.AsyncStore` from asyncio code; it runs this class in its own threads.

Readings taken while no patient is assigned (``hold=True``) are stored, but their Bundle is kept
unsigned in the ``held`` table instead of the outbox; :meth:`Store.release_held` later fills in the
patient as ``subject``, signs and enqueues them (docs/contracts.md, "Patient").

Disk quota: ``quota_bytes`` bounds the outbox payload bytes. When an enqueue pushes the total over
it, delivered items are pruned oldest first down to :data:`PRUNE_TARGET` of the quota; undelivered
(pending or dead) items are never dropped: when they alone exceed the quota the stats raise
``quota_alarm``.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.fhir import jsonio
from gateway.fhir.bundle import bundle_with_subject, with_subject
from gateway.store import compact
from gateway.store.errors import StoreClosedError, StoreFullError
from gateway.store.models import (
    DeviceRecord,
    ObservationRecord,
    OutboxItem,
    OutboxState,
    OutboxStats,
    Released,
    StoredObservation,
    TopicKind,
)
from gateway.store.schema import migrate

STORE_FILENAME: Final = "gateway.sqlite3"
DEFAULT_QUOTA_BYTES: Final = 512 * 1024 * 1024
PRUNE_TARGET: Final = 0.9  # prune delivered items down to 90 % of the quota (hysteresis)
BUSY_TIMEOUT_MS: Final = 10_000  # another process (a CLI command) holding the write lock
SYSTEM_ID_KEY: Final = "system_id"  # the DIS info member that fills devices.system_id


class BundleSigner(Protocol):
    """What the store needs to sign a Bundle: :class:`gateway.forward.signing.Signer` is one.

    ``sign_bundle`` returns a copy of ``bundle`` with its ``signature`` made over the rest of it.
    """

    def sign_bundle(self, bundle: Mapping[str, Any]) -> dict[str, Any]: ...


BundleFactory = Callable[[list[dict[str, Any]]], Mapping[str, Any] | None]
"""Builds the Bundle of the new Observations; None: they are kept here and sent nowhere."""
"""Builds the Bundle (a dict) for the Observations given; must be pure (runs in the store's
thread, inside the transaction)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def to_text(moment: datetime) -> str:
    """Stored form of a time: UTC, microseconds, so that text order is time order."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} is not timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def store_path(data_dir: Path) -> Path:
    """Where the store lives in a data directory."""
    return data_dir / STORE_FILENAME


@dataclass(slots=True)
class _Group:
    savepoints: int = 0


_OUTBOX_COLUMNS = (
    "seq, id, uplink, kind, payload, body, dictionary, state, attempts, last_error, created, "
    "updated"
)


def connect(path: Path) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with the store's settings (schema not checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect in a new database only
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class Store:
    """Blocking access to the store; see the module text. Not thread-safe: one thread per store.

    ``uplinks`` names the uplinks every Bundle is enqueued for (one item each); ``signer`` signs
    them (required as soon as there is an uplink).
    """

    def __init__(
        self,
        path: Path,
        *,
        signer: BundleSigner | None = None,
        uplinks: Sequence[str] = (),
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if uplinks and signer is None:
            raise ValueError("a signer is needed to enqueue Bundles for uplinks")
        if len(set(uplinks)) != len(uplinks):
            raise ValueError(f"uplink names must be unique, got {list(uplinks)}")
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be positive, got {quota_bytes}")
        self.path = path
        self.uplinks = tuple(uplinks)
        self.quota_bytes = quota_bytes
        self._signer = signer
        self._clock = clock
        self._group: _Group | None = None
        conn = connect(path)
        try:
            migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._codec = compact.ResourceCodec()
        self._bundles = compact.bundle_codec()
        self.refusing: str | None = None  # why new readings are refused (the store is full)

    # -- connection and transactions -------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosedError(f"{self.path}: store is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> str:
        return to_text(self._clock())

    @contextmanager
    def _write(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """One write: its own transaction, or a savepoint inside a :meth:`group`."""
        conn = self.conn
        if self._group is not None:
            self._group.savepoints += 1
            name = f"op{self._group.savepoints}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
            return
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """A write of the tables other modules keep (:mod:`gateway.store.reviews`,
        :mod:`gateway.store.audit`): its own transaction, or a savepoint inside a group."""
        return self._write(durable=durable)

    def enqueue_in(
        self,
        conn: sqlite3.Connection,
        kind: TopicKind,
        bundle: Mapping[str, Any],
        *,
        signed: bool = False,
    ) -> str | None:
        """Enqueue ``bundle`` inside the caller's :meth:`transaction` (which must be durable),
        signing it unless ``signed`` (it carries its signature already); None when no uplink is
        configured."""
        if not self.uplinks:
            return None
        return self._enqueue(conn, kind, bundle, self._now(), signed=signed)

    @contextmanager
    def group(self, *, durable: bool) -> Iterator[None]:
        """Run several writes in one commit (group commit); a failing write rolls back alone.

        ``durable`` must be True when any write in the group touches the outbox.
        """
        if self._group is not None:
            raise RuntimeError("groups do not nest")
        conn = self.conn
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute("BEGIN IMMEDIATE")
        self._group = _Group()
        try:
            yield
        except BaseException:
            self._group = None
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._group = None
        conn.execute("COMMIT")

    # -- devices ------------------------------------------------------------------------------

    def upsert_device(
        self, address: str, kind: str, name: str | None, info: Mapping[str, Any]
    ) -> None:
        """Insert or update a sensor; ``info`` (DIS values) replaces the stored info when given.

        ``info[SYSTEM_ID_KEY]`` (the EUI-64 System ID, if any) fills the indexed system_id.
        """
        if not address:
            raise ValueError("a device needs its address")
        now = self._now()
        system_id = info.get(SYSTEM_ID_KEY)
        with self._write(durable=False) as conn:
            conn.execute(
                """INSERT INTO devices (address, kind, name, system_id, info, first_seen,
                       last_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (address) DO UPDATE SET
                       kind = excluded.kind,
                       name = coalesce(excluded.name, devices.name),
                       system_id = coalesce(excluded.system_id, devices.system_id),
                       info = CASE WHEN excluded.info = '{}' THEN devices.info
                                   ELSE excluded.info END,
                       last_seen = excluded.last_seen""",
                (
                    address,
                    kind,
                    name,
                    None if system_id is None else str(system_id),
                    jsonio.dumps(dict(info)),
                    now,
                    now,
                ),
            )

    def devices(self) -> list[DeviceRecord]:
        rows = self.conn.execute("SELECT * FROM devices ORDER BY address").fetchall()
        return [
            DeviceRecord(
                address=row["address"],
                kind=row["kind"],
                name=row["name"],
                system_id=row["system_id"],
                info=jsonio.loads(row["info"]),
                first_seen=from_text(row["first_seen"]),
                last_seen=from_text(row["last_seen"]),
            )
            for row in rows
        ]

    # -- observations --------------------------------------------------------------------------

    def add_observations(
        self,
        device_address: str,
        observations: Sequence[ObservationRecord],
        bundle_factory: BundleFactory,
        *,
        patient: str | None = None,
        hold: bool = False,
    ) -> list[str]:
        """Store the Observations not stored yet and enqueue their signed Bundle, atomically.

        Duplicates (by PHD identifier, also within ``observations``) are skipped. When at least
        one is new, ``bundle_factory(new resource dicts)`` builds one Bundle, which is signed and
        enqueued for every uplink in the same transaction (None: nothing to send). Returns the
        identifiers of the new Observations, in input order.

        ``patient`` (the reference assigned when the readings were received) is kept with each
        Observation. ``hold``: no patient is assigned, so the Bundle is kept unsigned in the held
        table (reason "no patient") instead of the outbox, until :meth:`release_held`.
        """
        if self.refusing is not None:
            raise StoreFullError(self.refusing)
        for record in observations:
            if record.device_address != device_address:
                raise ValueError(
                    f"observation {record.identifier!r} is from {record.device_address}, "
                    f"not {device_address}"
                )
        received = self._now()
        with self._write(durable=bool(self.uplinks)) as conn:
            self._codec.prepare(conn, received)
            new = self._not_stored(conn, observations)
            bundle = (
                bundle_factory([dict(record.resource) for record in new])
                if new and self.uplinks
                else None
            )
            bundle_id: str | None = None
            if bundle is not None and hold:
                conn.execute(
                    """INSERT INTO held (reason, kind, bundle, keys, readings, created)
                       VALUES ('no patient', ?, ?, ?, ?, ?)""",
                    (
                        TopicKind.OBSERVATIONS.value,
                        jsonio.dumps(dict(bundle)),
                        json.dumps([record.identifier for record in new]),
                        len(new),
                        received,
                    ),
                )
            elif bundle is not None:
                bundle_id = self._enqueue(conn, TopicKind.OBSERVATIONS, bundle, received)
            conn.executemany(
                """INSERT INTO observations (identifier, code, device_address, effective,
                       received, resource, body, dictionary, samples, patient, bundle)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        record.identifier,
                        record.code,
                        record.device_address,
                        None if record.effective is None else to_text(record.effective),
                        received,
                        *self._codec.pack(record.resource),
                        patient,
                        bundle_id,
                    )
                    for record in new
                ],
            )
        return [record.identifier for record in new]

    @staticmethod
    def _not_stored(
        conn: sqlite3.Connection, observations: Sequence[ObservationRecord]
    ) -> list[ObservationRecord]:
        """``observations`` not stored yet, each identifier once, in input order."""
        stored = {
            identifier
            for (identifier,) in conn.execute(
                """SELECT identifier FROM observations
                   WHERE identifier IN (SELECT value FROM json_each(?))""",
                (json.dumps([record.identifier for record in observations]),),
            )
        }
        new: list[ObservationRecord] = []
        for record in observations:
            if record.identifier not in stored:
                stored.add(record.identifier)
                new.append(record)
        return new

    def release_held(self, reference: str, *, after: datetime | None, before: datetime) -> Released:
        """Give the held readings received in ``(after, before]`` to the patient ``reference``.

        In one transaction: each held Bundle gets ``subject`` on its Observations and a new
        timestamp, is signed and enqueued for every uplink; the stored Observations get the same
        subject and the patient; the held rows go. Readings held outside the window stay held.
        Idempotent: a second call finds nothing left in the window.
        """
        now = self._now()
        bundles = readings = 0
        with self._write(durable=True) as conn:
            rows = conn.execute(
                """SELECT row, kind, bundle, keys FROM held
                   WHERE (?1 IS NULL OR created > ?1) AND created <= ?2 ORDER BY row""",
                (None if after is None else to_text(after), to_text(before)),
            ).fetchall()
            for row in rows:
                bundle = bundle_with_subject(
                    jsonio.loads(row["bundle"]), reference, timestamp=self._clock()
                )
                bundle_id = (
                    self._enqueue(conn, TopicKind(row["kind"]), bundle, now)
                    if self.uplinks
                    else None
                )
                for key in json.loads(row["keys"]):
                    stored = conn.execute(
                        "SELECT * FROM observations WHERE identifier = ? AND patient IS NULL",
                        (key,),
                    ).fetchone()
                    if stored is None:
                        continue
                    resource = with_subject(self._codec.unpack(conn, stored), reference)
                    conn.execute(
                        """UPDATE observations SET resource = ?, body = ?, dictionary = ?,
                           samples = ?, patient = ?, bundle = ? WHERE identifier = ?""",
                        (*self._codec.pack(resource), reference, bundle_id, key),
                    )
                    readings += 1
                conn.execute("DELETE FROM held WHERE row = ?", (row["row"],))
                bundles += 1
        return Released(bundles, readings)

    def _observation(self, row: sqlite3.Row) -> StoredObservation:
        return StoredObservation(
            identifier=row["identifier"],
            code=row["code"],
            device_address=row["device_address"],
            effective=None if row["effective"] is None else from_text(row["effective"]),
            received=from_text(row["received"]),
            resource=self._codec.unpack(self.conn, row),
        )

    def latest_observations(self, limit: int) -> list[StoredObservation]:
        """The ``limit`` most recently stored Observations, newest first."""
        rows = self.conn.execute(
            "SELECT * FROM observations ORDER BY row DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._observation(row) for row in rows]

    def observation_counts(self) -> dict[str, int]:
        """Stored Observations per code."""
        rows = self.conn.execute(
            "SELECT code, count(*) AS n FROM observations GROUP BY code ORDER BY code"
        ).fetchall()
        return {row["code"]: row["n"] for row in rows}

    def last_record_time(self, device_address: str, code: str) -> datetime | None:
        """The newest effective time stored for this device and code (RACP "newer than")."""
        row = self.conn.execute(
            "SELECT max(effective) AS last FROM observations WHERE device_address = ? AND code = ?",
            (device_address, code),
        ).fetchone()
        return None if row["last"] is None else from_text(row["last"])

    # -- outbox --------------------------------------------------------------------------------

    def enqueue_bundle(self, kind: TopicKind, bundle: Mapping[str, Any]) -> str | None:
        """Sign ``bundle`` and enqueue it for every uplink (e.g. Device Bundles, drafts).

        Returns the Bundle id, or None when no uplink is configured.
        """
        if not self.uplinks:
            return None
        with self._write(durable=True) as conn:
            return self._enqueue(conn, kind, bundle, self._now())

    def _enqueue(
        self,
        conn: sqlite3.Connection,
        kind: TopicKind,
        bundle: Mapping[str, Any],
        now: str,
        *,
        signed: bool = False,
    ) -> str:
        if signed:
            if not bundle.get("id") or "signature" not in bundle:
                raise ValueError("a Bundle enqueued as signed needs its id and signature")
            return self._insert_outbox(conn, kind, bundle, now)
        assert self._signer is not None  # checked in __init__ whenever there are uplinks
        if not bundle.get("id"):
            bundle = {"id": str(uuid.uuid4()), **bundle}
        return self._insert_outbox(conn, kind, self._signer.sign_bundle(bundle), now)

    def _insert_outbox(
        self, conn: sqlite3.Connection, kind: TopicKind, signed: Mapping[str, Any], now: str
    ) -> str:
        bundle_id = str(signed["id"])
        payload = jsonio.dumps(signed)
        size = len(payload.encode("utf-8"))  # the bytes to send, whatever is stored
        self._bundles.prepare(conn, now)
        stored = self._bundles.compress(payload)
        conn.executemany(
            """INSERT INTO outbox (id, uplink, kind, payload, body, dictionary, size, created,
                   updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (uplink, id) DO NOTHING""",
            [(bundle_id, uplink, kind.value, *stored, size, now, now) for uplink in self.uplinks],
        )
        self._enforce_quota(conn)
        return bundle_id

    def _outbox_item(self, row: sqlite3.Row) -> OutboxItem:
        return OutboxItem(
            seq=row["seq"],
            id=row["id"],
            uplink=row["uplink"],
            kind=TopicKind(row["kind"]),
            payload=self._bundles.decompress(
                self.conn, row["payload"], row["body"], row["dictionary"]
            ),
            state=OutboxState(row["state"]),
            attempts=row["attempts"],
            last_error=row["last_error"],
            created=from_text(row["created"]),
            updated=from_text(row["updated"]),
        )

    def _usage(self, conn: sqlite3.Connection) -> dict[OutboxState, tuple[int, int]]:
        rows = conn.execute("SELECT state, items, bytes FROM outbox_usage").fetchall()
        return {OutboxState(row["state"]): (row["items"], row["bytes"]) for row in rows}

    def _enforce_quota(self, conn: sqlite3.Connection) -> None:
        (total,) = conn.execute("SELECT sum(bytes) FROM outbox_usage").fetchone()
        if total <= self.quota_bytes:
            return
        excess = total - int(self.quota_bytes * PRUNE_TARGET)
        conn.execute(
            """DELETE FROM outbox WHERE seq IN (
                   SELECT seq FROM (
                       SELECT seq, size, sum(size) OVER (ORDER BY seq) AS running
                       FROM outbox WHERE state = 'delivered')
                   WHERE running - size < ?)""",
            (excess,),
        )

    def pending_items(self, uplink: str, *, after_seq: int = 0, limit: int) -> list[OutboxItem]:
        """Pending items of ``uplink`` with ``seq > after_seq``, in order."""
        rows = self.conn.execute(
            f"""SELECT {_OUTBOX_COLUMNS} FROM outbox
                WHERE uplink = ? AND state = 'pending' AND seq > ?
                ORDER BY seq LIMIT ?""",  # noqa: S608 - a constant column list, values bound
            (uplink, after_seq, limit),
        ).fetchall()
        return [self._outbox_item(row) for row in rows]

    def outbox_items(
        self, *, uplink: str | None = None, state: OutboxState | None = None, limit: int = 100
    ) -> list[OutboxItem]:
        """Items for inspection (status page, CLI), oldest first."""
        rows = self.conn.execute(
            f"""SELECT {_OUTBOX_COLUMNS} FROM outbox
                WHERE (?1 IS NULL OR uplink = ?1) AND (?2 IS NULL OR state = ?2)
                ORDER BY seq LIMIT ?3""",  # noqa: S608 - a constant column list, values bound
            (uplink, None if state is None else state.value, limit),
        ).fetchall()
        return [self._outbox_item(row) for row in rows]

    def mark_delivered(self, seqs: Iterable[int]) -> int:
        """Acknowledged items → delivered; returns how many changed."""
        numbers = json.dumps(list(seqs))
        with self._write(durable=True) as conn:
            cursor = conn.execute(
                """UPDATE outbox SET state = 'delivered', updated = ?
                   WHERE seq IN (SELECT value FROM json_each(?)) AND state = 'pending'""",
                (self._now(), numbers),
            )
            return cursor.rowcount

    def record_failures(self, failures: Mapping[int, str]) -> None:
        """A failed attempt per item: attempts + 1 and the error text; the items stay pending."""
        now = self._now()
        with self._write(durable=True) as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, updated = ? "
                "WHERE seq = ?",
                [(error, now, seq) for seq, error in failures.items()],
            )

    def mark_dead(self, seq: int, reason: str) -> None:
        """The far end refused the item for good: dead letter with its reason."""
        with self._write(durable=True) as conn:
            conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?, "
                "updated = ? WHERE seq = ? AND state = 'pending'",
                (reason, self._now(), seq),
            )

    def retry_dead(self, uplink: str | None = None) -> int:
        """Dead items (of one uplink, or all) → pending again; returns how many."""
        with self._write(durable=True) as conn:
            cursor = conn.execute(
                "UPDATE outbox SET state = 'pending', updated = ? "
                "WHERE state = 'dead' AND (?2 IS NULL OR uplink = ?2)",
                (self._now(), uplink),
            )
            return cursor.rowcount

    def outbox_stats(self) -> OutboxStats:
        usage = self._usage(self.conn)
        pending, pending_bytes = usage[OutboxState.PENDING]
        delivered, delivered_bytes = usage[OutboxState.DELIVERED]
        dead, dead_bytes = usage[OutboxState.DEAD]
        held = self.conn.execute(
            "SELECT count(*) AS bundles, coalesce(sum(readings), 0) AS readings FROM held"
        ).fetchone()
        return OutboxStats(
            pending=pending,
            delivered=delivered,
            dead=dead,
            quota_alarm=pending_bytes + dead_bytes > self.quota_bytes,
            pending_bytes=pending_bytes,
            delivered_bytes=delivered_bytes,
            dead_bytes=dead_bytes,
            quota_bytes=self.quota_bytes,
            held=held["bundles"],
            held_readings=held["readings"],
        )
