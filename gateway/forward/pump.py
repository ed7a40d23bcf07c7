"""The outbox pump: moves one uplink's pending items from the store to the far end.

Per uplink, one asyncio task (:meth:`OutboxPump.run`):

- reads pending items in ``seq`` order (store reader thread) and keeps up to ``uplink.window``
  of them in flight;
- marks an item delivered only when :meth:`Uplink.send` returned, i.e. on the uplink's
  acknowledgement (MQTT PUBACK, HTTP 2xx), batching those updates into few commits;
- on :class:`ConnectionLostError` puts the item back (lowest ``seq`` first) and waits for the
  uplink to be ready again; on another :class:`TransientDeliveryError` also pauses sending for the
  backoff of its error class (or the server's Retry-After); on :class:`PermanentDeliveryError`
  moves the item to the dead letters with the server's reason.

Delivery is at-least-once: an acknowledgement lost in a crash or a dropped connection means the
item is sent again (after restart every pending item is), so receivers deduplicate by Bundle id.
Order per uplink holds for items that are delivered on the first attempt with a window of 1 and,
for MQTT, on one connection; retried and revived (dead → pending) items may overtake or follow.

Items revived by ``bedside outbox retry-dead`` in another process are picked up by a rescan of the
outbox every ``rescan_interval_s`` while the pump is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from gateway.forward.backoff import Backoff
from gateway.forward.errors import (
    ConnectionLostError,
    ErrorClass,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.store.aio import AsyncStore
from gateway.store.errors import StoreFullError
from gateway.store.models import OutboxItem

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200
DEFAULT_RESCAN_INTERVAL_S = 5.0
FLUSH_RETRY_S = 5.0  # the store could not record outcomes (disk full): try again after this


class Uplink(Protocol):
    """A way to the hospital (MQTT broker, FHIR server)."""

    @property
    def name(self) -> str:
        """The uplink's name in the outbox (``"mqtt"``, ``"https"``)."""
        ...

    @property
    def window(self) -> int:
        """How many items may be in flight at once."""
        ...

    async def wait_ready(self) -> None:
        """Return when sending makes sense (connected); may wait indefinitely."""

    async def send(self, item: OutboxItem) -> None:
        """Deliver ``item``; return only on the far end's acknowledgement.

        Raises :class:`TransientDeliveryError` (incl. :class:`ConnectionLostError`) or
        :class:`PermanentDeliveryError`.
        """


@dataclass(slots=True)
class PumpStats:
    """Counters since start (for metrics and the status page)."""

    sent: int = 0
    delivered: int = 0  # acknowledged
    recorded: int = 0  # acknowledged or dead, and committed to the store
    retried: int = 0
    dead: int = 0
    last_error: str | None = None


class OutboxPump:
    """Drives one uplink from the outbox; run it as a named task under the app's TaskGroup."""

    def __init__(
        self,
        store: AsyncStore,
        uplink: Uplink,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backoff: Backoff | None = None,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store = store
        self.uplink = uplink
        self.stats = PumpStats()
        self._batch_size = batch_size
        self._backoff = backoff or Backoff()
        self._rescan_interval_s = rescan_interval_s
        self._wake = store.outbox_event(uplink.name)
        self._flush_needed = asyncio.Event()
        self._cursor = 0
        self._buffer: deque[OutboxItem] = deque()
        self._retry: list[tuple[int, OutboxItem]] = []
        self._inflight: dict[asyncio.Task[None], OutboxItem] = {}
        self._known: set[int] = set()  # buffered, retrying, in flight or awaiting its DB update
        self._acked: list[int] = []
        self._dead: list[tuple[int, str]] = []
        self._failures: dict[int, str] = {}
        self._pause_until = 0.0
        self._next_rescan = 0.0
        self._settled = 0  # flushes whose DB update committed
        self.progress = asyncio.Event()  # set after every commit of outcomes (or failures)

    # -- public --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Pump until cancelled."""
        name = self.uplink.name
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._flush_loop(), name=f"outbox-flush-{name}")
                await self._send_loop()
        finally:
            for task in list(self._inflight):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush())

    # -- sending -------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.uplink.wait_ready()
            delay = self._pause_until - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._wake.clear()  # before reading: a later notify or completion re-sets it
            found = await self._fill()
            busy = bool(self._inflight) or found
            try:
                async with asyncio.timeout(None if busy else self._rescan_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _fill(self) -> bool:
        """Start sends up to the window; False when there was nothing to send."""
        found = False
        while len(self._inflight) < self.uplink.window:
            item = await self._next_item()
            if item is None:
                break
            found = True
            task = asyncio.create_task(
                self.uplink.send(item), name=f"outbox-send-{self.uplink.name}-{item.seq}"
            )
            self._inflight[task] = item
            task.add_done_callback(self._on_done)
            self.stats.sent += 1
        return found

    async def _next_item(self) -> OutboxItem | None:
        if self._retry:
            return heapq.heappop(self._retry)[1]
        if not self._buffer:
            await self._refill()
        return self._buffer.popleft() if self._buffer else None

    async def _refill(self) -> None:
        rows = await self.store.pending_items(
            self.uplink.name, after_seq=self._cursor, limit=self._batch_size
        )
        if rows:
            self._cursor = max(self._cursor, rows[-1].seq)
        else:
            rows = await self._rescan()
        fresh = [row for row in rows if row.seq not in self._known]
        self._known.update(row.seq for row in fresh)
        self._buffer.extend(fresh)

    async def _rescan(self) -> list[OutboxItem]:
        """Caught up: now and then look for items revived behind the cursor (retry-dead)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_rescan:
            return []
        self._next_rescan = loop.time() + self._rescan_interval_s
        settled = self._settled
        rows = await self.store.pending_items(self.uplink.name, after_seq=0, limit=self._batch_size)
        # A flush that committed meanwhile left its items out of _known while this read may have
        # seen them still pending: drop the read rather than send them again.
        return rows if settled == self._settled else []

    def _on_done(self, task: asyncio.Task[None]) -> None:
        item = self._inflight.pop(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._backoff.success()
            self.stats.delivered += 1
            self._acked.append(item.seq)
        elif isinstance(error, PermanentDeliveryError):
            log.warning("%s: item %s (%s) is dead: %s", self.uplink.name, item.seq, item.id, error)
            self.stats.dead += 1
            self._dead.append((item.seq, error.reason))
        else:
            self._retry_later(item, error)
        self._flush_needed.set()
        self._wake.set()

    def _retry_later(self, item: OutboxItem, error: BaseException) -> None:
        self.stats.retried += 1
        self.stats.last_error = str(error)
        self._failures[item.seq] = str(error)
        heapq.heappush(self._retry, (item.seq, item))
        if isinstance(error, ConnectionLostError):
            log.debug("%s: item %s unacknowledged: %s", self.uplink.name, item.seq, error)
            return  # the uplink reconnects with its own backoff; wait_ready() holds the loop
        if isinstance(error, TransientDeliveryError):
            error_class, retry_after = error.error_class, error.retry_after
        else:  # a bug in an uplink must not lose the item nor spin: retry slowly
            log.error("%s: unexpected error sending %s", self.uplink.name, item.seq, exc_info=error)
            error_class, retry_after = ErrorClass.SERVER, None
        delay = self._backoff.failure(error_class, retry_after)
        loop = asyncio.get_running_loop()
        self._pause_until = max(self._pause_until, loop.time() + delay)
        log.info("%s: %s; retrying in %.1f s", self.uplink.name, error, delay)

    # -- recording outcomes -------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_needed.wait()
            self._flush_needed.clear()
            await self._flush()

    async def _flush(self) -> None:
        acked, self._acked = self._acked, []
        dead, self._dead = self._dead, []
        failures, self._failures = self._failures, {}
        try:
            if failures:
                await self.store.record_failures(failures)
            if acked:
                await self.store.mark_delivered(acked)
            for seq, reason in dead:
                await self.store.mark_dead(seq, reason)
        except StoreFullError as exc:  # nothing recorded: keep the outcomes, try again later
            self._acked[:0], self._dead[:0] = acked, dead
            self._failures = failures | self._failures
            log.warning("%s: outcomes not recorded yet: %s", self.uplink.name, exc)
            await asyncio.sleep(FLUSH_RETRY_S)
            self._flush_needed.set()
            return
        if acked or dead:
            self._settled += 1
            self._known.difference_update(acked)
            self._known.difference_update(seq for seq, _ in dead)
            self.stats.recorded += len(acked) + len(dead)
        if failures or acked or dead:
            self.progress.set()
