"""Review benchmark: what a clinician's signed approval costs the gateway, and what the audit
trail's hash chain adds to a durable write.

A real store (with an outbox), the review API served on a free port, a clinician with a
registered key. Each round makes a new draft (a consultation's Bundle with a 2 s ECG strip, two
Observations and two medication proposals), then through HTTP:

- baseline: ``GET /api/drafts/{id}`` (authenticate, read, audit the read: a durable write);
- approval: ``POST …/offer``, Ed25519 signature of the offered bytes, ``POST …/approve`` (the
  gateway rebuilds the decided Bundle, verifies the JWS, renders the PDF, signs, commits the
  version, the decision, the audit entry and the outbox item in one durable transaction);
- the PDF rendering alone, in-process.

Then the audit trail: ``AuditTrail.record`` (hash chain + durable commit) against a durable
insert of the same text into a plain table, and ``verify`` over every entry. Reports, never
asserts. Prints ONE JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.assistant.report import (
    DraftInputs,
    MedicationCheck,
    MedicationProposal,
    ModelIdentity,
    ReportContent,
    build_draft,
)
from gateway.fhir.device import GatewayInfo
from gateway.fhir.observation import PatientRef
from gateway.fhir.resource import MappedResource
from gateway.forward.signing import Signer, SigningKey
from gateway.review import pdf
from gateway.review.audit import AuditTrail
from gateway.review.keys import generate
from gateway.review.service import ReviewService
from gateway.store import audit as audit_table
from gateway.store.aio import AsyncStore
from gateway.store.store import Store, store_path
from gateway.users import UserDirectory
from gateway.web.app import bound_port, build_app, serve
from gateway.web.reviews import setup_reviews

ROUNDS = 30
GOAL_APPROVE_P95_MS = 500.0  # a clinician's click: well under a second, PDF included
GOAL_AUDIT_RATIO = 3.0  # the hash chain may not make an audited write much dearer
AUDIT_ENTRIES = 2000
TOKEN = "bench-review-token-0123456789abcdef"
NOW = dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.UTC)


def _observation(n: int, code: str, value: Decimal, unit: str) -> MappedResource:
    return MappedResource(
        f"urn:uuid:00000000-0000-5000-8000-0000000001{n:02d}",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": "2025-01-02T10:00:00Z",
            "valueQuantity": {"value": value, "unit": unit},
        },
    )


def _strip() -> MappedResource:
    data = " ".join(str(1200 if i % 250 == 25 else (i % 50) * 4) for i in range(500))
    return MappedResource(
        "urn:uuid:00000000-0000-5000-8000-000000000199",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "131330"}]},
            "effectiveDateTime": "2025-01-02T10:01:00Z",
            "valueSampledData": {
                "origin": {"value": 0, "code": "mV"},
                "period": 4,
                "factor": Decimal("0.001"),
                "dimensions": 1,
                "data": data,
            },
        },
    )


def draft(cid: str) -> dict[str, Any]:
    return build_draft(
        DraftInputs(
            consultation_id=cid,
            content=ReportContent(
                "Heart rate 72 /min, SpO2 97 %.",
                (),
                (MedicationProposal("Paracetamol", "1 g every 6 h"), MedicationProposal("Rest")),
            ),
            observations=[
                _observation(1, "8867-4", Decimal(72), "/min"),
                _observation(2, "59408-5", Decimal(97), "%"),
                _strip(),
            ],
            gateway=GatewayInfo("0011223344556677", name="gw-bench"),
            model=ModelIdentity("gemma-3-270m", "ab" * 32, "gemma.gguf"),
            started=NOW,
            issued=NOW + dt.timedelta(minutes=4),
            patient=PatientRef("Patient/bench"),
            checks=(MedicationCheck(True, source="formulary"), MedicationCheck(False, reason="x")),
        )
    ).bundle


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


async def measure(tmp: Path) -> dict[str, Any]:
    gateway_key = SigningKey.generate()
    signer = Signer(gateway_key, {"reference": "urn:uuid:gw"})
    store = await AsyncStore.open(store_path(tmp), signer=signer, uplinks=("mqtt",))
    users = UserDirectory(tmp)
    users.add("clara", "clinician")
    token = users.new_token("clara")
    key = generate()
    users.add_key("clara", key.public_jwk)
    trail = AuditTrail(store)
    service = ReviewService(store, gateway_id="gw-bench", signer=signer, keys=users)
    runner = await serve(
        build_app(token=TOKEN, users=users, setup=[setup_reviews(service, trail, store)]),
        "127.0.0.1",
        0,
    )
    base = f"http://127.0.0.1:{bound_port(runner)}"
    clinician = Signer(key, {})
    reads: list[float] = []
    approvals: list[float] = []
    renders: list[float] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            for n in range(ROUNDS + 3):
                cid = f"bench-{n}"
                await service.add_draft(cid, draft(cid))
                started = time.perf_counter()
                async with http.get(f"{base}/api/drafts/{cid}") as answer:
                    await answer.read()
                read = time.perf_counter() - started
                started = time.perf_counter()
                async with http.post(
                    f"{base}/api/drafts/{cid}/offer",
                    json={
                        "version": 1,
                        "action": "approve",
                        "medications": {f"{cid}-1": "accept", f"{cid}-2": "reject"},
                    },
                ) as answer:
                    offer = await answer.json()
                payload = base64.urlsafe_b64decode(offer["payload"] + "==")
                signature = clinician.sign_detached(payload)
                async with http.post(
                    f"{base}/api/drafts/{cid}/approve",
                    json={"decision": offer["decision"], "signature": signature},
                ) as answer:
                    final = await answer.json()
                    assert answer.status == 200, final
                approval = time.perf_counter() - started
                started = time.perf_counter()
                pdf.render(offer["bundle"], kid=key.kid, strips=[_strip().resource])
                render = time.perf_counter() - started
                if n >= 3:  # warm-up rounds are not counted
                    reads.append(read)
                    approvals.append(approval)
                    renders.append(render)
        pdf_bytes = len(
            base64.b64decode(
                next(
                    e for e in final["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
                )["resource"]["presentedForm"][0]["data"]
            )
        )

        audit = await audit_figures(store, trail)
    finally:
        await runner.cleanup()
        await store.close()
        users.close()
    read_s, approve_s = statistics.median(reads), statistics.median(approvals)
    approve_p95 = summary(approvals)["p95_ms"]
    return {
        "bench": "review",
        "goal": f"approval p95 under {GOAL_APPROVE_P95_MS:g} ms; an audit entry under "
        f"{GOAL_AUDIT_RATIO:g}x a plain durable insert",
        "goal_met": approve_p95 < GOAL_APPROVE_P95_MS
        and audit["audit_vs_insert_ratio"] < GOAL_AUDIT_RATIO,
        "rounds": ROUNDS,
        "read_draft": summary(reads),
        "approve_signed": summary(approvals),
        "approve_vs_read_ratio": round(approve_s / read_s, 2),
        "pdf_render": summary(renders),
        "pdf_bytes": pdf_bytes,
        **audit,
    }


async def audit_figures(store: AsyncStore, trail: AuditTrail) -> dict[str, Any]:
    """An audit entry (hash chain + durable commit) against a durable insert of the same text
    into a plain table; then ``verify`` over every entry."""
    sample = json.dumps({"at": NOW.isoformat(), "action": "read", "user": "clara", "seq": 1})

    def plain(s: Store) -> None:
        with s.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (entry TEXT NOT NULL)")
            conn.execute("INSERT INTO bench_rows (entry) VALUES (?)", (sample,))

    inserts: list[float] = []
    records: list[float] = []
    for i in range(AUDIT_ENTRIES):
        started = time.perf_counter()
        await store.write(plain)
        inserts.append(time.perf_counter() - started)
        started = time.perf_counter()
        await trail.record("read", user="clara", what="DiagnosticReport", what_id=str(i))
        records.append(time.perf_counter() - started)
    started = time.perf_counter()
    check = await store.read(lambda s: audit_table.verify(s.conn))
    verify_s = time.perf_counter() - started
    return {
        "audit_entries": check.entries,
        "audit_chain_ok": check.ok,
        "plain_durable_insert": summary(inserts),
        "audit_record": summary(records),
        "audit_vs_insert_ratio": round(statistics.median(records) / statistics.median(inserts), 2),
        "audit_verify_ms_per_1000": round(verify_s * 1000 / check.entries * 1000, 2),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        result = asyncio.run(measure(Path(tmp)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
