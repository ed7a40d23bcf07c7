"""The store for asyncio code: all SQLite work in the store's own threads, never on the loop.

One writer thread owns the writing connection and runs every write; writes queued while a commit
is in progress are grouped into the next commit (group commit, each write in its own savepoint so a
failing one rolls back alone); every awaiting caller resumes only after the commit that holds its
write. One reader thread owns a second connection for queries (WAL: readers never wait for the
writer). A cancelled caller does not cancel a write already queued.

Pumps learn about new outbox items through :meth:`AsyncStore.outbox_event`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import shutil
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from gateway.store import retention
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
from gateway.store.store import (
    DEFAULT_QUOTA_BYTES,
    BundleFactory,
    BundleSigner,
    Store,
    _utc_now,
)

T = TypeVar("T")

MAX_GROUP: Final = 256  # writes per group commit


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[Store], T]
    future: asyncio.Future[T]
    durable: bool


_Outcome = tuple["_Job[Any]", object, BaseException | None]


def _resolve(outcomes: list[_Outcome]) -> None:
    for job, value, error in outcomes:
        if job.future.done():  # the caller was cancelled; the work is done regardless
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)


DISK_FULL: Final = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


def disk_full(store: Store, exc: Exception) -> Exception:
    """SQLite's "database or disk is full" (or a failed write) as :class:`StoreFullError` with
    what to do; any other error as it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    if (
        not isinstance(exc, sqlite3.OperationalError)
        or code is None
        or code & 0xFF not in DISK_FULL
    ):
        return exc
    free = shutil.disk_usage(store.path.parent).free
    error = StoreFullError(
        f"the disk holding {store.path} is full ({free} bytes free): free space there; the "
        "gateway goes on as soon as it can write again"
    )
    error.__cause__ = exc
    return error


class _StoreThread(threading.Thread):
    """A thread owning one :class:`Store`; runs submitted jobs in order."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], Store],
        loop: asyncio.AbstractEventLoop,
        *,
        group_writes: bool,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._opener = opener
        self._loop = loop
        self._group_writes = group_writes
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self.opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed = False
        self.group_commits = 0  # commits that carried more than one write

    def submit(self, fn: Callable[[Store], T], *, durable: bool = False) -> asyncio.Future[T]:
        if self._closed:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Job(fn, future, durable))
        return future

    def stop(self) -> None:
        self._closed = True
        self._queue.put(None)

    def _deliver(self, outcomes: list[_Outcome]) -> None:
        """Hand results to the loop, all of a commit in one wake-up."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_resolve, outcomes)

    def _run_one(self, store: Store, job: _Job[Any]) -> None:
        try:
            value = job.fn(store)
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            self._deliver([(job, None, disk_full(store, exc))])
        else:
            self._deliver([(job, value, None)])

    def _run_group(self, store: Store, jobs: list[_Job[Any]]) -> None:
        outcomes: list[_Outcome] = []
        try:
            with store.group(durable=any(job.durable for job in jobs)):
                for job in jobs:
                    try:
                        outcomes.append((job, job.fn(store), None))
                    except Exception as exc:  # noqa: BLE001 - its savepoint rolled back alone
                        outcomes.append((job, None, disk_full(store, exc)))
        except Exception as exc:  # noqa: BLE001 - the COMMIT failed: every write failed
            outcomes = [(job, None, disk_full(store, exc)) for job in jobs]
        self.group_commits += 1
        self._deliver(outcomes)

    def run(self) -> None:
        try:
            store = self._opener()
        except BaseException as exc:  # noqa: BLE001 - reported to open()
            self.opened.set_exception(exc)
            return
        self.opened.set_result(None)
        try:
            stopping = False
            while not stopping:
                job = self._queue.get()
                if job is None:
                    break
                jobs = [job]
                while self._group_writes and len(jobs) < MAX_GROUP:
                    try:
                        extra = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if extra is None:
                        stopping = True
                        break
                    jobs.append(extra)
                if len(jobs) == 1:
                    self._run_one(store, jobs[0])
                else:
                    self._run_group(store, jobs)
        finally:
            store.close()


def _writer_store(store: Store) -> Store:
    """The writer's store, made ready for retention (before the reader opens: the one-time
    conversion's VACUUM needs the database to itself)."""
    try:
        retention.make_incremental(store.conn, store.path)
    except BaseException:
        store.close()
        raise
    return store


class AsyncStore:
    """Asyncio facade over :class:`Store` (same arguments); create with :meth:`open`."""

    def __init__(self, writer: _StoreThread, reader: _StoreThread, uplinks: Sequence[str]) -> None:
        self._writer = writer
        self._reader = reader
        self.uplinks = tuple(uplinks)
        self._events = {uplink: asyncio.Event() for uplink in self.uplinks}

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        signer: BundleSigner | None = None,
        uplinks: Sequence[str] = (),
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        clock: Callable[[], datetime] = _utc_now,
    ) -> AsyncStore:
        loop = asyncio.get_running_loop()
        writer = _StoreThread(
            "store-writer",
            lambda: _writer_store(
                Store(path, signer=signer, uplinks=uplinks, quota_bytes=quota_bytes, clock=clock)
            ),
            loop,
            group_writes=True,
        )
        writer.start()
        await asyncio.wrap_future(writer.opened)  # migrations ran; now the reader can open
        reader = _StoreThread(
            "store-reader",
            lambda: Store(path, quota_bytes=quota_bytes, clock=clock),
            loop,
            group_writes=False,
        )
        reader.start()
        try:
            await asyncio.wrap_future(reader.opened)
        except BaseException:
            writer.stop()
            raise
        return cls(writer, reader, uplinks)

    async def close(self) -> None:
        """Finish queued work and close both connections (waits for the threads)."""
        for worker in (self._writer, self._reader):
            if worker.is_alive():
                worker.stop()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        self._writer.join()
        self._reader.join()

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def group_commits(self) -> int:
        """How many commits carried several writes (metrics; grows under concurrent load)."""
        return self._writer.group_commits

    # -- notification ----------------------------------------------------------------------

    def outbox_event(self, uplink: str) -> asyncio.Event:
        """Set whenever items for ``uplink`` were enqueued or revived; the pump clears it."""
        return self._events.setdefault(uplink, asyncio.Event())

    def _notify(self, uplink: str | None = None) -> None:
        for name, event in self._events.items():
            if uplink is None or name == uplink:
                event.set()

    # -- writes (writer thread) ------------------------------------------------------------

    async def upsert_device(
        self, address: str, kind: str, name: str | None, info: Mapping[str, Any]
    ) -> None:
        info = dict(info)
        await self._writer.submit(lambda s: s.upsert_device(address, kind, name, info))

    async def add_observations(
        self,
        device_address: str,
        observations: Sequence[ObservationRecord],
        bundle_factory: BundleFactory,
        *,
        patient: str | None = None,
        hold: bool = False,
    ) -> list[str]:
        """See :meth:`Store.add_observations`; ``bundle_factory`` runs in the writer thread."""
        records = list(observations)
        new = await self._writer.submit(
            lambda s: s.add_observations(
                device_address, records, bundle_factory, patient=patient, hold=hold
            ),
            durable=bool(self.uplinks),
        )
        if new and not hold:
            self._notify()
        return new

    async def release_held(
        self, reference: str, *, after: datetime | None, before: datetime
    ) -> Released:
        """See :meth:`Store.release_held`; wakes the pumps when something was released."""
        released = await self._writer.submit(
            lambda s: s.release_held(reference, after=after, before=before), durable=True
        )
        if released.bundles:
            self._notify()
        return released

    async def enqueue_bundle(self, kind: TopicKind, bundle: Mapping[str, Any]) -> str | None:
        bundle_id = await self._writer.submit(
            lambda s: s.enqueue_bundle(kind, bundle), durable=True
        )
        if bundle_id is not None:
            self._notify()
        return bundle_id

    async def write(self, fn: Callable[[Store], T], *, notify: bool = False) -> T:
        """Run ``fn`` in the writer thread, durably (for the tables other modules keep: see
        ``Store.transaction``); ``notify``: it may have enqueued, wake the pumps."""
        result = await self._writer.submit(fn, durable=True)
        if notify:
            self._notify()
        return result

    async def read(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn`` in the reader thread (its own connection, never blocked by writes)."""
        return await self._reader.submit(fn)

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        numbers = list(seqs)
        return await self._writer.submit(lambda s: s.mark_delivered(numbers), durable=True)

    async def record_failures(self, failures: Mapping[int, str]) -> None:
        copy = dict(failures)
        await self._writer.submit(lambda s: s.record_failures(copy), durable=True)

    async def mark_dead(self, seq: int, reason: str) -> None:
        await self._writer.submit(lambda s: s.mark_dead(seq, reason), durable=True)

    async def retry_dead(self, uplink: str | None = None) -> int:
        count = await self._writer.submit(lambda s: s.retry_dead(uplink), durable=True)
        if count:
            self._notify(uplink)
        return count

    # -- reads (reader thread) -------------------------------------------------------------

    async def latest_observations(self, limit: int) -> list[StoredObservation]:
        return await self._reader.submit(lambda s: s.latest_observations(limit))

    async def observation_counts(self) -> dict[str, int]:
        return await self._reader.submit(lambda s: s.observation_counts())

    async def last_record_time(self, device_address: str, code: str) -> datetime | None:
        return await self._reader.submit(lambda s: s.last_record_time(device_address, code))

    async def devices(self) -> list[DeviceRecord]:
        return await self._reader.submit(lambda s: s.devices())

    async def pending_items(
        self, uplink: str, *, after_seq: int = 0, limit: int
    ) -> list[OutboxItem]:
        return await self._reader.submit(
            lambda s: s.pending_items(uplink, after_seq=after_seq, limit=limit)
        )

    async def outbox_items(
        self, *, uplink: str | None = None, state: OutboxState | None = None, limit: int = 100
    ) -> list[OutboxItem]:
        return await self._reader.submit(
            lambda s: s.outbox_items(uplink=uplink, state=state, limit=limit)
        )

    async def outbox_usage(self) -> OutboxStats:
        """Counts and bytes per state, with the quota."""
        return await self._reader.submit(lambda s: s.outbox_stats())

    async def outbox_stats(self) -> dict[str, int | bool]:
        """``{"pending", "delivered", "dead", "quota_alarm"}`` over the whole outbox."""
        return (await self.outbox_usage()).as_dict()
