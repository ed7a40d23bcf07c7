"""Upgrade: a store written by the released gateway (tests/data/release_store/, made by its
``make.py`` with that release's code, schema 4) opened by this code: migrated, nothing lost —
every Observation reads back as the same JSON, the outbox is where it was (the pending Bundles
byte for byte), the held Bundle still held, the audit chain intact — and it goes on storing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gateway.fhir import jsonio
from gateway.store import Store
from gateway.store import audit as audit_table
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
