"""`bedside demo` with a small disk budget, as a box would run for months: the database stays
under `store.max_bytes` while Observations keep arriving and being forwarded over a real
mosquitto to `bedside receive` — every Observation the gateway stored and was to send reaches
the receiver, the ones it let go of included — and `PRAGMA integrity_check` passes after
(docs/architecture.md, "Months unattended")."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from pathlib import Path

from gateway.store.settings import MIB
from gateway.store.store import store_path
from tests import fixtures_mqtt
from tests.harness import wait_until
from tests.mosquitto import Mosquitto
from tests.processes import BEDSIDE, bedside

broker = fixtures_mqtt.broker

BUDGET = MIB  # the smallest budget the settings accept
ALARM_FRACTION = 0.25  # room is made from ~260 kB on: reached in the run, on a busy machine too
SECONDS = 45


def _received_observations(out: Path) -> tuple[int, set[str]]:
    """The Observations in the Bundles `bedside receive` wrote to ``out``: how many (one entry
    each: every Bundle is written once) and the keys the store knows them by (the entry's
    ``fullUrl`` or the PHD identifier, docs/contracts.md)."""
    count, keys = 0, set()
    for path in out.glob("*.json") if out.is_dir() else []:
        for entry in json.loads(path.read_text(encoding="utf-8")).get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == "Observation":
                count += 1
                keys.add(entry["fullUrl"])
                keys |= {identifier["value"] for identifier in resource.get("identifier", [])}
    return count, keys


async def test_the_demo_stays_within_a_small_budget_and_forwards_everything(
    tmp_path: Path, broker: Mosquitto
) -> None:
    data_dir, out, keys = tmp_path / "demo", tmp_path / "received", tmp_path / "keys"
    keys.mkdir()
    shown = await bedside("keys", "show", "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    (keys / "gateway.jwk").write_text(shown.stdout.strip().splitlines()[-1])
    receiver = subprocess.Popen(  # noqa: ASYNC220 - the hospital's receiver runs beside the test
        [str(BEDSIDE), "receive", "--mqtt", broker.url, "--out", str(out), "--keys", str(keys)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stderr is not None
        subscribed = await asyncio.wait_for(asyncio.to_thread(receiver.stderr.readline), 60)
        assert "subscribed to" in subscribed, subscribed  # else it would miss the first ones
        demo = await asyncio.to_thread(
            subprocess.run,
            [
                str(BEDSIDE), "demo", "--headless", "--for", str(SECONDS),
                "--mqtt", broker.url, "--data-dir", str(data_dir), "--http-port", "0",
            ],
            capture_output=True,
            text=True,
            timeout=SECONDS + 120,
            check=False,
            env=os.environ | {
                "HF_HUB_OFFLINE": "1",
                "BEDSIDE_STORE__MAX_BYTES": str(BUDGET),
                "BEDSIDE_STORE__ALARM_FRACTION": str(ALARM_FRACTION),
                "BEDSIDE_STORE__MAINTAIN_EVERY_S": "2",
            },
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        summary = json.loads(demo.stdout)
        storage = summary["storage"]
        assert storage["budget_bytes"] == BUDGET
        assert storage["used_bytes"] <= BUDGET * ALARM_FRACTION
        assert storage["state"] == "ok", storage
        assert storage["refused_readings"] == 0
        # the budget was reached: delivered items and forwarded Observations were let go
        assert storage["pruned_delivered"] > 0
        assert storage["pruned_observations"] > 0
        assert summary["outbox"]["dead"] == 0
        assert summary["outbox"]["held"] == 0

        db = sqlite3.connect(store_path(data_dir))
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
            assert pages * page_size <= BUDGET
            (kept,) = db.execute("SELECT count(*) FROM observations").fetchone()
            sent = {
                key
                for (key,) in db.execute(
                    "SELECT identifier FROM observations WHERE bundle IS NOT NULL"
                )
            }
            (waveforms,) = db.execute(
                "SELECT count(*) FROM observations WHERE samples IS NOT NULL"
            ).fetchone()
        finally:
            db.close()
        assert kept > 0
        assert waveforms > 0  # ECG and pleth strips still arriving at the end
        # every Observation ever stored reached the hospital once, the ones let go of included
        # (but those without a true date: kept here, never sent — docs/standards.md, "Time")
        undated = sum(device["undated"] for device in summary["devices"])
        to_send = kept + storage["pruned_observations"] - undated
        await wait_until(
            lambda: _received_observations(out)[0] >= to_send,
            60,
            "every stored Observation at the receiver",
        )
        count, received = _received_observations(out)
        assert count == to_send
        assert sent <= received
    finally:
        receiver.terminate()
        await asyncio.to_thread(receiver.communicate, None, 20)
