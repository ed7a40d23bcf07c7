"""The SQLite store: schema migrations, devices, Observations, the outbox and its quota."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Awaitable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.fhir import jsonio
from gateway.forward.signing import SigningKey, verify_bundle
from gateway.store import (
    ObservationRecord,
    OutboxState,
    OutboxStats,
    SchemaVersionError,
    Store,
    StoreClosedError,
    TopicKind,
)
from gateway.store.schema import MIGRATIONS, migrate, user_version
from gateway.store.store import connect
from tests.fixtures_mqtt import DEVICE, make_signer, record, transaction_bundle

KEY = SigningKey.generate()
UPLINKS = ("mqtt", "https")


class Clock:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with Store(
        tmp_path / "gateway.sqlite3", signer=make_signer(KEY), uplinks=UPLINKS, clock=clock
    ) as opened:
        yield opened


def payload_bundle(payload: str) -> dict[str, Any]:
    bundle: dict[str, Any] = jsonio.loads(payload)
    return bundle


# -- schema ------------------------------------------------------------------------------------


def test_fresh_store_is_wal_at_the_latest_version(store: Store) -> None:
    assert user_version(store.conn) == len(MIGRATIONS) == 6
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_upgrade_from_version_1_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = connect(path)
    assert migrate(conn, path, MIGRATIONS[:1]) == 1
    conn.execute(
        "INSERT INTO observations (identifier, code, device_address, effective, received, "
        "resource) VALUES ('old-1', '8867-4', ?, NULL, '2024-01-01T00:00:00.000000+00:00', '{}')",
        (DEVICE,),
    )
    conn.close()
    with Store(path) as upgraded:
        assert user_version(upgraded.conn) == len(MIGRATIONS)
        assert upgraded.observation_counts() == {"8867-4": 1}
        assert upgraded.outbox_stats() == OutboxStats(0, 0, 0, False, quota_bytes=512 * 2**20)


def test_upgrade_to_version_4_keeps_the_outbox_and_its_sequence(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    conn = connect(path)
    assert migrate(conn, path, MIGRATIONS[:3]) == 3
    for seq, state in ((1, "delivered"), (2, "pending"), (3, "delivered")):
        conn.execute(
            "INSERT INTO outbox (seq, id, uplink, kind, payload, size, state, created, updated) "
            "VALUES (?, ?, 'mqtt', 'drafts', '{}', 2, ?, '2024-01-01', '2024-01-01')",
            (seq, f"b{seq}", state),
        )
    conn.execute("DELETE FROM outbox WHERE seq = 3")  # pruned: seq 3 must never come back
    conn.close()
    with Store(path) as upgraded:
        rows = upgraded.conn.execute("SELECT seq, state FROM outbox ORDER BY seq").fetchall()
        assert [tuple(r) for r in rows] == [(1, "delivered"), (2, "pending")]
        assert upgraded.outbox_stats().pending == 1
        upgraded.conn.execute(
            "INSERT INTO outbox (id, uplink, kind, payload, size, created, updated) "
            "VALUES ('a', 'mqtt', 'audit', '{}', 2, '2024-01-02', '2024-01-02')"
        )
        (seq,) = upgraded.conn.execute("SELECT seq FROM outbox WHERE id = 'a'").fetchone()
        assert seq == 4
        assert upgraded.outbox_stats().pending == 2


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    conn = connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(SchemaVersionError) as caught:
        Store(path)
    assert (caught.value.found, caught.value.known) == (7, len(MIGRATIONS))
    assert str(path) in str(caught.value)
    assert "upgrade the gateway" in str(caught.value)


def test_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk on fire")

    path = tmp_path / "x.sqlite3"
    conn = connect(path)
    with pytest.raises(RuntimeError, match="disk on fire"):
        migrate(conn, path, (*MIGRATIONS[:1], broken))
    assert user_version(conn) == 1
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables
    assert "observations" in tables


# -- devices -----------------------------------------------------------------------------------


def test_upsert_device(store: Store, clock: Clock) -> None:
    store.upsert_device(DEVICE, "ecg", "ECG patch", {"system_id": "C0FFEE0000000001"})
    first = store.devices()[0]
    store.upsert_device(DEVICE, "ecg", None, {})  # seen again, nothing new to say
    store.upsert_device(DEVICE, "ecg", "ECG patch 2", {"system_id": "C0FFEE0000000001", "fw": "2"})
    (device,) = store.devices()
    assert device == type(device)(
        address=DEVICE,
        kind="ecg",
        name="ECG patch 2",
        system_id="C0FFEE0000000001",
        info={"system_id": "C0FFEE0000000001", "fw": "2"},
        first_seen=first.first_seen,
        last_seen=clock.now,
    )


# -- observations ------------------------------------------------------------------------------


def test_add_observations_stores_new_ones_and_enqueues_their_bundle(store: Store) -> None:
    new = store.add_observations(DEVICE, [record("a"), record("b")], transaction_bundle)
    assert new == ["a", "b"]
    again = store.add_observations(
        DEVICE, [record("b"), record("c"), record("c")], transaction_bundle
    )
    assert again == ["c"]
    assert store.add_observations(DEVICE, [record("a")], transaction_bundle) == []
    assert store.observation_counts() == {"8867-4": 3}

    for uplink in UPLINKS:
        items = store.pending_items(uplink, limit=10)
        assert [item.kind for item in items] == [TopicKind.OBSERVATIONS] * 2
        bundles = [payload_bundle(item.payload) for item in items]
        assert [item.id for item in items] == [b["id"] for b in bundles]
        idents = [[e["resource"]["identifier"][0]["value"] for e in b["entry"]] for b in bundles]
        assert idents == [["a", "b"], ["c"]]
        for b in bundles:
            assert verify_bundle(b, {KEY.kid: KEY.public_key}) == KEY.kid
    assert (
        store.pending_items("mqtt", limit=10)[0].id == store.pending_items("https", limit=1)[0].id
    )


def test_without_uplinks_nothing_is_enqueued(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as plain:
        assert plain.add_observations(DEVICE, [record("a")], transaction_bundle) == ["a"]
        assert plain.enqueue_bundle(TopicKind.DEVICES, {"resourceType": "Bundle"}) is None
        assert plain.outbox_stats().pending == 0


def test_failing_bundle_factory_stores_nothing(store: Store) -> None:
    def broken(observations: list[dict[str, Any]]) -> dict[str, Any]:
        raise ValueError("mapping failed")

    with pytest.raises(ValueError, match="mapping failed"):
        store.add_observations(DEVICE, [record("a")], broken)
    assert store.observation_counts() == {}
    assert store.outbox_stats().pending == 0
    assert store.add_observations(DEVICE, [record("a")], transaction_bundle) == ["a"]


def test_observation_from_another_device_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="not AA:AA"):
        store.add_observations("AA:AA", [record("a")], transaction_bundle)


def test_naive_effective_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ObservationRecord("x", "8867-4", DEVICE, dt.datetime(2024, 1, 1), {})  # noqa: DTZ001


def test_queries(store: Store, clock: Clock) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    store.add_observations(
        DEVICE,
        [
            record("a", "70.0", effective=dt.datetime(2024, 5, 1, 14, 0, tzinfo=plus2)),
            record("b", "72.50", effective=dt.datetime(2024, 5, 1, 13, 0, tzinfo=dt.UTC)),
            record("c", "71", effective=None),
        ],
        transaction_bundle,
    )
    assert store.last_record_time(DEVICE, "8867-4") == dt.datetime(2024, 5, 1, 13, 0, tzinfo=dt.UTC)
    assert store.last_record_time(DEVICE, "150456") is None
    assert store.last_record_time("AA:AA", "8867-4") is None
    latest = store.latest_observations(2)
    assert [o.identifier for o in latest] == ["c", "b"]
    assert latest[1].resource["valueQuantity"]["value"] == Decimal("72.50")
    assert str(latest[1].resource["valueQuantity"]["value"]) == "72.50"  # precision kept
    assert latest[1].effective == dt.datetime(2024, 5, 1, 13, 0, tzinfo=dt.UTC)
    assert latest[0].effective is None
    assert latest[0].received == clock.now  # one clock reading per call


# -- outbox ------------------------------------------------------------------------------------


def test_outbox_states(store: Store) -> None:
    for name in "abcd":
        store.add_observations(DEVICE, [record(name)], transaction_bundle)
    items = store.pending_items("mqtt", limit=10)
    assert [i.seq for i in items] == sorted(i.seq for i in items)
    assert store.pending_items("mqtt", after_seq=items[1].seq, limit=10) == items[2:]

    assert store.mark_delivered([items[0].seq, items[1].seq]) == 2
    assert store.mark_delivered([items[0].seq]) == 0  # already delivered
    store.record_failures({items[2].seq: "connection refused"})
    store.mark_dead(items[3].seq, "HTTP 412: multiple matches")
    assert store.outbox_stats().as_dict() == {
        "pending": 1 + 4,  # items[2] on mqtt, and all four on https
        "delivered": 2,
        "dead": 1,
        "quota_alarm": False,
    }
    (dead,) = store.outbox_items(state=OutboxState.DEAD)
    assert (dead.seq, dead.attempts, dead.last_error) == (
        items[3].seq,
        1,
        "HTTP 412: multiple matches",
    )
    retrying = store.outbox_items(uplink="mqtt", state=OutboxState.PENDING)
    assert [(i.seq, i.attempts, i.last_error) for i in retrying] == [
        (items[2].seq, 1, "connection refused")
    ]
    assert store.retry_dead("https") == 0
    assert store.retry_dead() == 1
    assert [i.seq for i in store.pending_items("mqtt", limit=10)] == [items[2].seq, items[3].seq]


def test_enqueue_bundle_assigns_an_id(store: Store) -> None:
    bundle_id = store.enqueue_bundle(TopicKind.DEVICES, {"resourceType": "Bundle", "type": "batch"})
    assert bundle_id is not None
    (item,) = store.pending_items("mqtt", limit=10)
    assert (item.id, item.kind) == (bundle_id, TopicKind.DEVICES)
    assert payload_bundle(item.payload)["id"] == bundle_id


def test_outbox_commits_are_synchronous_full(store: Store) -> None:
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    store.upsert_device(DEVICE, "ecg", None, {})
    store.add_observations(DEVICE, [record("a")], transaction_bundle)
    store.mark_delivered([1])
    pragmas = [s for s in statements if s.startswith("PRAGMA synchronous")]
    assert pragmas == [
        "PRAGMA synchronous = NORMAL",  # devices only
        "PRAGMA synchronous = FULL",  # observations + outbox
        "PRAGMA synchronous = FULL",  # outbox state
    ]


def test_quota_prunes_delivered_first_and_never_undelivered(tmp_path: Path) -> None:
    with Store(
        tmp_path / "q.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",), quota_bytes=12_000
    ) as s:
        size = 0
        for i in range(6):
            s.add_observations(DEVICE, [record(f"d{i}")], transaction_bundle)
            size = s.outbox_stats().pending_bytes // (i + 1)
        s.mark_delivered([i.seq for i in s.pending_items("mqtt", limit=100)])
        assert s.outbox_stats().delivered == 6
        count = 12_000 // size + 2  # more undelivered items than the quota holds
        for i in range(count):
            s.add_observations(DEVICE, [record(f"p{i}")], transaction_bundle)
        stats = s.outbox_stats()
        assert (stats.pending, stats.delivered, stats.dead) == (count, 0, 0)  # delivered pruned
        assert stats.quota_alarm
        assert stats.pending_bytes > stats.quota_bytes
        # Delivering them clears the alarm; the next enqueue prunes, oldest delivered first.
        s.mark_delivered([i.seq for i in s.pending_items("mqtt", limit=100)])
        assert not s.outbox_stats().quota_alarm
        s.add_observations(DEVICE, [record("last")], transaction_bundle)
        remaining = s.outbox_items(state=OutboxState.DELIVERED, limit=100)
        assert remaining
        assert [i.seq for i in remaining] == sorted(i.seq for i in remaining)
        assert remaining[-1].seq == s.pending_items("mqtt", limit=1)[0].seq - 1  # newest kept
        stats = s.outbox_stats()
        assert stats.pending_bytes + stats.delivered_bytes <= stats.quota_bytes


def test_closed_store_says_so(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.sqlite3")
    s.close()
    with pytest.raises(StoreClosedError, match="closed"):
        s.observation_counts()


# -- asyncio facade ---------------------------------------------------------------------------


async def test_async_store_runs_sqlite_off_the_loop(tmp_path: Path) -> None:
    from gateway.store import AsyncStore

    threads: list[str] = []

    def factory(observations: list[dict[str, Any]]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return transaction_bundle(observations)

    store = await AsyncStore.open(
        tmp_path / "a.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",)
    )
    try:
        event = store.outbox_event("mqtt")
        assert not event.is_set()
        assert await store.add_observations(DEVICE, [record("a")], factory) == ["a"]
        assert event.is_set()
        assert threads == ["store-writer"]
        assert threading.current_thread().name != "store-writer"
        assert await store.observation_counts() == {"8867-4": 1}
        assert await store.outbox_stats() == {
            "pending": 1,
            "delivered": 0,
            "dead": 0,
            "quota_alarm": False,
        }
    finally:
        await store.close()


def broken_factory(observations: list[dict[str, Any]]) -> dict[str, Any]:
    raise ValueError("mapping failed")


async def test_concurrent_writes_are_grouped_and_isolated(tmp_path: Path) -> None:
    import asyncio

    from gateway.store import AsyncStore

    store = await AsyncStore.open(tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=["mqtt"])
    try:
        calls: list[Awaitable[list[str]]] = [
            store.add_observations(DEVICE, [record(f"o{i % 40}")], transaction_bundle)
            for i in range(60)
        ]
        calls.append(store.add_observations(DEVICE, [record("x")], broken_factory))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert store.group_commits > 0
        assert isinstance(results[-1], ValueError)  # its own write rolled back …
        new = [ident for r in results[:-1] if isinstance(r, list) for ident in r]
        assert sorted(new) == sorted(f"o{i}" for i in range(40))  # … the others did not
        assert await store.observation_counts() == {"8867-4": 40}
        assert (await store.outbox_stats())["pending"] == 40
        pending = await store.pending_items("mqtt", limit=100)
        assert await store.mark_delivered([i.seq for i in pending]) == 40
    finally:
        await store.close()
