"""The clinician's review in `bedside demo`, as the issue's "done" describes it: a consultation
with the embedded model closes into a draft; the demo clinician lists it, edits the conclusion and
approves it with a key made by `bedside review keygen`; the final report, signed by the clinician
and the gateway and carrying its PDF, reaches `bedside receive` over a real mosquitto; the demo
technician's approval is refused; `bedside audit verify` passes, then fails once one audit entry
is edited."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.fhir.review import report_entry
from gateway.store.store import store_path
from tests import fixtures_mqtt
from tests.demo_process import demo_arguments, wait_healthz
from tests.harness import wait_until
from tests.mosquitto import Mosquitto
from tests.processes import BEDSIDE, bedside, free_port
from tests.review_env import received_reports

broker = fixtures_mqtt.broker
# A demo process loading the model, then a consultation: bounded by the test's own limits (the
# API's readiness, a close's 300 s), not by the suite's 120 s guard against hangs.
pytestmark = pytest.mark.timeout(480)


def _finals(out: Path, cid: str) -> list[tuple[dict[str, Any], Path]]:
    return [
        (b, p) for b, p in received_reports(out, cid)
        if report_entry(b)["resource"]["status"] == "final"
    ]  # fmt: skip


async def test_review_and_sign_off_in_the_demo(tmp_path: Path, broker: Mosquitto) -> None:
    data_dir, out, keys = tmp_path / "demo", tmp_path / "received", tmp_path / "keys"
    keys.mkdir()
    shown = await bedside("keys", "show", "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    (keys / "gateway.jwk").write_text(shown.stdout.strip().splitlines()[-1])
    made = await bedside("review", "keygen", str(tmp_path / "clinician.jwk"))
    assert made.returncode == 0, made.stderr
    (keys / "clinician.jwk").write_text(made.stdout)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = subprocess.Popen(  # noqa: ASYNC220 - the hospital's receiver runs beside the test
        [str(BEDSIDE), "receive", "--mqtt", broker.url, "--out", str(out), "--keys", str(keys)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    demo = subprocess.Popen(  # noqa: ASYNC220 - the demo runs beside the test
        [str(BEDSIDE), *demo_arguments(port, data_dir), "--mqtt", broker.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    try:
        await wait_healthz(base, demo, ready=True)
        accounts = json.loads((data_dir / "demo-users.json").read_text(encoding="utf-8"))
        clinician, technician = accounts["clinician"], accounts["technician"]
        registered = await bedside(
            "users", "key", clinician["username"], str(keys / "clinician.jwk"),
            "--data-dir", str(data_dir),
        )  # fmt: skip
        assert registered.returncode == 0, registered.stderr

        auth = {"Authorization": f"Bearer {clinician['token']}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            async with session.post(f"{base}/api/consultations", json={}) as r:
                assert r.status == 201, await r.text()
                cid = (await r.json())["id"]
            async with session.post(
                f"{base}/api/consultations/{cid}/close", timeout=aiohttp.ClientTimeout(total=300)
            ) as r:
                assert r.status == 200, await r.text()
                draft = await r.json()
        assert report_entry(draft)["resource"]["status"] == "partial"

        listed = await bedside("review", "list", "--url", base, token=clinician["token"])
        assert listed.returncode == 0, listed.stderr
        assert [d["id"] for d in json.loads(listed.stdout)] == [cid]

        key = str(tmp_path / "clinician.jwk")
        refused = await bedside(
            "review", "approve", cid, "--key", key, "--url", base, token=technician["token"]
        )
        assert refused.returncode == 1
        assert "may not" in refused.stderr

        edit = tmp_path / "edit.json"
        edit.write_text(json.dumps({"conclusion": "Reviewed: stable vital signs."}))
        approved = await bedside(
            "review", "approve", cid, "--key", key, "--edit", str(edit), "--url", base,
            token=clinician["token"],
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr

        await wait_until(lambda: _finals(out, cid), 60, "the final report at the receiver")
        ((final, path),) = _finals(out, cid)
        report = report_entry(final)["resource"]
        assert report["conclusion"] == "Reviewed: stable vital signs."
        (form,) = report["presentedForm"]
        pdf = base64.b64decode(form["data"])
        assert pdf.startswith(b"%PDF-")
        verified = await bedside("verify", str(path), "--key", str(keys))
        assert verified.returncode == 0, verified.stderr
        assert f"approved by {clinician['username']}" in verified.stdout

        checked = await bedside("audit", "verify", "--data-dir", str(data_dir))
        assert checked.returncode == 0, checked.stdout
        assert json.loads(checked.stdout)["ok"] is True
        db = sqlite3.connect(store_path(data_dir), timeout=10)
        try:
            entry = db.execute("SELECT entry FROM audit ORDER BY seq LIMIT 1").fetchone()[0]
            db.execute(
                "UPDATE audit SET entry = ? WHERE seq = (SELECT min(seq) FROM audit)",
                (entry.replace('"outcome":"success"', '"outcome":"failure"'),),
            )
            db.commit()
        finally:
            db.close()
        broken = await bedside("audit", "verify", "--data-dir", str(data_dir))
        assert broken.returncode == 1
        assert json.loads(broken.stdout)["problem"].endswith("was changed")
    finally:
        demo.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(demo.communicate, None, 30)
        receiver.terminate()
        await asyncio.to_thread(receiver.communicate, None, 20)
    assert demo.returncode == 0, stderr
