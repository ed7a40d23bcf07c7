"""The review of drafts: the FHIR of a decision (pure), and the review API with the clinician's
command line against a real store, real signatures and a served API."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from gateway.fhir.review import (
    Decision,
    Edit,
    MedicationEdit,
    Reviewer,
    ReviewError,
    apply_edit,
    decided_bundle,
    proposals,
    report_entry,
    review_provenance,
    signing_payload,
    verification_jws,
    with_verification_signature,
)
from gateway.fhir.transparency import ai_labels
from gateway.forward.signing import Signer, SigningKey, verify_bundle, verify_detached
from gateway.review.keys import read_private
from gateway.store.store import store_path
from gateway.web.ratelimit import RateLimit
from tests.fakes import NOW
from tests.review_env import GATEWAY_ID, ReviewEnv, draft_bundle, review_env

CLARA = Reviewer("clara", GATEWAY_ID)
ACCEPT_FIRST = {"c1-1": "accept", "c1-2": "reject"}


def valid_fhir(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every entry validated as its FHIR R4B model; the resources by fullUrl."""
    Bundle.model_validate(bundle)
    out = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        out[entry["fullUrl"]] = resource
    return out


def decision(action: str = "approve", **kw: Any) -> Decision:
    fields: dict[str, Any] = {
        "decision_id": "d-1",
        "draft_id": "c1",
        "version": 1,
        "action": action,
        "at": NOW + dt.timedelta(hours=1),
        "reviewer": CLARA,
        "medications": ACCEPT_FIRST if action == "approve" else {},
        "reason": None if action == "approve" else "not this patient",
    }
    return Decision(**(fields | kw))


# -- the FHIR of a review (pure) -------------------------------------------------------------------


def test_a_draft_is_partial_and_every_ai_resource_labelled() -> None:
    bundle = draft_bundle("c1")
    report = report_entry(bundle)["resource"]
    assert report["status"] == "partial"
    assert ai_labels(report) == ["AIAST"]
    assert [(r["status"], r["intent"]) for r in proposals(bundle).values()] == [
        ("draft", "proposal"),
        ("draft", "proposal"),
    ]


def test_approval_makes_a_final_report_orders_accepted_proposals_and_names_the_verifier() -> None:
    final = decided_bundle(draft_bundle("c1"), decision())
    by_url = valid_fhir(final)
    report = report_entry(final)["resource"]
    assert report["status"] == "final"
    assert ai_labels(report) == ["CLINAST_AIRPT"]
    assert report["resultsInterpreter"] == [{"reference": CLARA.full_url}]
    accepted, rejected = proposals(final)["c1-1"], proposals(final)["c1-2"]
    assert (accepted["status"], accepted["intent"]) == ("active", "order")
    assert accepted["requester"] == {"reference": CLARA.full_url}
    assert ai_labels(accepted) == ["CLINAST_AIRPT"]
    assert rejected["status"] == "cancelled"
    assert ai_labels(rejected) == ["AIAST"]
    practitioner = by_url[CLARA.full_url]
    assert practitioner["identifier"] == [CLARA.identifier]
    provenance = review_provenance(final)
    assert provenance["activity"]["coding"][0]["code"] == "AU"
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    assert {t["reference"] for t in provenance["target"]} == {
        e["fullUrl"]
        for e in final["entry"]
        if e["resource"]["resourceType"] in ("DiagnosticReport", "MedicationRequest")
    }
    methods = {e["resource"]["resourceType"]: e["request"] for e in final["entry"]}
    assert methods["DiagnosticReport"]["method"] == "PUT"
    assert methods["DiagnosticReport"]["url"].startswith("DiagnosticReport?identifier=")
    assert "signature" not in final


def test_the_decided_bundle_is_the_same_wherever_it_is_made() -> None:
    assert decided_bundle(draft_bundle("c1"), decision()) == decided_bundle(
        draft_bundle("c1"), decision()
    )
    other = decided_bundle(draft_bundle("c1"), decision(decision_id="d-2"))
    assert other["id"] != decided_bundle(draft_bundle("c1"), decision())["id"]


def test_rejection_cancels_the_report_and_keeps_the_reason() -> None:
    rejected = decided_bundle(draft_bundle("c1"), decision("reject"))
    valid_fhir(rejected)
    assert report_entry(rejected)["resource"]["status"] == "cancelled"
    assert {r["status"] for r in proposals(rejected).values()} == {"cancelled"}
    provenance = review_provenance(rejected)
    assert provenance["reason"] == [{"text": "not this patient"}]
    assert provenance["activity"]["coding"][0]["code"] == "NULLIFY"


def test_a_final_report_approved_again_is_amended_and_rejected_is_entered_in_error() -> None:
    final = decided_bundle(draft_bundle("c1"), decision())
    edited = apply_edit(final, Edit(conclusion="Heart rate 72 /min; see the ECG."))
    again = decided_bundle(edited, decision(decision_id="d-2", version=2, medications={}))
    assert report_entry(again)["resource"]["status"] == "amended"
    withdrawn = decided_bundle(final, decision("reject", decision_id="d-3", version=2))
    assert report_entry(withdrawn)["resource"]["status"] == "entered-in-error"
    with pytest.raises(ReviewError, match="nothing to decide"):
        decided_bundle(withdrawn, decision(decision_id="d-4"))


def test_every_proposal_must_be_decided_and_exist() -> None:
    with pytest.raises(ReviewError, match=r"decide every proposal \(c1-2\)"):
        decided_bundle(draft_bundle("c1"), decision(medications={"c1-1": "accept"}))
    with pytest.raises(ReviewError, match="no proposal c1-9"):
        decided_bundle(draft_bundle("c1"), decision(medications=ACCEPT_FIRST | {"c1-9": "accept"}))


def test_an_edit_changes_the_words_and_unflags_the_edited_numbers() -> None:
    bundle = draft_bundle("c1")
    flagged = report_entry(bundle)["resource"]["extension"]
    assert any(e["url"].endswith("unsupported-number") for e in flagged)
    edited = apply_edit(
        bundle,
        Edit(
            conclusion="Heart rate 72 /min, SpO2 97 %.",
            findings=[{"text": "Normal rate", "code": "8867-4"}],
            medications={"c1-1": MedicationEdit(dose="500 mg every 6 h")},
        ),
    )
    report = report_entry(edited)["resource"]
    assert report["conclusion"] == "Heart rate 72 /min, SpO2 97 %."
    assert "extension" not in report
    assert report["conclusionCode"] == [
        {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Normal rate"}
    ]
    assert proposals(edited)["c1-1"]["dosageInstruction"] == [{"text": "500 mg every 6 h"}]
    assert report_entry(bundle)["resource"]["conclusion"].startswith("Heart rate 72 /min, SpO2")
    with pytest.raises(ReviewError, match="no proposal 'c1-7'"):
        apply_edit(bundle, Edit(medications={"c1-7": MedicationEdit(text="x")}))


def test_the_clinician_signs_the_bundle_without_signatures_and_the_pdf() -> None:
    key = SigningKey.generate()
    final = decided_bundle(draft_bundle("c1"), decision())
    jws = Signer(key, {}).sign_detached(signing_payload(final))
    signed = with_verification_signature(final, jws, CLARA, NOW)
    signature = review_provenance(signed)["signature"][0]
    assert signature["type"][0]["code"] == "1.2.840.10065.1.12.1.5"
    assert signature["sigFormat"] == "application/jose"
    report_entry(signed)["resource"]["presentedForm"] = [{"contentType": "application/pdf"}]
    gateway = Signer(SigningKey.generate(), {"reference": "urn:uuid:gw"}).sign_bundle(signed)
    keys = {key.kid: key.public_key}
    assert verify_detached(verification_jws(gateway), signing_payload(gateway), keys) == key.kid
    report_entry(gateway)["resource"]["conclusion"] = "changed after signing"
    with pytest.raises(ValueError, match="does not match"):
        verify_detached(verification_jws(gateway), signing_payload(gateway), keys)


# -- the API and the command line ------------------------------------------------------------------


@pytest.fixture
async def env(tmp_path: Path) -> Any:
    async with review_env(tmp_path) as review:
        await review.service.add_draft("c1", draft_bundle("c1"))
        yield review


def headers(env: ReviewEnv, who: str = "clinician") -> dict[str, str]:
    return {"Authorization": f"Bearer {env.tokens[who]}"}


async def api(
    env: ReviewEnv, method: str, path: str, who: str = "clinician", body: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, env.url + path, headers=headers(env, who), json=body) as answer,
    ):
        data = await answer.json() if "json" in answer.content_type else await answer.read()
        return answer.status, data


async def test_a_clinician_lists_edits_and_approves_with_the_command_line(env: ReviewEnv) -> None:
    code, out, err = await env.cli("review", "list", "--url", env.url)
    assert code == 0, err
    (listed,) = json.loads(out)
    assert set(listed) == {"id", "status", "patient", "created"}
    assert (listed["id"], listed["status"], listed["patient"]) == ("c1", "partial", "Patient/p-42")
    code, out, _ = await env.cli("review", "show", "c1", "--url", env.url)
    shown = json.loads(out)
    assert shown["identifier"]["value"] == "c1/1"
    assert verify_bundle(shown, {env.gateway_key.kid: env.gateway_key.public_key})

    edit = env.data_dir / "edit.json"
    edit.write_text(
        json.dumps(
            {
                "conclusion": "Heart rate 72 /min and SpO2 97 %: no acute concern.",
                "medications": {"c1-1": {"dose": "1 g every 6 h", "decision": "accept"}},
            }
        )
    )
    code, out, err = await env.cli(
        "review", "approve", "c1", "--key", str(env.key_file), "--edit", str(edit),
        "--url", env.url,
    )  # fmt: skip
    assert code == 0, err
    final = json.loads(out)
    valid_fhir(final)
    report = report_entry(final)["resource"]
    assert (report["status"], report["conclusion"]) == (
        "final",
        "Heart rate 72 /min and SpO2 97 %: no acute concern.",
    )
    assert proposals(final)["c1-1"]["status"] == "active"
    assert proposals(final)["c1-2"]["status"] == "cancelled"  # not accepted: never ordered

    path = env.data_dir / "final.json"
    path.write_text(out)
    code, out, err = await env.cli("verify", str(path), "--key", str(env.keys_dir), token=None)
    assert code == 0, err
    assert f"signed by key {env.gateway_key.kid}" in out
    assert f"approved by clara with key {read_private(env.key_file).kid}" in out

    await check_the_pdf_copy(env, final)

    status, draft = await api(env, "GET", "/api/drafts/c1")
    assert status == 200
    assert [(v["version"], v["action"], v["author"]) for v in draft["versions"]] == [
        (1, "drafted", "assistant"),
        (2, "edited", "clara"),
        (3, "approved", "clara"),
    ]
    assert draft["status"] == "final"
    status, first = await api(env, "GET", "/api/drafts/c1/versions/1")
    assert report_entry(first["bundle"])["resource"]["status"] == "partial"

    items = await env.store.outbox_items(limit=100)
    kinds = [
        (i.kind.value, report_entry(json.loads(i.payload))["resource"]["status"]) for i in items
    ]
    assert kinds == [("drafts", "partial"), ("drafts", "partial"), ("drafts", "final")]


async def check_the_pdf_copy(env: ReviewEnv, final: dict[str, Any]) -> None:
    """The PDF is attached to the final report, downloadable, and shows what it should."""
    (form,) = report_entry(final)["resource"]["presentedForm"]
    assert form["contentType"] == "application/pdf"
    status, document = await api(env, "GET", "/api/drafts/c1/pdf")
    assert status == 200
    assert document == base64.b64decode(form["data"])
    path = env.data_dir / "report.pdf"
    path.write_bytes(document)
    await asyncio.to_thread(check_pdf_file, path, read_private(env.key_file).kid)


def check_pdf_file(path: Path, kid: str) -> None:
    """What poppler reads in the PDF: metadata, embedded fonts, the text, a rendered page."""
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    assert "Title:           Consultation report" in info.stdout
    assert "Author:          clara" in info.stdout
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True)
    rows = fonts.stdout.splitlines()[2:]
    assert rows
    assert all(row.split()[-5] == "yes" for row in rows), fonts.stdout  # every font embedded
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(text.split())
    for expected in (
        "Patient: Patient/p-42",
        "Heart rate 72 /min and SpO2 97 %: no acute concern.",
        "Heart rate 72 /min",
        "97 %",
        "ECG: ECG lead II",
        "Paracetamol 1 g every 6 h: ordered",
        "Ibuprofen 400 mg: not ordered",
        "Approved by clara",
        kid,
        "CLINAST_AIRPT",
    ):
        assert expected in flat, expected
    prefix = path.with_name("page")
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(path), str(prefix)], check=True
    )
    page = next(path.parent.glob("page*.png"))
    assert page.stat().st_size > 5000  # a rendered page, grid and trace included


async def test_a_technician_may_not_read_or_approve(env: ReviewEnv) -> None:
    assert (await api(env, "GET", "/api/drafts", "technician"))[0] == 403
    status, _ = await api(
        env, "POST", "/api/drafts/c1/reject", "technician", {"version": 1, "reason": "x"}
    )
    assert status == 403
    code, _, err = await env.cli(
        "review", "approve", "c1", "--key", str(env.key_file), "--url", env.url, token="technician"
    )
    assert code == 1
    assert "it needs the role admin, clinician" in err


async def offer(env: ReviewEnv, who: str = "clinician", version: int = 1) -> dict[str, Any]:
    status, body = await api(
        env, "POST", "/api/drafts/c1/offer", who,
        {"version": version, "action": "approve", "medications": ACCEPT_FIRST},
    )  # fmt: skip
    assert status == 200, body
    return dict(body)


def sign(env: ReviewEnv, offered: dict[str, Any], key: SigningKey | None = None) -> str:
    payload = base64.urlsafe_b64decode(offered["payload"] + "==")
    assert payload == signing_payload(offered["bundle"])
    return Signer(key or read_private(env.key_file), {}).sign_detached(payload)


async def test_a_decision_is_refused_when_stale_forged_or_someone_else_s(env: ReviewEnv) -> None:
    offered = await offer(env)
    status, body = await api(
        env, "POST", "/api/drafts/c1/approve", body={"decision": offered["decision"],
        "signature": sign(env, offered, SigningKey.generate())},
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (403, "bad_signature")

    status, body = await api(
        env, "POST", "/api/drafts/c1/approve", "other clinician",
        {"decision": offered["decision"], "signature": sign(env, offered)},
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (403, "forbidden")

    status, _ = await api(env, "PATCH", "/api/drafts/c1", body={"version": 1, "conclusion": "New."})
    assert status == 200
    status, body = await api(
        env, "POST", "/api/drafts/c1/approve",
        body={"decision": offered["decision"], "signature": sign(env, offered)},
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (409, "stale")
    status, body = await api(env, "PATCH", "/api/drafts/c1", body={"version": 1, "conclusion": "X"})
    assert (status, body["error"]["code"]) == (409, "stale")

    old = dict(offered["decision"]) | {"version": 2, "decision_id": str(uuid.uuid4())}
    old["at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).isoformat()
    status, body = await api(
        env, "POST", "/api/drafts/c1/approve", body={"decision": old, "signature": "a..b"}
    )
    assert (status, body["error"]["code"]) == (409, "stale")
    assert "decide again" in body["error"]["message"]

    check = await env.store.read(lambda s: _audit_entries(s.conn))
    refused = [e for e in check if e["outcome"] == "failure"]
    assert [e["detail"].split(":")[0] for e in refused] == [
        "refused (bad_signature)",
        "refused (forbidden)",
        "refused (stale)",
        "refused (stale)",
    ]


def _audit_entries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [json.loads(row[0]) for row in conn.execute("SELECT entry FROM audit ORDER BY seq")]


async def test_the_same_decision_twice_changes_nothing_the_second_time(env: ReviewEnv) -> None:
    offered = await offer(env)
    body = {"decision": offered["decision"], "signature": sign(env, offered)}
    first = await api(env, "POST", "/api/drafts/c1/approve", body=body)
    second = await api(env, "POST", "/api/drafts/c1/approve", body=body)
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    _, draft = await api(env, "GET", "/api/drafts/c1")
    assert len(draft["versions"]) == 2
    entries = await env.store.read(lambda s: _audit_entries(s.conn))
    assert [e["detail"].split(":")[0] for e in entries if e["outcome"] == "failure"] == [
        "refused (replayed)"
    ]
    status, answer = await api(
        env, "POST", "/api/drafts/c1/reject", body={"version": 2, "reason": "x"}
    )
    assert status == 200  # a final report can be withdrawn
    assert report_entry(answer)["resource"]["status"] == "entered-in-error"
    status, answer = await api(
        env, "POST", "/api/drafts/c1/reject", body={"version": 3, "reason": "x"}
    )
    assert (status, answer["error"]["code"]) == (409, "already_decided")


async def test_reject_from_the_command_line(env: ReviewEnv) -> None:
    code, out, err = await env.cli(
        "review", "reject", "c1", "--reason", "readings of another patient", "--url", env.url
    )
    assert code == 0, err
    rejected = json.loads(out)
    assert report_entry(rejected)["resource"]["status"] == "cancelled"
    assert review_provenance(rejected)["reason"] == [{"text": "readings of another patient"}]
    code, _, err = await env.cli("review", "reject", "c1", "--reason", "again", "--url", env.url)
    assert code == 1
    assert "cancelled already" in err
    code, _, err = await env.cli("review", "show", "nope", "--url", env.url)
    assert (code, err.strip()) == (1, "error: there is no draft 'nope'")


async def test_keygen_and_users_key_and_bad_input(env: ReviewEnv, tmp_path: Path) -> None:
    out_file = tmp_path / "carl.jwk"
    code, out, err = await env.cli("review", "keygen", str(out_file), token=None)
    assert code == 0, err
    public = json.loads(out)
    assert "d" not in public
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"
    assert read_private(out_file).kid == public["kid"]
    code, _, err = await env.cli("review", "keygen", str(out_file), token=None)
    assert code == 2
    assert "exists already" in err

    public_file = tmp_path / "carl.pub.jwk"
    public_file.write_text(out)
    code, out, err = await env.cli(
        "users", "key", "carl", str(public_file), "--data-dir", str(env.data_dir), token=None
    )
    assert code == 0, err
    assert json.loads(out) == {"user": "carl", "kid": public["kid"]}
    assert list(env.users.public_keys("carl")) == [public["kid"]]
    code, _, err = await env.cli(
        "users", "key", "tom", str(public_file), "--data-dir", str(env.data_dir), token=None
    )
    assert code == 2
    assert "only clinicians and admins sign" in err
    code, _, err = await env.cli(
        "users", "key", "ada", str(out_file), "--data-dir", str(env.data_dir), token=None
    )
    assert code == 2
    assert "holds a private key" in err
    code, _, err = await env.cli(
        "review", "approve", "c1", "--key", str(public_file), "--url", env.url
    )
    assert code == 2
    assert "holds no private key" in err
    code, _, err = await env.cli("review", "list", "--url", env.url, token=None)
    assert code == 2
    assert "BEDSIDE_TOKEN" in err


async def test_a_revoked_key_signs_nothing_and_never_returns(env: ReviewEnv) -> None:
    here = ("--data-dir", str(env.data_dir))
    kid = read_private(env.key_file).kid
    code, out, err = await env.cli("users", "keys", "clara", "--json", *here, token=None)
    assert code == 0, err
    [listed] = json.loads(out)
    assert (listed["kid"], listed["revoked"]) == (kid, None)

    code, out, err = await env.cli("users", "revoke-key", "clara", kid, *here, token=None)
    assert (code, out.strip()) == (0, f"clara: signing key {kid} revoked"), err
    assert env.users.public_keys("clara") == {}
    offered = await offer(env)
    status, body = await api(
        env, "POST", "/api/drafts/c1/approve",
        body={"decision": offered["decision"], "signature": sign(env, offered)},
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (403, "bad_signature")
    assert "has no registered key" in body["error"]["message"]

    code, out, _ = await env.cli("users", "keys", "clara", *here, token=None)
    assert (code, out.count("revoked")) == (0, 1)
    public_file = env.data_dir / "clara.pub.jwk"
    public_file.write_text(json.dumps(read_private(env.key_file).public_jwk))
    for args, refusal in (
        (("key", "clara", str(public_file)), "this key was revoked on "),
        (("revoke-key", "clara", kid), "was revoked on "),
        (("revoke-key", "carl", kid), "'carl' has no key"),
        (("keys", "nobody"), "no user 'nobody'"),
    ):
        code, _, err = await env.cli("users", *args, *here, token=None)
        assert code == 2, args
        assert refusal in err, err
    entries = await env.store.read(lambda s: _audit_entries(s.conn))
    assert [e["detail"] for e in entries if e["what"] == "User"] == [f"signing key {kid} revoked"]


async def test_the_audit_trail_records_reads_and_decisions_and_detects_tampering(
    env: ReviewEnv,
) -> None:
    await api(env, "GET", "/api/drafts")
    await api(env, "GET", "/api/drafts/c1")
    offered = await offer(env)
    await api(
        env, "POST", "/api/drafts/c1/approve",
        body={"decision": offered["decision"], "signature": sign(env, offered)},
    )  # fmt: skip
    entries = await env.store.read(lambda s: _audit_entries(s.conn))
    assert [(e["action"], e["user"], e.get("what_id")) for e in entries] == [
        ("search", "clara", None),
        ("read", "clara", "c1"),
        ("approve", "clara", "c1"),
    ]
    assert entries[1]["patient"] == "Patient/p-42"
    status, answer = await api(env, "GET", "/api/audit", "admin")
    assert (status, answer["check"]) == (200, {"ok": True, "entries": 3})
    assert (await api(env, "GET", "/api/audit", "clinician"))[0] == 403

    code, out, err = await env.cli("audit", "verify", "--data-dir", str(env.data_dir), token=None)
    assert (code, json.loads(out)) == (0, {"ok": True, "entries": 3}), err

    db = sqlite3.connect(store_path(env.data_dir))
    entry = db.execute("SELECT entry FROM audit WHERE seq = 2").fetchone()[0]
    db.execute("UPDATE audit SET entry = ? WHERE seq = 2", (entry.replace("clara", "carl"),))
    db.commit()
    code, out, _ = await env.cli("audit", "verify", "--data-dir", str(env.data_dir), token=None)
    assert code == 1
    assert json.loads(out) == {
        "ok": False,
        "entries": 2,
        "problem": "entry 2 was changed",
        "seq": 2,
    }
    db.execute("UPDATE audit SET entry = ? WHERE seq = 2", (entry,))
    db.execute("DELETE FROM audit WHERE seq = 3")
    db.commit()
    db.close()
    code, out, _ = await env.cli("audit", "verify", "--data-dir", str(env.data_dir), token=None)
    assert (code, json.loads(out)["problem"]) == (1, "entries 3 to 3 were deleted")


async def test_audit_entries_leave_as_audit_events_in_the_outbox(env: ReviewEnv) -> None:
    from gateway.review.audit import AuditForwarder

    await api(env, "GET", "/api/drafts/c1")
    await env.trail.record("login", user="clara", role="clinician")
    forwarder = AuditForwarder(env.store, env.trail, GATEWAY_ID)
    assert await forwarder.forward_once() == 2
    assert await forwarder.forward_once() == 0
    items = [i for i in await env.store.outbox_items(limit=100) if i.kind.value == "audit"]
    (item,) = items
    bundle = json.loads(item.payload)
    assert verify_bundle(bundle, {env.gateway_key.kid: env.gateway_key.public_key})
    events = list(valid_fhir(bundle).values())
    assert [(e["action"], e["subtype"][0]["code"]) for e in events] == [
        ("R", "read"),
        ("E", "110122"),
    ]
    assert events[0]["entity"][1]["what"] == {"reference": "Patient/p-42"}
    assert events[1]["agent"][0]["who"]["display"] == "clara"


async def test_per_role_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    limits = {
        "clinician": RateLimit(per_minute=6, burst=2),
        "admin": RateLimit(per_minute=600, burst=50),
    }
    async with review_env(tmp_path, rate_limits=limits) as env, aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.get(env.url + "/api/drafts", headers=headers(env)) as answer:
                statuses.append(answer.status)
                retry = answer.headers.get("Retry-After")
        assert statuses == [200, 200, 429]
        assert retry is not None
        assert 1 <= int(retry) <= 10
        async with session.get(env.url + "/api/drafts", headers=headers(env, "admin")) as answer:
            assert answer.status == 200  # another caller, another bucket
