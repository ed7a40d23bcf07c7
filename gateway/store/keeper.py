"""Keeps the store within its retention while the gateway runs: every ``store.maintain_every_s``
it lets go of what :mod:`.retention` allows, in short transactions in the store's writer thread,
and gives the freed pages back to the filesystem. What it did last is kept for ``/status`` and
the metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.store import retention

if TYPE_CHECKING:
    from gateway.store.aio import AsyncStore
    from gateway.store.settings import StoreSettings
    from gateway.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Maintained:
    """One maintenance pass."""

    delivered: int
    observations: int
    returned_bytes: int
    usage: retention.Usage


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
        self.pruned_delivered = 0
        self.pruned_observations = 0

    def _prune_batch(self, store: Store) -> retention.Pruned:
        with store.transaction() as conn:
            return retention.prune(
                conn,
                now=self._clock(),
                retention_days=self._settings.retention_days,
                delivered_keep_days=self._settings.delivered_keep_days,
            )

    async def maintain_once(self) -> Maintained:
        """Prune in batches until nothing more goes, then give the space back."""
        delivered = observations = 0
        while True:
            pruned = await self._store.write(self._prune_batch)
            delivered += pruned.delivered
            observations += pruned.observations
            if max(pruned.delivered, pruned.observations) < retention.BATCH:
                break
        returned, usage = await self._store.write(_give_back)
        self.pruned_delivered += delivered
        self.pruned_observations += observations
        self.last = Maintained(delivered, observations, returned, usage)
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

    async def run(self) -> None:
        """Maintain now and every ``maintain_every_s`` until cancelled."""
        while True:
            await self.maintain_once()
            await asyncio.sleep(self._settings.maintain_every_s)
