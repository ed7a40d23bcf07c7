"""Composition helpers: signer, store, uplinks and pumps from the settings, run under a TaskGroup.

The app's composition root does::

    signer = build_signer(data_dir, who=gateway_device_reference)
    uplinks = build_uplinks(settings)                      # MQTT and/or HTTPS, from ForwardSettings
    store = await open_store(data_dir, settings, signer, uplinks)
    forwarding = Forwarding(store, uplinks, settings.outbox)
    async with asyncio.TaskGroup() as tg:
        forwarding.start(tg)                               # named tasks: uplink-*, pump-*
        ...                                                # BLE, web, assistant
    await store.close()

Every uplink task keeps its connection (MQTT reconnects with backoff; HTTPS holds its session);
every pump task moves its uplink's outbox items (see :mod:`gateway.forward.pump`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.backoff import BackoffPolicy
from gateway.forward.backoff import POLICIES, Backoff
from gateway.forward.errors import ErrorClass
from gateway.forward.https import HttpsUplink
from gateway.forward.inbound import ListeningMqttUplink
from gateway.forward.pump import DEFAULT_RESCAN_INTERVAL_S, OutboxPump, Uplink
from gateway.forward.settings import ForwardSettings, OutboxSettings
from gateway.forward.signing import KeyStore, Signer
from gateway.store.aio import AsyncStore
from gateway.store.store import store_path


class RunnableUplink(Uplink, Protocol):
    async def run(self) -> None:
        """Keep the uplink's connection until cancelled."""


def build_signer(data_dir: Path, who: Mapping[str, Any]) -> Signer:
    """The gateway's signer; creates its key (mode 0600) on first start."""
    return Signer(KeyStore(data_dir).load_or_create(), who)


def build_uplinks(
    settings: ForwardSettings,
    *,
    policies: Mapping[ErrorClass, BackoffPolicy] = POLICIES,
) -> list[RunnableUplink]:
    """The configured uplinks, MQTT first; empty when none is configured."""
    uplinks: list[RunnableUplink] = []
    if settings.mqtt is not None:
        uplinks.append(
            ListeningMqttUplink(settings.mqtt, settings.gateway_id, backoff=Backoff(policies))
        )
    if settings.https is not None:
        uplinks.append(HttpsUplink(settings.https))
    return uplinks


async def open_store(
    data_dir: Path,
    settings: ForwardSettings,
    signer: Signer,
    uplinks: Sequence[Uplink],
) -> AsyncStore:
    """The store in ``data_dir``, enqueueing for ``uplinks``, with the outbox quota."""
    return await AsyncStore.open(
        store_path(data_dir),
        signer=signer,
        uplinks=[uplink.name for uplink in uplinks],
        quota_bytes=settings.outbox.quota_bytes,
    )


class Forwarding:
    """The uplinks and one pump per uplink."""

    def __init__(
        self,
        store: AsyncStore,
        uplinks: Sequence[RunnableUplink],
        outbox: OutboxSettings,
        *,
        policies: Mapping[ErrorClass, BackoffPolicy] = POLICIES,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
    ) -> None:
        self.store = store
        self.uplinks = tuple(uplinks)
        self.pumps = tuple(
            OutboxPump(
                store,
                uplink,
                batch_size=outbox.batch_size,
                backoff=Backoff(policies),
                rescan_interval_s=rescan_interval_s,
            )
            for uplink in self.uplinks
        )
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Start every uplink and pump as a named task of ``tg`` (references kept here)."""
        for uplink, pump in zip(self.uplinks, self.pumps, strict=True):
            self.tasks.append(tg.create_task(uplink.run(), name=f"uplink-{uplink.name}"))
            self.tasks.append(tg.create_task(pump.run(), name=f"pump-{uplink.name}"))

    def status(self) -> dict[str, Any]:
        """Per uplink: connected, pump counters, last error (status page, metrics)."""
        out: dict[str, Any] = {}
        for uplink, pump in zip(self.uplinks, self.pumps, strict=True):
            out[uplink.name] = {
                "sent": pump.stats.sent,
                "delivered": pump.stats.delivered,
                "retried": pump.stats.retried,
                "dead": pump.stats.dead,
                "last_error": getattr(uplink, "last_error", None) or pump.stats.last_error,
            }
        return out
