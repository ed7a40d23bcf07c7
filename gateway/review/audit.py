"""The audit trail as the gateway uses it: record an entry, durably, in the store's hash chain;
forward the entries as FHIR AuditEvents through the outbox (docs/architecture.md, "Audit trail").

- :class:`AuditTrail` records from the running gateway (the store's writer thread, a durable
  commit: nothing is acknowledged before its entry is on disk); :func:`record_offline` from a
  command working on the data directory while the gateway may or may not run (SQLite WAL).
- :class:`AuditForwarder` hands the entries not yet forwarded to the outbox, in batches: one
  signed transaction Bundle of AuditEvents per batch on ``{prefix}/{gateway_id}/audit``, marked
  forwarded in the same transaction (an entry is enqueued exactly once; a crash in between
  leaves it unforwarded and it goes with the next batch). With no uplink nothing is forwarded
  and the entries wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gateway.fhir.audit import audit_entry, audit_event
from gateway.fhir.bundle import transaction_bundle
from gateway.fhir.resource import MappedResource
from gateway.store import audit as audit_table
from gateway.store.errors import StoreFullError
from gateway.store.models import TopicKind
from gateway.store.store import Store, store_path

if TYPE_CHECKING:
    from gateway.store.aio import AsyncStore

log = logging.getLogger(__name__)

BATCH: Final = 50
IDLE_S: Final = 30.0  # forward at least this often (entries written by commands)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditTrail:
    """Records audit entries (keyword arguments of :func:`gateway.fhir.audit.audit_entry`)."""

    def __init__(self, store: AsyncStore, *, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self._store = store
        self._clock = clock
        self.written = asyncio.Event()  # set after every entry: wakes the forwarder

    def entry(self, action: str, **fields: Any) -> dict[str, Any]:
        return audit_entry(at=self._clock(), action=action, **fields)

    async def record(self, action: str, **fields: Any) -> int:
        """Append one entry durably; returns its sequence number."""
        entry = self.entry(action, **fields)

        def write(store: Store) -> int:
            with store.transaction() as conn:
                return audit_table.append(conn, entry)

        seq = await self._store.write(write)
        self.written.set()
        return seq


def record_offline(data_dir: Path, action: str, **fields: Any) -> int:
    """Append one entry from a command (its own connection; the gateway may be running)."""
    entry = audit_entry(at=_utc_now(), action=action, **fields)
    with Store(store_path(data_dir)) as store, store.transaction() as conn:
        return audit_table.append(conn, entry)


class AuditForwarder:
    """Enqueues unforwarded entries as AuditEvent Bundles (see the module text)."""

    def __init__(self, store: AsyncStore, trail: AuditTrail, gateway_id: str) -> None:
        self._store = store
        self._trail = trail
        self._gateway_id = gateway_id
        self.forwarded = 0

    def _forward(self, store: Store) -> int:
        if not store.uplinks:
            return 0
        with store.transaction() as conn:
            batch = audit_table.unforwarded(conn, BATCH)
            if not batch:
                return 0
            events = [
                MappedResource(f"urn:uuid:{uuid.uuid4()}", audit_event(entry, self._gateway_id))
                for _, entry in batch
            ]
            first, last = batch[0][0], batch[-1][0]
            bundle = transaction_bundle(
                events,
                bundle_id=str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"audit|{self._gateway_id}|{first}-{last}")
                ),
                timestamp=_utc_now(),
            )
            store.enqueue_in(conn, TopicKind.AUDIT, bundle)
            audit_table.mark_forwarded(conn, [seq for seq, _ in batch])
            return len(batch)

    async def forward_once(self) -> int:
        """Forward one batch; returns how many entries went."""
        count = await self._store.write(self._forward, notify=True)
        self.forwarded += count
        return count

    async def run(self) -> None:
        while True:
            self._trail.written.clear()
            try:
                while await self.forward_once() == BATCH:
                    pass
            except StoreFullError as exc:  # the entries stay unforwarded: the next round
                log.warning("audit entries not forwarded yet: %s", exc)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
            # arrives as the event is set (an entry written while the gateway stops).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_S):
                    await self._trail.written.wait()
