"""Retention of the local store (gateway/store/retention.py, keeper.py): delivered outbox items go
after ``delivered_keep_days``; Observations go after ``retention_days`` once forwarded — never
one whose Bundle is pending or dead, never a held one; without uplinks old ones go; freed pages
go back to the filesystem; the keeper does it through the running store's threads."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import OutboxState, Store, StoreFullError
from gateway.store.aio import AsyncStore
from gateway.store.keeper import StoreKeeper
from gateway.store.retention import Pruned, give_back, make_room, prune, usage
from gateway.store.settings import MIB, StoreSettings
from tests.fixtures_mqtt import DEVICE, make_signer, record, transaction_bundle
from tests.harness import running_gateway, wait_until
from tests.sim_central import FAST
from tests.test_store import KEY

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


class Clock:
    """A clock the test sets."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


def _identifiers(store: Store) -> set[str]:
    return {row[0] for row in store.conn.execute("SELECT identifier FROM observations")}


def test_what_goes_and_what_stays(tmp_path: Path) -> None:
    clock = Clock()
    with Store(
        tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",), clock=clock
    ) as store:
        store.add_observations(DEVICE, [record("delivered-old")], transaction_bundle)
        store.add_observations(DEVICE, [record("pending-old")], transaction_bundle)
        store.add_observations(DEVICE, [record("dead-old")], transaction_bundle)
        store.add_observations(DEVICE, [record("held-old")], transaction_bundle, hold=True)
        seqs = {item.payload.split('"value":"')[1].split('"')[0]: item.seq for item in
                store.pending_items("mqtt", limit=10)}  # fmt: skip
        store.mark_delivered([seqs["delivered-old"]])
        store.mark_dead(seqs["dead-old"], "refused by the server")
        clock.now = START + 40 * DAY
        store.add_observations(DEVICE, [record("delivered-new")], transaction_bundle)
        (new,) = store.pending_items("mqtt", limit=10)[1:]
        store.mark_delivered([new.seq])

        with store.transaction() as conn:
            pruned = prune(conn, now=clock.now, retention_days=30, delivered_keep_days=1)
        assert (pruned.delivered, pruned.observations) == (1, 1)
        assert _identifiers(store) == {"pending-old", "dead-old", "held-old", "delivered-new"}
        states = [item.state for item in store.outbox_items(limit=10)]
        assert sorted(states) == sorted(
            [OutboxState.PENDING, OutboxState.DEAD, OutboxState.DELIVERED]
        )
        with store.transaction() as conn:  # nothing more goes until the rest is forwarded
            again = prune(conn, now=clock.now, retention_days=30, delivered_keep_days=1)
        assert (again.delivered, again.observations) == (0, 0)


def test_delivered_items_go_by_when_they_were_delivered_not_by_when_they_were_enqueued(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with Store(
        tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=("https", "mqtt"), clock=clock
    ) as store:
        for name in ("a", "b", "c"):
            store.add_observations(DEVICE, [record(name)], transaction_bundle)
        mqtt = [item.seq for item in store.pending_items("mqtt", limit=10)]
        https = [item.seq for item in store.pending_items("https", limit=10)]
        store.mark_delivered(mqtt)  # delivered at once
        clock.now = START + 3 * DAY
        store.mark_delivered(https)  # the other uplink was down for three days

        clock.now = START + 3.5 * DAY
        for _ in range(3):  # one at a time: the oldest deliveries first, the recent ones stay
            with store.transaction() as conn:
                assert prune(conn, now=clock.now, retention_days=30, delivered_keep_days=1,
                             limit=1).delivered == 1  # fmt: skip
        with store.transaction() as conn:
            assert prune(conn, now=clock.now, retention_days=30, delivered_keep_days=1) == Pruned(
                0, 0
            )
        assert [item.seq for item in store.outbox_items(limit=10)] == https


def test_without_uplinks_old_observations_go(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "g.sqlite3", clock=clock) as store:
        store.add_observations(DEVICE, [record(f"old-{n}") for n in range(5)], transaction_bundle)
        clock.now = START + 10 * DAY
        store.add_observations(DEVICE, [record("new")], transaction_bundle)
        with store.transaction() as conn:
            pruned = prune(conn, now=clock.now, retention_days=7, delivered_keep_days=1, limit=3)
        assert pruned.observations == 3  # at most the limit per call
        with store.transaction() as conn:
            prune(conn, now=clock.now, retention_days=7, delivered_keep_days=1, limit=3)
        assert _identifiers(store) == {"new"}


def test_freed_pages_go_back_to_the_filesystem(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "g.sqlite3", clock=clock) as store:
        for batch in range(20):
            store.add_observations(
                DEVICE, [record(f"r-{batch}-{n}") for n in range(100)], transaction_bundle
            )
        before = usage(store.conn)
        clock.now = START + 10 * DAY
        with store.transaction() as conn:
            prune(conn, now=clock.now, retention_days=1, delivered_keep_days=1)
        assert usage(store.conn).free_bytes > 0
        returned = give_back(store.conn)
        after = usage(store.conn)
        assert returned > 0
        assert after.file_bytes == before.file_bytes - returned
        assert after.free_bytes == 0


async def test_the_keeper_prunes_through_the_running_store(tmp_path: Path) -> None:
    clock = Clock()
    store = await AsyncStore.open(tmp_path / "g.sqlite3", clock=clock)
    try:
        await store.write(
            lambda s: s.add_observations(
                DEVICE, [record(f"old-{n}") for n in range(50)], transaction_bundle
            )
        )
        keeper = StoreKeeper(store, StoreSettings(retention_days=1), clock=clock)
        first = await keeper.maintain_once()
        assert first.observations == 0
        clock.now = START + 2 * DAY
        second = await keeper.maintain_once()
        assert second.observations == 50
        assert keeper.pruned_observations == 50
        assert second.usage.free_bytes == 0  # given back
        assert await store.read(lambda s: s.observation_counts()) == {}
    finally:
        await store.close()


def test_making_room_takes_delivered_items_then_the_oldest_forwarded_observations(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with Store(
        tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",), clock=clock
    ) as store:
        for name in ("first", "second", "pending"):
            store.add_observations(DEVICE, [record(name)], transaction_bundle)
        store.add_observations(DEVICE, [record("held")], transaction_bundle, hold=True)
        first, second, _ = store.pending_items("mqtt", limit=10)
        store.mark_delivered([first.seq, second.seq])
        with store.transaction() as conn:
            assert make_room(conn, limit=10) == Pruned(2, 0)  # delivered items first
        with store.transaction() as conn:
            assert make_room(conn, limit=1) == Pruned(0, 1)  # then the oldest forwarded
        assert _identifiers(store) == {"second", "pending", "held"}
        with store.transaction() as conn:
            assert make_room(conn, limit=10) == Pruned(0, 1)
        with store.transaction() as conn:
            assert make_room(conn, limit=10) == Pruned(0, 0)  # what is left must stay
        assert _identifiers(store) == {"pending", "held"}


async def _fill(store: AsyncStore, readings: int, *, prefix: str) -> None:
    for start in range(0, readings, 200):
        batch = [record(f"{prefix}-{n}", f"{60 + n % 50}.0") for n in range(start, start + 200)]
        await store.write(lambda s, b=batch: s.add_observations(DEVICE, b, transaction_bundle))


async def test_the_keeper_keeps_the_database_under_its_budget(tmp_path: Path) -> None:
    settings = StoreSettings(max_bytes=MIB, alarm_fraction=0.5)
    store = await AsyncStore.open(tmp_path / "g.sqlite3")
    try:
        keeper = StoreKeeper(store, settings)
        await _fill(store, 4000, prefix="r")
        before = await store.read(lambda s: usage(s.conn))
        assert before.used_bytes > MIB // 2  # over the alarm level
        done = await keeper.maintain_once()
        assert done.usage.used_bytes <= MIB // 2
        assert done.observations > 0
        assert keeper.as_json()["state"] == "ok"
        counts = await store.read(lambda s: s.observation_counts())
        assert 0 < counts["8867-4"] < 4000  # the oldest went, the newest stayed
        newest = await store.read(lambda s: s.latest_observations(1))
        assert newest[0].identifier == "r-3999"
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _running_keeper(
    tmp_path: Path, settings: StoreSettings
) -> AsyncIterator[tuple[AsyncStore, StoreKeeper]]:
    """A store in ``tmp_path`` and its keeper running, after its first pass."""
    store = await AsyncStore.open(tmp_path / "g.sqlite3")
    keeper = StoreKeeper(store, settings)
    running = asyncio.create_task(keeper.run())
    try:
        await wait_until(lambda: keeper.last is not None, 30, "the first pass")
        yield store, keeper
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await store.close()


async def test_the_keeper_makes_room_as_soon_as_the_alarm_level_is_reached(
    tmp_path: Path,
) -> None:
    """A budget small next to what arrives between scheduled passes (an hour apart here) still
    holds: the keeper measures the database in between and makes room once it is over."""
    settings = StoreSettings(max_bytes=MIB, alarm_fraction=0.5, maintain_every_s=3600)
    async with _running_keeper(tmp_path, settings) as (store, keeper):
        assert keeper.pruned_observations == 0
        await _fill(store, 4000, prefix="r")
        await wait_until(lambda: keeper.pruned_observations > 0, 60, "room made before the hour")
        assert keeper.last is not None
        assert keeper.last.usage.used_bytes <= MIB // 2
        assert keeper.as_json()["state"] == "ok"
        newest = await store.read(lambda s: s.latest_observations(1))
        assert newest[0].identifier == "r-3999"


async def test_the_wal_is_kept_to_a_share_of_a_small_budget(tmp_path: Path) -> None:
    """SQLite checkpoints its WAL every 1000 pages (~4 MiB): next to a 1 MiB budget the keeper
    makes that a 16th of the budget (100 pages at least) and has it cut back after checkpoints."""
    settings = StoreSettings(max_bytes=MIB, maintain_every_s=3600)
    async with _running_keeper(tmp_path, settings) as (store, _):
        bound = 100 * 4096
        assert await store.write(
            lambda s: tuple(s.conn.execute("PRAGMA wal_autocheckpoint").fetchone())
        ) == (100,)
        assert await store.write(
            lambda s: tuple(s.conn.execute("PRAGMA journal_size_limit").fetchone())
        ) == (bound,)
        peak = 0
        for batch in range(10):  # ~3.4 MiB of WAL without the bound
            await _fill(store, 400, prefix=f"b{batch}")
            peak = max(peak, (tmp_path / "g.sqlite3-wal").stat().st_size)
        assert peak < 2 * bound  # the bound and at most one transaction's pages past it


async def test_what_must_stay_raises_the_alarm_and_never_goes(tmp_path: Path) -> None:
    settings = StoreSettings(max_bytes=MIB, alarm_fraction=0.5)
    signer = make_signer(KEY)
    store = await AsyncStore.open(tmp_path / "g.sqlite3", signer=signer, uplinks=("mqtt",))
    try:
        keeper = StoreKeeper(store, settings)
        await _fill(store, 3000, prefix="p")  # nothing delivered: everything must stay
        done = await keeper.maintain_once()
        assert (done.delivered, done.observations) == (0, 0)
        state = keeper.as_json()
        assert state["state"] in ("alarm", "full")
        assert str(state["reason"]).startswith("readings not yet sent or held for a patient fill")
        assert str(state["reason"]).endswith("raise store.max_bytes")
        assert (await store.read(lambda s: s.observation_counts()))["8867-4"] == 3000
    finally:
        await store.close()


async def test_a_full_store_refuses_readings_until_room_is_made(tmp_path: Path) -> None:
    settings = StoreSettings(max_bytes=MIB, alarm_fraction=0.5)
    store = await AsyncStore.open(
        tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",)
    )
    try:
        keeper = StoreKeeper(store, settings)
        await _fill(store, 5000, prefix="p")
        assert (await keeper.maintain_once()).state == "full"
        with pytest.raises(StoreFullError, match=r"raise store\.max_bytes"):
            await store.write(
                lambda s: s.add_observations(DEVICE, [record("late")], transaction_bundle)
            )
        items = await store.read(lambda s: s.pending_items("mqtt", limit=100_000))
        await store.mark_delivered([item.seq for item in items])  # the uplink is back
        assert (await keeper.maintain_once()).state == "ok"
        await store.write(
            lambda s: s.add_observations(DEVICE, [record("late")], transaction_bundle)
        )
    finally:
        await store.close()


async def test_the_gateway_counts_refused_readings_and_its_sessions_go_on(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path, ("thermo",), overrides=FAST) as run:
        await wait_until(lambda: run.status("thermo").observations > 0, 30, "a reading")
        store, keeper = run.gateway.store, run.gateway.keeper
        assert store is not None
        assert keeper is not None
        await store.write(lambda s: setattr(s, "refusing", "the store is full (test)"))
        seen = run.status("thermo").observations
        await wait_until(lambda: keeper.refused_readings > 0, 30, "a refused reading")
        await wait_until(lambda: run.status("thermo").observations > seen + 1, 30, "more")
        assert run.status("thermo").ingest_errors == 0
        assert run.states() == {"thermo": "streaming"}
        assert keeper.as_json()["refused_readings"] == keeper.refused_readings
