"""Writes the upgrade fixture: a store as a released gateway leaves it (devices, heart rates and ECG
strips, outbox items pending, delivered and dead, a Bundle held for want of a patient, audit
entries) and ``expected.json`` with what it holds.

Run it with the code of the release the fixture stands for, in a worktree of that release::

    git worktree add /tmp/release <commit>
    cd /tmp/release && .venv/bin/python /path/to/tests/data/release_store/make.py OUTDIR

tests/test_store_upgrade.py opens the fixture with the current code, which migrates it.
Uses only store APIs every release since schema 4 has.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.fhir import jsonio
from gateway.fhir.audit import audit_entry
from gateway.forward.signing import Signer, SigningKey
from gateway.store import ObservationRecord, Store
from gateway.store import audit as audit_table
from gateway.store.schema import user_version

DEVICE = "F0:12:34:56:78:9A"
START = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
PHD = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"


def resource(identifier: str, n: int) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": PHD, "value": identifier}],
        "status": "final",
        "effectiveDateTime": (START + dt.timedelta(seconds=n)).isoformat(),
    }
    if n % 4 == 0:  # an ECG strip: 250 samples
        samples = " ".join(str(2048 + (n * 7 + i * 13) % 97 - 48) for i in range(250))
        base["code"] = {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "131330"}]}
        base["valueSampledData"] = {
            "origin": {"value": Decimal("-3.40"), "unit": "mV"},
            "period": Decimal("4.000"),
            "factor": Decimal("0.005"),
            "dimensions": 1,
            "data": samples,
        }
    else:
        base["code"] = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
        base["valueQuantity"] = {"value": Decimal(f"{60 + n % 30}.0"), "unit": "/min"}
    return base


def bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": o, "request": {"method": "POST", "url": "Observation"}}
            for o in observations
        ],
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gateway.sqlite3"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    key = SigningKey.generate()
    moments = iter(START + dt.timedelta(seconds=s) for s in range(100_000))
    expected: dict[str, Any] = {"observations": {}}
    signer = Signer(key, {"reference": "Device/gateway"}, clock=lambda: START)
    with Store(path, signer=signer, uplinks=("mqtt",), clock=lambda: next(moments)) as store:
        store.upsert_device(DEVICE, "ecg", "Bedside ECG 9A", {"Model Number String": "BS-ECG100"})
        for n in range(40):
            identifier = f"release-{n:02d}"
            observation = resource(identifier, n)
            record = ObservationRecord(identifier, "8867-4", DEVICE, START, observation)
            store.add_observations(DEVICE, [record], bundle, hold=n == 39)
            expected["observations"][identifier] = jsonio.dumps(observation)
        items = store.pending_items("mqtt", limit=100)
        store.mark_delivered([item.seq for item in items[:20]])
        store.mark_dead(items[20].seq, "refused by the FHIR server: 422")
        with store.transaction() as conn:
            for n in range(5):
                entry = audit_entry(at=START, action="read", user="tech", what="Sensor",
                                    what_id=DEVICE, detail=f"entry {n}")  # fmt: skip
                audit_table.append(conn, entry)
        stats = store.outbox_stats()
        expected["outbox"] = {"pending": stats.pending, "delivered": stats.delivered,
                              "dead": stats.dead, "held": stats.held}  # fmt: skip
        expected["pending_payloads"] = [i.payload for i in store.pending_items("mqtt", limit=100)]
        expected["audit_entries"] = 5
        expected["schema"] = user_version(store.conn)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
