"""Every Observation has a subject (PHD IG PhdBaseObservation.subject 1..1).

The patient comes from configuration or a runtime assignment (``bedside patient``,
``/api/patient``); with none, readings are stored but held back from the uplinks, and released —
subject filled in, signed then — only by an explicit claim, which takes the readings held since
the previous patient was cleared and no others. A patient change never re-labels a stored reading.
Real parts: the simulator over Bumble, real mosquitto, the gateway's own HTTP API and CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import typer
from typer.testing import CliRunner

from gateway.config import load_settings
from gateway.demo import DEMO_PATIENT, run_demo
from gateway.fhir import jsonio
from gateway.fhir.observation import PatientRef
from gateway.fhir.validate import r4b_model
from gateway.forward.signing import KeyStore, Signer, verify_bundle
from gateway.patients.assignment import (
    PATIENT_FILE,
    PatientAssignment,
    PatientError,
    parse_identifier,
    validate_reference,
)
from gateway.patients.commands import register
from gateway.patients.service import PatientService
from gateway.store.models import OutboxState, TopicKind
from gateway.store.store import Store, store_path
from gateway.web.app import bound_port, build_app, serve
from gateway.web.patient import setup_patient
from tests import fixtures_mqtt
from tests.fixtures_mqtt import DEVICE, GATEWAY_WHO, record, transaction_bundle
from tests.harness import running_gateway, wait_until
from tests.mosquitto import Mosquitto

broker = fixtures_mqtt.broker
runner = CliRunner()
TOKEN = "patient-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    """One clock for the store and the assignment, moved on by the test."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self) -> None:
        self.now += dt.timedelta(seconds=1)


def app() -> typer.Typer:
    made = typer.Typer()
    register(made)
    return made


def subjects(bundle: dict[str, Any]) -> list[object]:
    return [
        e["resource"].get("subject")
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]


# -- references and identifiers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/123",
        "Patient/a.b-C",
        "https://fhir.example.org/r4/Patient/9/_history/2",
        "urn:uuid:0f5c4d2e-8a4b-4c1e-9d3f-2b7a6e5c4d3b",
    ],
)
def test_references_accepted(reference: str) -> None:
    assert validate_reference(reference) == reference


@pytest.mark.parametrize(
    "reference",
    ["", "123", "Patient/", "Patient/a b", "Device/1", "Patient/" + "x" * 65, "urn:uuid:nope"],
)
def test_bad_references_are_one_sentence(reference: str) -> None:
    with pytest.raises(PatientError, match=r"^patient reference .*: expected Patient/<id>"):
        validate_reference(reference)


def test_identifier_token_form() -> None:
    assert parse_identifier("urn:oid:2.16.840.1.113883.2.4.6.3|123456782") == (
        "urn:oid:2.16.840.1.113883.2.4.6.3",
        "123456782",
    )
    for bad in ("no-bar", "|value", "system|", "a b|c", "s|v|w"):
        with pytest.raises(PatientError, match=r"expected SYSTEM\|VALUE"):
            parse_identifier(bad)


# -- the assignment file ----------------------------------------------------------------------


def test_runtime_wins_and_clear_returns_to_configured(tmp_path: Path) -> None:
    configured = PatientRef("Patient/configured")
    assignment = PatientAssignment(tmp_path, configured)
    assert assignment.current() == configured
    assert assignment.source() == "configuration"

    other = PatientAssignment(tmp_path, configured)  # a CLI process beside the gateway
    other.set(PatientRef("Patient/2", "urn:oid:1.2.3", "42"))
    assert assignment.current() == PatientRef("Patient/2", "urn:oid:1.2.3", "42")
    assert assignment.source() == "runtime"
    mode = stat.S_IMODE((tmp_path / PATIENT_FILE).stat().st_mode)
    assert mode == 0o600

    other.clear()
    assert assignment.current() == configured
    PatientAssignment(tmp_path).set(PatientRef("Patient/3"))
    assert PatientAssignment(tmp_path).current() == PatientRef("Patient/3")
    PatientAssignment(tmp_path).clear()
    assert PatientAssignment(tmp_path).current() is None  # nothing configured: hold


def test_unreadable_file_holds_rather_than_guessing(tmp_path: Path) -> None:
    assignment = PatientAssignment(tmp_path, PatientRef("Patient/configured"))
    (tmp_path / PATIENT_FILE).write_text("{not json", encoding="utf-8")
    assert assignment.current() is None
    assert "not a patient assignment" in assignment.show()["error"]
    with pytest.raises(PatientError, match="not a patient assignment"):
        assignment.set(PatientRef("Patient/1"), claim_held=True)  # no safe window to claim
    assignment.set(PatientRef("Patient/1"))  # a plain set repairs it
    assert assignment.current() == PatientRef("Patient/1")


# -- held readings in the store ------------------------------------------------------------------


def test_held_readings_stay_out_of_the_outbox_until_claimed(tmp_path: Path) -> None:
    clock = Clock()
    keys = KeyStore(tmp_path)
    signer = Signer(keys.load_or_create(), GATEWAY_WHO)
    assignment = PatientAssignment(tmp_path, clock=clock)
    with Store(store_path(tmp_path), signer=signer, uplinks=["mqtt"], clock=clock) as store:

        def reading(name: str) -> None:
            clock.tick()
            patient = assignment.current()
            store.add_observations(
                DEVICE,
                [record(name)],
                transaction_bundle,
                patient=None if patient is None else patient.reference,
                hold=patient is None,
            )

        def release() -> int:
            state = assignment.runtime()
            assert state is not None
            assert state.patient is not None
            if state.claim is None:
                return 0
            released = store.release_held(
                state.patient.reference, after=state.claim.after, before=state.claim.before
            )
            return released.readings

        reading("before-anyone")  # no patient ever: held
        stats = store.outbox_stats()
        assert (stats.pending, stats.held, stats.held_readings) == (0, 1, 1)

        clock.tick()
        assignment.set(PatientRef("Patient/A"))  # without a claim nothing is released
        assert release() == 0
        reading("of-A")
        clock.tick()
        assignment.clear()
        reading("gap-1")
        reading("gap-2")
        assert store.outbox_stats().held == 3

        clock.tick()
        assignment.set(PatientRef("Patient/B"), claim_held=True)
        assert release() == 2  # the gap since A was cleared, not what was held before A
        assert release() == 0  # idempotent
        clock.tick()
        assignment.set(PatientRef("Patient/C"), claim_held=True)  # B → C: nothing held since B
        assert release() == 0
        stats = store.outbox_stats()
        assert (stats.pending, stats.held) == (3, 1)  # of-A, and the two gap readings

        items = store.outbox_items(state=OutboxState.PENDING)
        bundles = [jsonio.loads(item.payload) for item in items]
        assert [subjects(b) for b in bundles[1:]] == [
            [{"reference": "Patient/B"}],
            [{"reference": "Patient/B"}],
        ]
        for item, bundle in zip(items, bundles, strict=True):
            assert item.kind is TopicKind.OBSERVATIONS
            verify_bundle(bundle, keys.public_keys())
        released = bundles[1]
        assert released["timestamp"] == "2026-03-01T08:00:07Z"  # assembled when released

        stored = {o.identifier: o.resource.get("subject") for o in store.latest_observations(10)}
        assert stored == {
            "before-anyone": None,  # still held
            "of-A": None,  # the fixture's reading carries no subject; its row says A
            "gap-1": {"reference": "Patient/B"},
            "gap-2": {"reference": "Patient/B"},
        }
        rows = dict(store.conn.execute("SELECT identifier, patient FROM observations").fetchall())
        assert rows == {
            "before-anyone": None,
            "of-A": "Patient/A",
            "gap-1": "Patient/B",
            "gap-2": "Patient/B",
        }


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_set_show_clear(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\n[patient]\nreference = "Patient/configured"\n', encoding="utf-8"
    )
    shown = runner.invoke(app(), ["patient", "show", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.stdout)
    assert body["patient"] == {"reference": "Patient/configured"}
    assert (body["source"], body["held"]) == ("configuration", 0)

    args = ["patient", "set", "--data-dir", str(tmp_path), "--config", str(config)]
    done = runner.invoke(app(), [*args, "--reference", "Patient/7", "--identifier", "urn:x|7"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["patient"] == {
        "reference": "Patient/7",
        "identifier": {"system": "urn:x", "value": "7"},
    }
    cleared = runner.invoke(app(), ["patient", "clear", "--config", str(config)])
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.stdout)["patient"] == {"reference": "Patient/configured"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reference", "Device/1"], "patient reference 'Device/1': expected Patient/<id>"),
        (["--reference", "Patient/1", "--identifier", "x"], "expected SYSTEM|VALUE"),
    ],
)
def test_cli_bad_input_is_one_line_with_status_2(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    result = runner.invoke(app(), ["patient", "set", "--data-dir", str(tmp_path), *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / PATIENT_FILE).exists()


def test_cli_bad_config_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app(), ["patient", "show", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2
    assert "no such configuration file" in result.stderr


# -- the API on its own ------------------------------------------------------------------------


async def test_api_routes_need_the_token_and_refuse_bad_input(tmp_path: Path) -> None:
    service = PatientService(PatientAssignment(tmp_path, PatientRef("Patient/configured")))
    runner_ = await serve(build_app(token=TOKEN, setup=[setup_patient(service)]), port=0)
    base = f"http://127.0.0.1:{bound_port(runner_)}/api/patient"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base) as response:
                assert response.status == 401
            status, body = await _api(session, "GET", base)
            assert (status, body["patient"], body["source"]) == (
                200,
                {"reference": "Patient/configured"},
                "configuration",
            )
            for bad, param in (
                ({"reference": "Device/1"}, "reference"),
                ({"reference": "Patient/1", "identifier": {"system": "a b", "value": "1"}}, None),
                ({"reference": "Patient/1", "extra": 1}, None),
                ({}, None),
            ):
                status, error = await _api(session, "PUT", base, bad)
                assert status == 400, bad
                if param is not None:
                    assert error["error"]["param"] == param
            status, error = await _api(
                session,
                "PUT",
                base,
                {"reference": "Patient/1", "identifier": {"system": "a b", "value": "1"}},
            )
            assert (error["error"]["param"], error["error"]["code"]) == (
                "identifier",
                "invalid_patient",
            )
            assert not (tmp_path / PATIENT_FILE).exists()

            status, body = await _api(session, "PUT", base, {"reference": "Patient/9"})
            assert (status, body["patient"], body["source"]) == (
                200,
                {"reference": "Patient/9"},
                "runtime",
            )
            (tmp_path / PATIENT_FILE).write_text("[]", encoding="utf-8")  # broken by hand
            claim = {"reference": "Patient/9", "claim_held": True}
            status, error = await _api(session, "PUT", base, claim)
            assert (status, error["error"]["code"]) == (409, "patient_conflict")
            status, body = await _api(session, "DELETE", base)
            assert (status, body["patient"]) == (200, {"reference": "Patient/configured"})
    finally:
        await runner_.cleanup()


# -- the running gateway -----------------------------------------------------------------------


async def _api(
    session: aiohttp.ClientSession, method: str, url: str, body: object = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=AUTH) as response:
        return response.status, await response.json()


class Peek:
    """A second connection to the gateway's store, read from the test (WAL: never blocks it)."""

    def __init__(self, data_dir: Path) -> None:
        self.store = Store(store_path(data_dir))

    def newest_subject(self) -> object:
        newest = self.store.latest_observations(1)
        return newest[0].resource.get("subject") if newest else None

    def delivered_observation_bundles(self) -> list[dict[str, Any]]:
        items = self.store.outbox_items(uplink="mqtt", state=OutboxState.DELIVERED, limit=1000)
        return [jsonio.loads(i.payload) for i in items if i.kind is TopicKind.OBSERVATIONS]


async def test_gateway_holds_then_releases_on_claim(tmp_path: Path, broker: Mosquitto) -> None:
    data_dir = tmp_path / "gateway"
    async with running_gateway(
        data_dir,
        ["thermo", "spo2"],
        mqtt={"url": broker.url},
        http={"enabled": True, "port": 0, "token": TOKEN},
        assistant={"enabled": False},
    ) as run:
        gateway = run.gateway
        store, patients = gateway.store, gateway.patients
        assert store is not None
        assert patients is not None
        peek = Peek(data_dir)
        base = f"http://127.0.0.1:{gateway.http_port}"
        await wait_until(lambda: patients.held_readings >= 3, 40, "readings held")

        async with aiohttp.ClientSession() as session:
            status, health = await _api(session, "GET", f"{base}/healthz")
            assert status == 200
            assert health["patient"]["state"] == "held: no patient"
            assert health["patient"]["held"] >= 1
            assert (await gateway.summary())["outbox"]["held"] >= 1
            items = await store.outbox_items(uplink="mqtt", limit=1000)
            assert TopicKind.OBSERVATIONS not in {item.kind for item in items}  # none sent yet

            status, error = await _api(session, "PUT", f"{base}/api/patient", {"reference": "x"})
            assert status == 400
            assert error["error"]["code"] == "invalid_patient"
            assert "expected Patient/<id>" in error["error"]["message"]
            status, shown = await _api(
                session,
                "PUT",
                f"{base}/api/patient",
                {
                    "reference": "Patient/p1",
                    "identifier": {"system": "urn:oid:1.2.3", "value": "p1"},
                    "claim_held": True,
                },
            )
            assert status == 200, shown
            assert shown["patient"]["reference"] == "Patient/p1"
            assert shown["held"] == 0
            assert patients.released >= 3
            status, got = await _api(session, "GET", f"{base}/api/patient")
            assert (status, got["source"]) == (200, "runtime")
            await wait_until(peek.delivered_observation_bundles, 40, "released Bundles delivered")

            # another process (the CLI) changes the patient: later readings are p2's
            stored_before = {o.identifier: o.resource for o in peek.store.latest_observations(999)}
            PatientAssignment(data_dir).set(PatientRef("Patient/p2"))
            p2 = {"reference": "Patient/p2"}
            p3ref = {"reference": "Patient/p3"}
            await wait_until(lambda: peek.newest_subject() == p2, 40, "a reading of Patient/p2")

            status, cleared = await _api(session, "DELETE", f"{base}/api/patient")
            assert (status, cleared["patient"]) == (200, None)
            status, health = await _api(session, "GET", f"{base}/healthz")
            assert health["patient"]["state"] == "held: no patient"

        # held again; a claim made by another process (the CLI) is applied by the patient watch
        await wait_until(lambda: patients.held_readings > 0, 40, "readings held after clear")
        released = patients.released
        PatientAssignment(data_dir).set(PatientRef("Patient/p3"), claim_held=True)
        await wait_until(lambda: patients.released > released, 40, "the CLI's claim applied")
        p3 = [o for o in peek.store.latest_observations(999) if o.resource.get("subject") == p3ref]
        assert p3, "the readings held after the clear now name Patient/p3"

        # nothing stored before the change was re-labelled
        after = {o.identifier: o.resource for o in peek.store.latest_observations(999)}
        for identifier, resource in stored_before.items():
            assert after[identifier] == resource
            assert resource["subject"] == {"reference": "Patient/p1"}

        keys = KeyStore(data_dir).public_keys()
        bundles = peek.delivered_observation_bundles()
        for bundle in bundles:
            verify_bundle(bundle, keys)
            r4b_model(bundle)
            for entry in bundle["entry"]:
                resource = entry["resource"]
                if resource["resourceType"] == "Observation":
                    assert resource["subject"]["reference"] in {f"Patient/p{n}" for n in (1, 2, 3)}
                    r4b_model(resource)  # R4B validation of the released Observations
        peek.store.close()


async def test_demo_readings_belong_to_the_demo_patient(tmp_path: Path, broker: Mosquitto) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        ble={"auto_accept": True},
        http={"enabled": False},
        mqtt={"url": broker.url},
    )
    summary = await run_demo(settings, duration_s=4, headless=True)
    assert summary is not None
    assert summary["patient"]["reference"] == DEMO_PATIENT
    assert summary["outbox"]["held"] == 0
    with Store(store_path(tmp_path)) as store:
        stored = store.latest_observations(10_000)
        items = store.outbox_items(limit=10_000)
    assert stored, "the demo stored readings"
    assert all(o.resource["subject"] == {"reference": DEMO_PATIENT} for o in stored)
    bundles = [jsonio.loads(i.payload) for i in items if i.kind is TopicKind.OBSERVATIONS]
    assert bundles
    assert all(s == {"reference": DEMO_PATIENT} for b in bundles for s in subjects(b))
