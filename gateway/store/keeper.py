"""Keeps the store within its retention and its disk budget while the gateway runs: every
``store.maintain_every_s`` it lets go of what :mod:`.retention` allows, in short transactions in
the store's writer thread; over the alarm level of ``store.max_bytes`` it makes room (delivered
outbox items, then the oldest forwarded Observations) down to just under it; then it gives the
freed pages back to the filesystem. Between those passes it measures the database every
:data:`CHECK_EVERY_S` (three pragmas in the writer thread) and runs a pass at once when the
database has reached the alarm level and grown since the last pass: a budget small next to what
arrives in ``maintain_every_s`` still holds. The storage state — ``ok``, ``alarm`` (what must
stay fills ``alarm_fraction`` of the budget: an uplink down for long, readings held for a
patient) or ``full`` (it fills the budget: new readings are refused, counted, until room is
made) — is reported in ``/healthz``, the metrics and the page."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.store import retention
from gateway.store.errors import StoreFullError

if TYPE_CHECKING:
    from gateway.store.aio import AsyncStore
    from gateway.store.settings import StoreSettings
    from gateway.store.store import Store

log = logging.getLogger(__name__)


HEADROOM: Final = 0.95  # making room stops this far under the alarm level
CHECK_EVERY_S: Final = 5.0  # the database measured between passes
# Over the alarm level with nothing left to let go of, the next early pass waits for this share
# of the budget to arrive: the state (alarm → full) stays current without a pass every check.
GROWTH_STEP: Final = 0.01


class StorageState(enum.StrEnum):
    OK = "ok"
    ALARM = "alarm"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Maintained:
    """One maintenance pass."""

    delivered: int
    observations: int
    returned_bytes: int
    usage: retention.Usage
    state: StorageState


def _make_room(store: Store) -> tuple[retention.Pruned, retention.Usage]:
    """One step of making room, and the usage after it (one trip to the writer thread)."""
    return retention.make_room(store.conn), retention.usage(store.conn)


def _usage(store: Store) -> retention.Usage:
    return retention.usage(store.conn)


def _give_back(store: Store) -> tuple[int, retention.Usage]:
    return retention.give_back(store.conn), retention.usage(store.conn)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoreKeeper:
    """See the module text."""

    def __init__(
        self,
        store: AsyncStore,
        settings: StoreSettings,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self.last: Maintained | None = None
        self.state = StorageState.OK
        self.pruned_delivered = 0
        self.pruned_observations = 0
        self.refused_readings = 0  # readings refused while the store was full
        self.disk_full: str | None = None  # the last pass failed: the disk is full
        self.used_bytes: int | None = None  # as last measured, by a pass or a check

    def _prune_batch(self, store: Store) -> retention.Pruned:
        with store.transaction() as conn:
            return retention.prune(
                conn,
                now=self._clock(),
                retention_days=self._settings.retention_days,
                delivered_keep_days=self._settings.delivered_keep_days,
            )

    @property
    def budget_bytes(self) -> int:
        return self._settings.max_bytes

    @property
    def alarm_bytes(self) -> int:
        return int(self._settings.max_bytes * self._settings.alarm_fraction)

    async def maintain_once(self) -> Maintained:
        """Prune in batches until nothing more goes, make room if over the alarm level, give
        the space back, and say where the store stands."""
        delivered = observations = 0
        while True:
            pruned = await self._store.write(self._prune_batch)
            delivered += pruned.delivered
            observations += pruned.observations
            if max(pruned.delivered, pruned.observations) < retention.BATCH:
                break
        usage = await self._store.write(_usage)
        while usage.used_bytes > self.alarm_bytes * HEADROOM:
            pruned, usage = await self._store.write(_make_room)
            if not (pruned.delivered or pruned.observations):
                break  # what is left must stay
            delivered += pruned.delivered
            observations += pruned.observations
        returned, usage = await self._store.write(_give_back)
        self._set_state(usage)
        refusing = self.reason(usage.used_bytes) if self.state is StorageState.FULL else None
        await self._store.write(lambda store: setattr(store, "refusing", refusing))
        self.pruned_delivered += delivered
        self.pruned_observations += observations
        self.last = Maintained(delivered, observations, returned, usage, self.state)
        self.used_bytes = usage.used_bytes
        if delivered or observations or returned:
            log.info(
                "store retention: %d delivered outbox item(s) and %d Observation(s) let go, "
                "%d bytes given back; the database holds %d bytes",
                delivered,
                observations,
                returned,
                usage.used_bytes,
            )
        return self.last

    def count_refused(self, readings: int) -> None:
        """Told by the ingest of readings it could not store (the store is full)."""
        self.refused_readings += readings

    def _set_state(self, usage: retention.Usage) -> None:
        used = usage.used_bytes
        state = (
            StorageState.FULL
            if used >= self.budget_bytes
            else StorageState.ALARM
            if used >= self.alarm_bytes
            else StorageState.OK
        )
        if state is not self.state:
            level = logging.INFO if state is StorageState.OK else logging.WARNING
            log.log(level, "storage %s: %s", state, self.reason(used))
        self.state = state

    def reason(self, used: int) -> str:
        """The storage state in one sentence."""
        share = f"{used / self.budget_bytes:.0%} of store.max_bytes ({self.budget_bytes} bytes)"
        if used < self.alarm_bytes:
            return f"the database holds {used} bytes, {share}"
        return (
            f"readings not yet sent or held for a patient fill {share}: bring the uplink back, "
            "assign a patient, or raise store.max_bytes"
        )

    def as_json(self) -> dict[str, object]:
        """The storage state for ``/healthz``, ``/api/gateway`` and the page."""
        used = self.used_bytes
        return {
            "state": str(self.state),
            "used_bytes": used,
            "budget_bytes": self.budget_bytes,
            "alarm_bytes": self.alarm_bytes,
            "reason": self.disk_full
            or (self.reason(used) if used is not None else "not measured yet"),
            "pruned_observations": self.pruned_observations,
            "pruned_delivered": self.pruned_delivered,
            "refused_readings": self.refused_readings,
        }

    async def run(self) -> None:
        """Maintain now, every ``maintain_every_s`` and whenever :meth:`needs_pass` says so,
        until cancelled (scheduled on the monotonic clock: a step of the wall clock moves no
        pass)."""
        every = self._settings.maintain_every_s
        await self._store.write(lambda store: retention.bound_wal(store.conn, self.budget_bytes))
        due = time.monotonic()
        while True:
            if time.monotonic() >= due or await self.needs_pass():
                await self._pass()
                due = time.monotonic() + every
            await asyncio.sleep(min(CHECK_EVERY_S, every))

    async def _pass(self) -> None:
        try:
            await self.maintain_once()
        except StoreFullError as exc:
            if self.state is not StorageState.FULL:
                log.warning("storage full: %s", exc)
            self.state, self.disk_full = StorageState.FULL, str(exc)
        else:
            self.disk_full = None

    async def needs_pass(self) -> bool:
        """Measure the database; True when it has reached the alarm level and grown since the
        last pass (by :data:`GROWTH_STEP` of the budget when that pass left it over the level)."""
        try:
            usage = await self._store.write(_usage)
        except StoreFullError:
            return True  # the pass says what is wrong
        self.used_bytes = usage.used_bytes
        if usage.used_bytes < self.alarm_bytes:
            return False
        after_last = self.last.usage.used_bytes if self.last is not None else 0
        step = GROWTH_STEP * self.budget_bytes if after_last >= self.alarm_bytes else 1
        return usage.used_bytes - after_last >= step
