"""The consultations HTTP API end to end: a real aiohttp server (127.0.0.1, free port) with the
gateway's auth, the real engine (embedded Gemma 3 270M), and the firmware simulator behind the
gateway's sensor manager; server-sent events parsed from the raw stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.observation import Observation

from gateway.assistant import AssistantSettings, Engine
from gateway.assistant.consultation import (
    ConsultationService,
    ConsultationSettings,
    sensor_device_resolver,
)
from gateway.fhir import jsonio
from gateway.forward.service import build_signer
from gateway.forward.signing import KeyStore, Signer, SigningKey, verify_bundle
from gateway.web.app import bound_port, build_app, serve
from gateway.web.consultations import setup_consultations
from tests.fakes import GATEWAY, HR, SPO2, STREAMING, RecordingSensors, kind_profile
from tests.harness import running_gateway, wait_until
from tests.sse import Event, sse

TOKEN = "consultation-test-token-0123456789"
BP_PANEL = "85354-9"  # LOINC blood pressure panel
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def serving(service: ConsultationService, engine: Engine) -> AsyncIterator[str]:
    app = build_app(token=TOKEN, engine=engine, setup=[setup_consultations(service)])
    runner = await serve(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    body: object = None,
    data: bytes | None = None,
    headers: Mapping[str, str] = AUTH,
) -> tuple[int, str, Any]:
    async with session.request(method, url, json=body, data=data, headers=headers) as response:
        text = await response.text()
        return response.status, response.content_type, jsonio.loads(text) if text else None


def references(value: object) -> list[str]:
    """Every ``reference`` in a resource tree."""
    if isinstance(value, Mapping):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


async def test_consultation_end_to_end_over_http(
    consultation_engine: Engine, tmp_path: Path
) -> None:
    async with running_gateway(tmp_path, ["ecg", "spo2"]) as run:
        await wait_until(
            lambda: run.states() == {"ecg": STREAMING, "spo2": STREAMING}, 30, "both streaming"
        )
        gateway = run.gateway
        assert gateway.store is not None
        assert gateway.ingest is not None
        service = ConsultationService(
            consultation_engine,
            run.manager,
            gateway=gateway.info,
            signer=build_signer(gateway.data_dir, {"reference": "urn:uuid:gateway"}),
            store=gateway.store,
            settings=ConsultationSettings(
                temperature=0.0, max_reply_tokens=16, max_measurements_per_reply=1
            ),
            devices=sensor_device_resolver(run.manager.statuses, gateway.ingest.sensor_info),
            profiles=gateway.profiles,
            archive_dir=gateway.data_dir / "consultations",
        )
        async with serving(service, consultation_engine) as url, aiohttp.ClientSession() as http:
            api = f"{url}/api/consultations"
            status, kind, created = await call(http, "POST", api, body={"require": [HR, SPO2]})
            assert (status, kind) == (201, "application/json")
            assert created["require"] == [HR, SPO2]
            cid = created["id"]

            events: list[Event] = []
            async with http.post(
                f"{api}/{cid}/messages", json={"content": "How is the patient?"}, headers=AUTH
            ) as response:
                assert response.status == 200
                assert response.content_type == "text/event-stream"
                stream = sse(response)
                events.append(await anext(stream))
                # while it streams: no second message, no closing
                busy = await call(http, "POST", f"{api}/{cid}/messages", body={"content": "x"})
                assert (busy[0], busy[2]["error"]["code"]) == (409, "consultation_busy")
                closing = await call(http, "POST", f"{api}/{cid}/close")
                assert (closing[0], closing[2]["error"]["code"]) == (409, "consultation_busy")
                events += [event async for event in stream]

            protocol = [(n, d["code"]) for n, d in events if n.startswith("observation")]
            assert protocol[:4] == [
                ("observation_requested", HR),
                ("observation", HR),
                ("observation_requested", SPO2),
                ("observation", SPO2),
            ]
            assert {n for n, _ in events} <= {
                "token",
                "observation_requested",
                "observation",
                "observation_unavailable",
                "done",
            }
            name, done = events[-1]
            assert name == "done"
            assert done["usage"]["steps"][0]["kind"] == "forced_tag"
            assert done["citations"] == []
            measured = [d for n, d in events if n == "observation"]
            for item in measured:
                Observation.model_validate(item["observation"])
            assert done["observations"] == list(dict.fromkeys(d["fullUrl"] for d in measured))

            status, _, record = await call(http, "GET", f"{api}/{cid}")
            assert status == 200
            assert record["status"] == "open"
            assert [m["role"] for m in record["messages"]][:5] == [
                "user",
                "observation_request",
                "observation",
                "observation_request",
                "observation",
            ]
            assert [o["fullUrl"] for o in record["observations"] if o["source"] == "measured"] == [
                d["fullUrl"] for d in measured
            ]

            status, kind, bundle = await call(http, "POST", f"{api}/{cid}/close")
            assert (status, kind) == (200, "application/fhir+json")
            keys = KeyStore(gateway.data_dir).public_keys()
            assert verify_bundle(bundle, keys)
            urls = {e["fullUrl"] for e in bundle["entry"]}
            for entry in bundle["entry"]:
                get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(
                    entry["resource"]
                )
                # every reference resolves inside the Bundle (the sensors' Devices included)
                internal = [r for r in references(entry["resource"]) if r.startswith("urn:")]
                assert set(internal) <= urls
            (report,) = [
                e["resource"]
                for e in bundle["entry"]
                if e["resource"]["resourceType"] == "DiagnosticReport"
            ]
            assert [r["reference"] for r in report["result"]] == [
                o["fullUrl"] for o in record["observations"]
            ]

            again = await call(http, "POST", f"{api}/{cid}/close")
            assert (again[0], again[2]["error"]["code"]) == (409, "consultation_closed")
            late = await call(http, "POST", f"{api}/{cid}/messages", body={"content": "More?"})
            assert (late[0], late[2]["error"]["code"]) == (409, "consultation_closed")
            status, _, listing = await call(http, "GET", api)
            assert listing["data"][0]["id"] == cid
            assert listing["data"][0]["status"] == "closed"
            status, _, final = await call(http, "GET", f"{api}/{cid}")
            assert final["draft"] == bundle


async def test_a_measurement_not_made_is_told_with_its_code_over_http(
    consultation_engine: Engine, tmp_path: Path
) -> None:
    """Heart rate and blood pressure at intake, the cuff not allowed (the default): heart rate
    comes from the ECG patch, the cuff is never started, and the API event says ``not_allowed``
    in one plain sentence."""
    kinds = ["ecg", "bp"]
    async with running_gateway(tmp_path, kinds, overrides={"bp.interval_s": 3600}) as run:
        await wait_until(lambda: run.states() == dict.fromkeys(kinds, STREAMING), 30, "streaming")
        service = ConsultationService(
            consultation_engine,
            run.manager,
            gateway=run.gateway.info,
            signer=Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"}),
            settings=ConsultationSettings(
                temperature=0.0, max_reply_tokens=8, max_measurements_per_reply=0
            ),
            profiles=run.gateway.profiles,
        )
        async with serving(service, consultation_engine) as url, aiohttp.ClientSession() as http:
            api = f"{url}/api/consultations"
            _, _, created = await call(http, "POST", api, body={"require": [HR, BP_PANEL]})
            async with http.post(
                f"{api}/{created['id']}/messages", json={"content": "Vitals?"}, headers=AUTH
            ) as response:
                events = [event async for event in sse(response)]
            _, _, record = await call(http, "GET", f"{api}/{created['id']}")
        bp = run.sim.sensors["bp"]
        assert (bp.stats.on_demand, bp.stats.measurements) == (0, 0)

    protocol = [(n, d["code"]) for n, d in events if n.startswith("observation")]
    assert protocol[:4] == [
        ("observation_requested", HR),
        ("observation", HR),
        ("observation_requested", BP_PANEL),
        ("observation_unavailable", BP_PANEL),
    ]
    (unavailable,) = [d for n, d in events if n == "observation_unavailable"]
    assert unavailable == {
        "code": BP_PANEL,
        "reason": "it cannot be started from here: a person at the bedside takes it (a "
        "clinician starts a cuff inflation, a patient takes a glucose sample)",
        "reason_code": "not_allowed",
    }
    told = [m for m in record["messages"] if m["role"] == "observation_unavailable"]
    assert [m["reason_code"] for m in told] == ["not_allowed"]


async def test_errors_are_clear_json(consultation_engine: Engine) -> None:
    service = ConsultationService(
        consultation_engine,
        RecordingSensors({}),
        gateway=GATEWAY,
        signer=Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"}),
        settings=ConsultationSettings(temperature=0.0, max_reply_tokens=8),
        profiles={"ecg": kind_profile(HR)},
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    async with serving(service, consultation_engine) as url, aiohttp.ClientSession() as http:
        api = f"{url}/api/consultations"
        assert (await call(http, "POST", api, headers={}))[0] == 401
        status, _, created = await call(http, "POST", api)  # no body: no requirements
        assert (status, created["require"]) == (201, [])
        cid = created["id"]
        cases: list[tuple[str, str, Any, bytes | None, int, str | None]] = [
            ("GET", f"{api}/{unknown}", None, None, 404, "consultation_not_found"),
            ("POST", f"{api}/{unknown}/messages", {"content": "hi"}, None, 404, None),
            ("POST", f"{api}/{unknown}/close", None, None, 404, "consultation_not_found"),
            ("POST", f"{api}/{cid}/messages", None, b"{not json", 400, None),
            ("POST", f"{api}/{cid}/messages", ["hi"], None, 400, None),
            ("POST", f"{api}/{cid}/messages", {"content": ""}, None, 400, None),
            ("POST", f"{api}/{cid}/messages", {"text": "hi"}, None, 400, None),
            ("POST", f"{api}/{cid}/messages", {"content": "a<eos>"}, None, 400, None),
            ("POST", api, {"require": ["pulse"]}, None, 400, "invalid_consultation_request"),
            ("POST", api, {"require": ["8310-5"]}, None, 400, "invalid_consultation_request"),
            ("POST", api, {"require": "8867-4"}, None, 400, None),
            ("POST", api, {"require": [HR], "extra": 1}, None, 400, None),
        ]
        for method, where, body, data, expected, code in cases:
            status, kind, error = await call(http, method, where, body=body, data=data)
            assert (status, kind) == (expected, "application/json"), (method, where, body, error)
            assert error["error"]["message"]
            if code is not None:
                assert error["error"]["code"] == code
        # the consultation is still usable after the refused requests
        status, _, record = await call(http, "GET", f"{api}/{cid}")
        assert (status, record["messages"]) == (200, [])
        message = json.dumps({"content": "Hello."}).encode()
        async with http.post(
            f"{api}/{cid}/messages",
            data=message,
            headers=AUTH | {"Content-Type": "application/json"},
        ) as response:
            names = [name async for name, _ in sse(response)]
        assert names[-1] == "done"


async def test_assistant_not_running_is_503(tmp_path: Path) -> None:
    stopped = Engine(AssistantSettings(), data_dir=tmp_path)  # never started
    service = ConsultationService(
        stopped,
        RecordingSensors({}),
        gateway=GATEWAY,
        signer=Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"}),
    )
    async with serving(service, stopped) as url, aiohttp.ClientSession() as http:
        status, _, error = await call(http, "POST", f"{url}/api/consultations")
        assert status == 503
        assert "not running" in error["error"]["message"]
