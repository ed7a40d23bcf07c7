"""Remote review with no inbound connection: the draft leaves on ``drafts``, the hospital's
`bedside review approve --via-mqtt` sends the signed decision on ``reviews``, the gateway applies
it and the final report, signed by the clinician and the gateway, arrives at `bedside receive`;
replayed and forged decisions change nothing and are audited. Real mosquitto, real gateway."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from gateway.fhir.review import report_entry
from gateway.forward.settings import MqttSettings
from gateway.review.decision import DecisionDoc
from gateway.review.keys import generate, read_private, write_private
from gateway.review.remote import decision_message, publish
from gateway.store import audit as audit_table
from gateway.users import UserDirectory
from tests import fixtures_mqtt
from tests.harness import running_gateway, wait_until
from tests.mosquitto import Mosquitto
from tests.processes import BEDSIDE, bedside, run_bedside
from tests.review_env import draft_bundle, received_reports

broker = fixtures_mqtt.broker


def _statuses(out: Path, draft: str) -> list[str]:
    return sorted(report_entry(b)["resource"]["status"] for b, _ in received_reports(out, draft))


def _audit_events(out: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(out.glob("*.json")) if out.is_dir() else []:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        events += [
            e["resource"]
            for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "AuditEvent"
        ]
    return events


async def test_a_decision_over_mqtt_makes_the_same_final_report(
    tmp_path: Path, broker: Mosquitto
) -> None:
    data_dir, out, keys = tmp_path / "gateway", tmp_path / "received", tmp_path / "keys"
    keys.mkdir()
    shown = run_bedside("keys", "show", "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    (keys / "gateway.jwk").write_text(shown.stdout.strip().splitlines()[-1])
    users = UserDirectory(data_dir)
    users.add("clara", "clinician")
    clinician = generate()
    key_file = tmp_path / "clara.jwk"
    write_private(key_file, clinician)
    users.add_key("clara", clinician.public_jwk)
    users.close()
    (keys / "clara.jwk").write_text(json.dumps(clinician.public_jwk))

    receiver = subprocess.Popen(  # noqa: ASYNC220 - the hospital's receiver runs beside the test
        [str(BEDSIDE), "receive", "--mqtt", broker.url, "--out", str(out), "--keys", str(keys)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        async with running_gateway(
            data_dir, ["thermo"], seed=5, mqtt={"url": broker.url},
            assistant={"enabled": False}, patient={"reference": "Patient/p-42"},
        ) as run:  # fmt: skip
            gateway_id = run.gateway.identity.gateway_id
            assert run.gateway.reviews is not None
            # the receiver subscribes when it starts: wait for it to take something first
            await wait_until(lambda: out.is_dir() and any(out.glob("*.json")), 30, "the receiver")
            await run.gateway.reviews.add_draft("c9", draft_bundle("c9"))
            await wait_until(lambda: received_reports(out, "c9"), 30, "the draft at the receiver")
            ((draft, draft_path),) = received_reports(out, "c9")
            assert report_entry(draft)["resource"]["status"] == "partial"

            edit = tmp_path / "edit.json"
            edit.write_text(json.dumps({
                "conclusion": "Temperature normal; no treatment needed.",
                "medications": {"c9-1": {"decision": "accept"}},
            }))  # fmt: skip
            sent = await bedside(
                "review", "approve", "c9", "--key", str(key_file), "--edit", str(edit),
                "--via-mqtt", broker.url, "--draft", str(draft_path), "--gateway", gateway_id,
                "--reviewer", "clara",
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            decision_id = json.loads(sent.stdout)["decision_id"]
            await wait_until(
                lambda: "final" in _statuses(out, "c9"), 30, "the final report at the receiver"
            )
            final, final_path = next(
                (b, p)
                for b, p in received_reports(out, "c9")
                if report_entry(b)["resource"]["status"] == "final"
            )
            report = report_entry(final)["resource"]
            assert report["conclusion"] == "Temperature normal; no treatment needed."
            verified = run_bedside("verify", str(final_path), "--key", str(keys))
            assert verified.returncode == 0, verified.stderr
            assert f"approved by clara with key {read_private(key_file).kid}" in verified.stdout

            # a forged decision and a message that is none: refused and audited
            store = run.gateway.store
            assert store is not None
            versions = (await run.gateway.reviews.get("c9"))["versions"]
            assert [v["action"] for v in versions] == ["drafted", "edited", "approved"]
            settings = MqttSettings(url=broker.url)
            forged = generate()
            doc = DecisionDoc.new(
                gateway=gateway_id, draft="c9", version=3, action="reject", reviewer="clara",
                at=dt.datetime.now(dt.UTC), reason="forged",
            )  # fmt: skip
            assert str(doc.decision_id) != decision_id
            final_unsigned = {k: v for k, v in final.items() if k != "signature"}
            await asyncio.to_thread(
                publish, settings, gateway_id, decision_message(final_unsigned, doc, forged)
            )
            await asyncio.to_thread(publish, settings, gateway_id, {"not": "a decision"})

            def refusals() -> list[dict[str, Any]]:
                return [e for e in _audit_events(out) if e["outcome"] == "4"]

            await wait_until(
                lambda: len(refusals()) >= 2, 60, "the refusals audited at the receiver"
            )
            details = sorted(e.get("outcomeDesc", "") for e in refusals())
            assert any(d.startswith("refused (bad_signature)") for d in details), details
            assert any("not a signed decision" in d for d in details), details
            assert _statuses(out, "c9").count("final") == 1
            assert (await run.gateway.reviews.get("c9"))["status"] == "final"
            check = await store.read(lambda s: audit_table.verify(s.conn))
            assert check.ok
    finally:
        receiver.terminate()
        _, stderr = await asyncio.to_thread(receiver.communicate, None, 20)
    assert receiver.returncode == 0, stderr
