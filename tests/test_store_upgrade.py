"""Upgrade: a store written by the released gateway (tests/data/release_store/, made by its
``make.py`` with that release's code, schema 4) opened by this code: migrated, nothing lost —
every Observation reads back as the same JSON, the outbox is where it was (the pending Bundles
byte for byte), the held Bundle still held, the audit chain intact — and it goes on storing.
Opened by the running gateway, it is converted once for incremental vacuum (when the disk has
room for the rewrite; else it runs on as it was, with a warning)."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.fhir import jsonio
from gateway.store import Store, retention
from gateway.store import audit as audit_table
from gateway.store.aio import AsyncStore
from gateway.store.schema import MIGRATIONS, user_version
from tests.fixtures_mqtt import DEVICE, make_signer, record, transaction_bundle
from tests.test_store import KEY

FIXTURE = Path(__file__).parent / "data" / "release_store"


def test_the_released_store_is_migrated_with_nothing_lost(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    assert expected["schema"] < len(MIGRATIONS)  # the fixture is older than this code
    path = tmp_path / "gateway.sqlite3"
    shutil.copy(FIXTURE / "gateway.sqlite3", path)
    with Store(path, signer=make_signer(KEY), uplinks=("mqtt",)) as store:
        assert user_version(store.conn) == len(MIGRATIONS)
        read = {o.identifier: jsonio.dumps(o.resource) for o in store.latest_observations(1000)}
        assert read == expected["observations"]
        packed = store.conn.execute(
            "SELECT count(*) FROM observations WHERE samples IS NOT NULL"
        ).fetchone()[0]
        assert packed == 10  # the ECG strips' samples are now kept compactly
        stats = store.outbox_stats()
        assert {"pending": stats.pending, "delivered": stats.delivered, "dead": stats.dead,
                "held": stats.held} == expected["outbox"]  # fmt: skip
        payloads = [item.payload for item in store.pending_items("mqtt", limit=100)]
        assert payloads == expected["pending_payloads"]
        check = audit_table.verify(store.conn)
        assert check.ok
        assert check.entries == expected["audit_entries"]
        assert store.add_observations(DEVICE, [record("after-upgrade")], transaction_bundle) == [
            "after-upgrade"
        ]


def _auto_vacuum(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(mode)
    finally:
        conn.close()


async def test_the_running_gateway_converts_an_old_store_for_incremental_vacuum_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    path = tmp_path / "gateway.sqlite3"
    shutil.copy(FIXTURE / "gateway.sqlite3", path)
    assert _auto_vacuum(path) == 0  # made before schema 5
    with caplog.at_level(logging.INFO, logger=retention.__name__):
        store = await AsyncStore.open(path, signer=make_signer(KEY), uplinks=["mqtt"])
        await store.close()
    assert _auto_vacuum(path) == retention.INCREMENTAL
    converting, converted = (r.getMessage() for r in caplog.records)
    assert "converting for incremental vacuum, once" in converting
    assert "converted in" in converted
    caplog.clear()
    store = await AsyncStore.open(path, signer=make_signer(KEY), uplinks=["mqtt"])
    try:  # once: nothing to do the next time
        observations = await store.latest_observations(1000)
    finally:
        await store.close()
    assert not caplog.records
    assert {o.identifier: jsonio.dumps(o.resource) for o in observations} == expected[
        "observations"
    ]


async def test_without_room_for_the_rewrite_the_store_opens_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.sqlite3"
    shutil.copy(FIXTURE / "gateway.sqlite3", path)
    size = path.stat().st_size

    def nearly_full(where: Any) -> SimpleNamespace:  # room for one copy of the file, not two
        return SimpleNamespace(total=10 * size, used=9 * size, free=size)

    monkeypatch.setattr(retention.shutil, "disk_usage", nearly_full)
    with caplog.at_level(logging.WARNING, logger=retention.__name__):
        store = await AsyncStore.open(path, signer=make_signer(KEY), uplinks=["mqtt"])
        try:
            assert await store.add_observations(DEVICE, [record("later")], transaction_bundle)
        finally:
            await store.close()
    (warning,) = caplog.records
    assert "not converted for incremental vacuum" in warning.getMessage()
    assert "free some and restart" in warning.getMessage()
    assert _auto_vacuum(path) == 0
