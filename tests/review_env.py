"""A review setup for tests: a real store (with an outbox), users with keys, the review service
and the review API served on 127.0.0.1; drafts built by the assistant's own draft builder."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.assistant.report import (
    Citation,
    DraftInputs,
    Finding,
    MedicationCheck,
    MedicationProposal,
    ModelIdentity,
    ReportContent,
    build_draft,
)
from gateway.fhir.observation import PatientRef
from gateway.fhir.resource import MappedResource
from gateway.forward.signing import Signer, SigningKey
from gateway.review.audit import AuditTrail
from gateway.review.keys import generate, write_private
from gateway.review.service import ReviewService
from gateway.store.aio import AsyncStore
from gateway.store.store import store_path
from gateway.users import UserDirectory
from gateway.web.app import bound_port, build_app, serve
from gateway.web.ratelimit import RateLimit
from gateway.web.reviews import setup_reviews
from tests.fakes import GATEWAY, HR, NOW, SPO2, fake_observation

BEDSIDE = shutil.which("bedside", path=str(Path(sys.executable).parent)) or "bedside"
SERVICE_TOKEN = "review-test-service-token-0123456789"
GATEWAY_ID = "gw-review-test"
MODEL = ModelIdentity("gemma-3-270m", "ab" * 32, "gemma.gguf")


def observation(code: str, value: Decimal, unit: str, n: int) -> MappedResource:
    return MappedResource(
        f"urn:uuid:00000000-0000-5000-8000-00000000010{n}", fake_observation(code, value, unit)
    )


def ecg_strip(seconds: float = 2.0) -> MappedResource:
    """An ECG lead II strip (PhdRtsaObservation shape): 250 Hz, 1 µV steps, a beat a second."""
    samples = []
    for i in range(int(seconds * 250)):
        phase = (i % 250) / 250
        spike = 1200 if 0.10 <= phase < 0.12 else (-250 if 0.12 <= phase < 0.14 else 0)
        wave = round(180 * math.sin(2 * math.pi * phase * 2))
        samples.append(spike + wave)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "131330"}],
            "text": "ECG lead II",
        },
        "effectiveDateTime": "2025-01-02T10:01:00Z",
        "valueSampledData": {
            "origin": {
                "value": 0,
                "unit": "mV",
                "system": "http://unitsofmeasure.org",
                "code": "mV",
            },
            "period": 4,
            "factor": Decimal("0.001"),
            "dimensions": 1,
            "data": " ".join(map(str, samples)),
        },
        "device": {"reference": "urn:uuid:6a1b4c1e-8f4e-5c8b-9d1c-2f3a4b5c6d7e"},
    }
    return MappedResource("urn:uuid:00000000-0000-5000-8000-000000000109", observation)


def draft_bundle(cid: str, *, when: dt.datetime = NOW) -> dict[str, Any]:
    """A draft like a consultation's: two Observations, a finding, two medication proposals
    (one verified in the formulary, one not), a number the Observations do not hold."""
    return build_draft(
        DraftInputs(
            consultation_id=cid,
            content=ReportContent(
                "Heart rate 72 /min, SpO2 97 %; temperature 39.5 reported [1].",
                (Finding("Tachycardia not present", HR),),
                (
                    MedicationProposal("Paracetamol", "1 g every 6 h"),
                    MedicationProposal("Ibuprofen", "400 mg"),
                ),
            ),
            observations=[
                observation(HR, Decimal(72), "/min", 1),
                observation(SPO2, Decimal(97), "%", 2),
                ecg_strip(),
            ],
            gateway=GATEWAY,
            model=MODEL,
            started=when,
            issued=when + dt.timedelta(minutes=4),
            patient=PatientRef("Patient/p-42"),
            checks=(
                MedicationCheck(True, source="formulary.md § Analgesics"),
                MedicationCheck(False, reason="'ibuprofen' is not in the retrieved formulary"),
            ),
            citations=(Citation("formulary.md § Analgesics", "7"),),
            prompt_version="sha256:0011223344556677",
        )
    ).bundle


@dataclass
class ReviewEnv:
    data_dir: Path
    store: AsyncStore
    service: ReviewService
    trail: AuditTrail
    users: UserDirectory
    url: str
    tokens: dict[str, str]
    key_file: Path  # clara's private key
    gateway_key: SigningKey
    keys_dir: Path  # the gateway's and clara's public JWKs (for bedside verify)
    clock: list[dt.datetime] = field(default_factory=list)

    async def cli(self, *args: str, token: str | None = "clinician") -> tuple[int, str, str]:
        """``bedside`` in a child process (the server keeps running in this loop)."""
        env = dict(os.environ)
        env.pop("BEDSIDE_TOKEN", None)
        if token is not None:
            env["BEDSIDE_TOKEN"] = self.tokens[token]
        process = await asyncio.create_subprocess_exec(
            BEDSIDE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def review_env(
    tmp_path: Path, *, rate_limits: dict[str, RateLimit] | None = None
) -> AsyncIterator[ReviewEnv]:
    gateway_key = SigningKey.generate()
    signer = Signer(gateway_key, {"reference": "urn:uuid:gateway"})
    store = await AsyncStore.open(store_path(tmp_path), signer=signer, uplinks=("mqtt",))
    users = UserDirectory(tmp_path)
    tokens = {"service": SERVICE_TOKEN}
    for name, role in (("clara", "clinician"), ("tom", "technician"), ("ada", "admin")):
        users.add(name, role)
        tokens[role] = users.new_token(name)
    users.add("carl", "clinician")
    tokens["other clinician"] = users.new_token("carl")
    clinician_key = generate()
    key_file = tmp_path / "clara.jwk"
    write_private(key_file, clinician_key)
    users.add_key("clara", clinician_key.public_jwk)
    keys_dir = tmp_path / "public-keys"
    keys_dir.mkdir()
    (keys_dir / "gateway.jwk").write_text(json.dumps(gateway_key.public_jwk))
    (keys_dir / "clara.jwk").write_text(json.dumps(clinician_key.public_jwk))
    trail = AuditTrail(store)
    service = ReviewService(store, gateway_id=GATEWAY_ID, signer=signer, keys=users)
    app = build_app(
        token=SERVICE_TOKEN,
        users=users,
        setup=[setup_reviews(service, trail, store)],
        rate_limits=rate_limits,
    )
    runner = await serve(app, "127.0.0.1", 0)
    try:
        yield ReviewEnv(
            tmp_path, store, service, trail, users,
            f"http://127.0.0.1:{bound_port(runner)}", tokens, key_file, gateway_key, keys_dir,
        )  # fmt: skip
    finally:
        await runner.cleanup()
        await store.close()
        users.close()


def received_reports(out: Path, draft: str) -> list[tuple[dict[str, Any], Path]]:
    """The Bundles `bedside receive` wrote to ``out`` holding the report of ``draft``."""
    found = []
    for path in sorted(out.glob("*.json")) if out.is_dir() else []:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == "DiagnosticReport" and any(
                i["value"] == draft for i in resource.get("identifier", [])
            ):
                found.append((bundle, path))
    return found
