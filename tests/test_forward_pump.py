"""The outbox pump against a scripted uplink: window, order, acknowledgement, retry, dead letters.

The uplink here implements the pump's Uplink protocol in the test, so that every outcome (ack,
transient error, refusal, lost connection) can be placed on a chosen item; the real uplinks are
exercised against mosquitto and an HTTPS server in the other test_forward_* modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.backoff import BackoffPolicy
from gateway.forward import pump as pump_module
from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.errors import (
    ConnectionLostError,
    ErrorClass,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.forward.pump import OutboxPump
from gateway.store import AsyncStore, OutboxItem, OutboxState, StoreFullError
from tests.fixtures_mqtt import DEVICE, make_signer, record, transaction_bundle

TIMEOUT_S = 20.0


class ScriptedUplink:
    def __init__(self, window: int) -> None:
        self.name = "test"
        self.window = window
        self.ready = asyncio.Event()
        self.ready.set()
        self.gate = asyncio.Event()
        self.gate.set()
        self.sent: list[str] = []  # identifiers of the observation in each sent Bundle
        self.script: dict[str, list[BaseException]] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.changed = asyncio.Event()

    async def wait_ready(self) -> None:
        await self.ready.wait()

    async def send(self, item: OutboxItem) -> None:
        name = item.payload.split('"identifier":[{"system":')[1].split('"value":"')[1].split('"')[0]
        self.sent.append(name)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.changed.set()
        try:
            await self.gate.wait()
            planned = self.script.get(name)
            if planned:
                raise planned.pop(0)
        finally:
            self.inflight -= 1


async def until(event: asyncio.Event, predicate: Callable[[], bool]) -> None:
    while not predicate():
        event.clear()
        await event.wait()


@contextlib.asynccontextmanager
async def pumping(
    directory: Path, uplink: ScriptedUplink
) -> AsyncIterator[tuple[AsyncStore, OutboxPump]]:
    store = await AsyncStore.open(
        directory / "p.sqlite3", signer=make_signer(), uplinks=[uplink.name]
    )
    backoff = Backoff(fast_policies(0.01, 0.05), rng=random.Random(1))
    pump = OutboxPump(store, uplink, batch_size=7, backoff=backoff, rescan_interval_s=0.05)
    task = asyncio.create_task(pump.run())
    try:
        async with asyncio.timeout(TIMEOUT_S):
            yield store, pump
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def add(store: AsyncStore, *names: str) -> None:
    for name in names:
        await store.add_observations(DEVICE, [record(name)], transaction_bundle)


async def test_window_order_and_delivery_only_on_acknowledgement(tmp_path: Path) -> None:
    uplink = ScriptedUplink(window=5)
    uplink.gate.clear()  # hold every acknowledgement
    names = [f"o{i:02d}" for i in range(30)]
    async with pumping(tmp_path, uplink) as (store, pump):
        await add(store, *names)
        await until(uplink.changed, lambda: len(uplink.sent) == 5)
        assert uplink.inflight == 5
        assert (await store.outbox_stats())["pending"] == 30  # nothing acknowledged yet
        uplink.gate.set()
        await until(pump.progress, lambda: pump.stats.recorded == 30)
        assert await store.outbox_stats() == {
            "pending": 0,
            "delivered": 30,
            "dead": 0,
            "quota_alarm": False,
        }
    assert uplink.sent == names
    assert uplink.max_inflight == 5


async def test_transient_error_is_retried_before_later_items(tmp_path: Path) -> None:
    uplink = ScriptedUplink(window=1)
    uplink.script["b"] = [
        TransientDeliveryError(ErrorClass.SERVER, "HTTP 500"),
        TransientDeliveryError(ErrorClass.RATE_LIMITED, "HTTP 429", retry_after=0.01),
    ]
    async with pumping(tmp_path, uplink) as (store, pump):
        await add(store, "a", "b", "c")
        await until(pump.progress, lambda: pump.stats.recorded == 3)
        items = {i.payload.count('"value":"b"'): i for i in await store.outbox_items()}
    assert uplink.sent == ["a", "b", "b", "b", "c"]
    retried = items[1]
    assert (retried.state, retried.attempts, retried.last_error) == (
        OutboxState.DELIVERED,
        2,
        "HTTP 429",
    )
    assert pump.stats.retried == 2


async def test_refused_item_goes_dead_and_can_be_revived(tmp_path: Path) -> None:
    uplink = ScriptedUplink(window=2)
    uplink.script["b"] = [PermanentDeliveryError("HTTP 412 Precondition Failed: two matches")]
    async with pumping(tmp_path, uplink) as (store, pump):
        await add(store, "a", "b", "c")
        await until(pump.progress, lambda: pump.stats.recorded == 3)
        (dead,) = await store.outbox_items(state=OutboxState.DEAD)
        assert dead.last_error == "HTTP 412 Precondition Failed: two matches"
        assert await store.retry_dead() == 1
        await until(pump.progress, lambda: pump.stats.recorded == 4)
        assert (await store.outbox_stats())["delivered"] == 3
    assert sorted(uplink.sent) == ["a", "b", "b", "c"]


async def test_lost_connection_waits_for_the_uplink_and_resends(tmp_path: Path) -> None:
    uplink = ScriptedUplink(window=3)
    uplink.script["a"] = [ConnectionLostError("broker went away")]
    uplink.script["b"] = [ConnectionLostError("broker went away")]
    uplink.gate.clear()
    async with pumping(tmp_path, uplink) as (store, pump):
        await add(store, "a", "b")
        await until(uplink.changed, lambda: len(uplink.sent) == 2)
        uplink.ready.clear()  # disconnected
        uplink.gate.set()  # both sends fail with ConnectionLostError
        await until(pump.progress, lambda: pump.stats.retried == 2 or pump.stats.recorded > 0)
        await add(store, "c")
        assert uplink.sent == ["a", "b"]  # nothing is sent while the uplink is down
        uplink.ready.set()
        await until(pump.progress, lambda: pump.stats.recorded == 3)
    assert uplink.sent == ["a", "b", "a", "b", "c"]  # resent in order, before newer items


async def test_a_bug_in_an_uplink_loses_nothing(tmp_path: Path) -> None:
    uplink = ScriptedUplink(window=1)
    uplink.script["a"] = [RuntimeError("bug")]
    async with pumping(tmp_path, uplink) as (store, pump):
        await add(store, "a")
        await until(pump.progress, lambda: pump.stats.recorded == 1)
    assert uplink.sent == ["a", "a"]


def test_backoff_is_capped_and_jittered() -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=8.0)
    assert [policy.nominal(n) for n in (1, 2, 3, 4, 5, 50)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff = Backoff(dict.fromkeys(ErrorClass, policy), rng=random.Random(7))
    delays = [backoff.failure(ErrorClass.NETWORK) for _ in range(6)]
    assert all(
        policy.nominal(n + 1) / 2 <= d <= policy.nominal(n + 1) for n, d in enumerate(delays)
    )
    assert backoff.failures(ErrorClass.NETWORK) == 6
    assert backoff.failures(ErrorClass.TLS) == 0  # classes count separately
    assert backoff.failure(ErrorClass.RATE_LIMITED, retry_after=3.0) == 3.0
    assert backoff.failure(ErrorClass.RATE_LIMITED, retry_after=10_000) == 600.0
    backoff.success()
    assert backoff.failures(ErrorClass.NETWORK) == 0
    with pytest.raises(ValueError, match="missing"):
        Backoff({ErrorClass.NETWORK: policy})


async def test_outcomes_the_full_disk_could_not_record_are_recorded_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pump_module, "FLUSH_RETRY_S", 0.01)
    uplink = ScriptedUplink(window=3)
    async with pumping(tmp_path, uplink) as (store, pump):
        real = store.mark_delivered
        failures = [StoreFullError("the disk holding the store is full")]

        async def full_once(seqs: list[int]) -> int:
            if failures:
                raise failures.pop()
            return await real(seqs)

        monkeypatch.setattr(store, "mark_delivered", full_once)
        await add(store, "a", "b", "c")
        await until(pump.progress, lambda: pump.stats.recorded == 3)
        assert not failures  # the first flush failed
        assert (await store.outbox_stats())["delivered"] == 3
    assert uplink.sent == ["a", "b", "c"]  # nothing sent twice
