"""``bedside review keygen|list|show|approve|reject`` and ``bedside audit verify``
(docs/contracts.md, "Review" and "Audit trail").

The review commands run on the clinician's own machine and talk to the gateway's API (``--url``,
``--token`` or ``BEDSIDE_TOKEN``); the private key (``keygen``'s file) stays there: ``approve``
signs the bytes the gateway offers, after checking that they are the canonical form of the Bundle
it showed. Output is JSON on stdout. Exit status: 0 success; 1 the gateway refused (its reason on
stderr: 403, 409 …) or could not be reached; 2 bad input (a file, a key, an option).

``audit verify`` reads the data directory's audit trail (the gateway may be running) and prints
``{"ok", "entries", "problem"?, "seq"?}``; exit 0 when the chain is intact, 1 when not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer

from gateway.command_options import ConfigOption, DataDirOption, fail
from gateway.errors import BedsideError

if TYPE_CHECKING:
    from gateway.forward.signing import SigningKey

REFUSED: Final = 1
DEFAULT_URL: Final = "http://127.0.0.1:8080"

review_app = typer.Typer(
    help="Review draft reports: list, show, approve (signed) or reject.", no_args_is_help=True
)
audit_app = typer.Typer(help="The audit trail of the data directory.", no_args_is_help=True)

UrlOption = Annotated[str, typer.Option("--url", help="The gateway's API.")]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="BEDSIDE_TOKEN", help="Your API token (or BEDSIDE_TOKEN)."),
]
IdArgument = Annotated[str, typer.Argument(help="The draft's id (its consultation id).")]
ViaMqttOption = Annotated[
    str | None,
    typer.Option(
        "--via-mqtt",
        help="Send the signed decision over MQTT (mqtt[s]://host:port) instead of the API.",
    ),
]
DraftOption = Annotated[
    Path | None,
    typer.Option("--draft", help="With --via-mqtt: the draft Bundle as received (JSON)."),
]
GatewayOption = Annotated[
    str | None, typer.Option("--gateway", help="With --via-mqtt: the gateway's id.")
]
ReviewerOption = Annotated[
    str | None, typer.Option("--reviewer", help="With --via-mqtt: your user name on it.")
]
PrefixOption = Annotated[str, typer.Option("--topic-prefix", help="MQTT topic prefix.")]
CaOption = Annotated[Path | None, typer.Option("--ca", help="CA bundle for mqtts://.")]


def _refused(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(REFUSED)


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


class _Api:
    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            fail("no token: give --token or set BEDSIDE_TOKEN (bedside users token NAME)")
        self.url = url.rstrip("/")
        self.token = token

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        from gateway.web.local import LocalApiError, request_json

        try:
            return request_json(self.url, method, path, self.token, body)
        except LocalApiError as exc:
            _refused(str(exc))


@review_app.command("keygen")
def review_keygen(
    out: Annotated[Path, typer.Argument(help="Where to write the private key (a new file).")],
) -> None:
    """Make your signing key pair: the private JWK goes to OUT (0600); the public JWK is printed
    (register it with `bedside users key NAME PUBLIC.jwk`)."""
    from gateway.review.keys import generate, write_private

    key = generate()
    try:
        write_private(out, key)
    except BedsideError as exc:
        fail(str(exc))
    typer.echo(json.dumps(key.public_jwk))


@review_app.command("list")
def review_list(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    status: Annotated[
        str | None, typer.Option("--status", help="partial, final, cancelled …")
    ] = None,
) -> None:
    """The drafts, newest first: a JSON array of {id, status, patient, created}."""
    api = _Api(url, token)
    query = f"?status={status}" if status else ""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        answer = api("GET", f"/api/drafts{query}{'&' if query else '?'}page={page}&per_page=100")
        rows += answer["data"]
        if len(rows) >= answer["total"] or not answer["data"]:
            break
        page += 1
    _print([{k: r[k] for k in ("id", "status", "patient", "created")} for r in rows])


@review_app.command("show")
def review_show(
    draft_id: IdArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None
) -> None:
    """The draft's latest Bundle."""
    _print(_Api(url, token)("GET", f"/api/drafts/{draft_id}")["bundle"])


def _read_edit(path: Path) -> dict[str, Any]:
    try:
        edit = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{path}: cannot read it ({exc.strerror})")
    except ValueError as exc:
        fail(f"{path}: not JSON ({exc})")
    if not isinstance(edit, dict) or not set(edit) <= {"conclusion", "findings", "medications"}:
        fail(f"{path}: expected an object with conclusion, findings and/or medications")
    medications = edit.get("medications", {})
    if not isinstance(medications, dict) or not all(
        isinstance(v, dict) for v in medications.values()
    ):
        fail(f"{path}: medications: expected {{proposal id: {{text?, dose?, decision?}}}}")
    return edit


def _apply_edit(api: _Api, draft_id: str, version: int, edit: dict[str, Any]) -> int:
    changes: dict[str, Any] = {k: v for k, v in edit.items() if k != "medications"}
    meds = {
        pid: {k: v for k, v in m.items() if k in ("text", "dose")}
        for pid, m in edit.get("medications", {}).items()
    }
    changes["medications"] = {pid: m for pid, m in meds.items() if m}
    if not changes["medications"]:
        del changes["medications"]
    if not changes:
        return version
    return int(api("PATCH", f"/api/drafts/{draft_id}", {"version": version, **changes})["version"])


@review_app.command("approve")
def review_approve(
    draft_id: IdArgument,
    key: Annotated[Path, typer.Option("--key", help="Your private key file (keygen's).")],
    edit: Annotated[
        Path | None,
        typer.Option(
            "--edit",
            help="JSON: {conclusion?, findings?, medications?: {id: {text?, dose?, decision?}}}.",
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    via_mqtt: ViaMqttOption = None,
    draft_file: DraftOption = None,
    gateway: GatewayOption = None,
    reviewer: ReviewerOption = None,
    topic_prefix: PrefixOption = "bedside",
    ca: CaOption = None,
) -> None:
    """Approve the draft (after your edits), signed with your key; prints the final Bundle (or,
    over MQTT, the decision sent). A proposed medication is ordered only when the edit file says
    "decision": "accept"."""
    from gateway.fhir.review import proposals, signing_payload
    from gateway.forward.signing import Signer, b64url_decode
    from gateway.review.keys import read_private

    try:
        signing_key = read_private(key)
    except BedsideError as exc:
        fail(str(exc))
    changes = _read_edit(edit) if edit is not None else {}
    if via_mqtt is not None:
        remote = _Remote(via_mqtt, draft_file, gateway, reviewer, topic_prefix, ca)
        remote.send(draft_id, "approve", signing_key, changes=changes)
        return
    api = _Api(url, token)
    draft = api("GET", f"/api/drafts/{draft_id}")
    version = _apply_edit(api, draft_id, int(draft["version"]), changes)
    wanted = changes.get("medications", {})
    decisions = {
        pid: "accept" if wanted.get(pid, {}).get("decision") == "accept" else "reject"
        for pid in proposals(draft["bundle"])
    }
    offer = api(
        "POST",
        f"/api/drafts/{draft_id}/offer",
        {"version": version, "action": "approve", "medications": decisions},
    )
    payload = b64url_decode(offer["payload"])
    if payload != signing_payload(offer["bundle"]):
        _refused("the gateway offered bytes that are not the Bundle it showed; nothing was signed")
    signature = Signer(signing_key, {}).sign_detached(payload)
    final = api(
        "POST",
        f"/api/drafts/{draft_id}/approve",
        {"decision": offer["decision"], "signature": signature},
    )
    _print(final)


@review_app.command("reject")
def review_reject(
    draft_id: IdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the report).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    via_mqtt: ViaMqttOption = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="With --via-mqtt: your private key file.")
    ] = None,
    draft_file: DraftOption = None,
    gateway: GatewayOption = None,
    reviewer: ReviewerOption = None,
    topic_prefix: PrefixOption = "bedside",
    ca: CaOption = None,
) -> None:
    """Reject the draft with a reason; prints the Bundle of the rejected report (or, over MQTT,
    the decision sent: a decision over MQTT is always signed, so give --key)."""
    if not reason.strip():
        fail("--reason: give the reason for the rejection")
    if via_mqtt is not None:
        from gateway.review.keys import read_private

        if key is None:
            fail("--key: a decision sent over MQTT must be signed")
        try:
            signing_key = read_private(key)
        except BedsideError as exc:
            fail(str(exc))
        remote = _Remote(via_mqtt, draft_file, gateway, reviewer, topic_prefix, ca)
        remote.send(draft_id, "reject", signing_key, reason=reason)
        return
    api = _Api(url, token)
    draft = api("GET", f"/api/drafts/{draft_id}")
    _print(
        api(
            "POST",
            f"/api/drafts/{draft_id}/reject",
            {"version": draft["version"], "reason": reason},
        )
    )


class _Remote:
    """A decision sent over MQTT (gateway.review.remote): built and signed here from the draft
    Bundle the hospital received."""

    def __init__(
        self,
        url: str,
        draft_file: Path | None,
        gateway: str | None,
        reviewer: str | None,
        topic_prefix: str,
        ca: Path | None,
    ) -> None:
        from pydantic import ValidationError

        from gateway.forward.settings import MqttSettings, validation_message

        if draft_file is None or gateway is None or reviewer is None:
            fail("--via-mqtt needs --draft FILE, --gateway ID and --reviewer NAME")
        try:
            self.settings = MqttSettings(url=url, topic_prefix=topic_prefix, ca_file=ca)
        except ValidationError as exc:
            fail(validation_message(exc))
        try:
            self.draft = json.loads(draft_file.read_text(encoding="utf-8"))
        except OSError as exc:
            fail(f"{draft_file}: cannot read it ({exc.strerror})")
        except ValueError as exc:
            fail(f"{draft_file}: not JSON ({exc})")
        self.gateway = gateway
        self.reviewer = reviewer

    def send(
        self,
        draft_id: str,
        action: str,
        key: SigningKey,
        *,
        changes: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        import datetime as dt

        from pydantic import ValidationError

        from gateway.fhir.review import proposals
        from gateway.review.decision import DecisionDoc, EditDoc
        from gateway.review.remote import decision_message, draft_version, publish

        changes = changes or {}
        try:
            named, version = draft_version(self.draft)
            if named != draft_id:
                fail(f"--draft holds draft {named}, not {draft_id}")
            wanted = changes.get("medications", {})
            edit = {k: v for k, v in changes.items() if k != "medications"}
            meds = {
                p: {k: v for k, v in m.items() if k in ("text", "dose")} for p, m in wanted.items()
            }
            if any(meds.values()):
                edit["medications"] = {p: m for p, m in meds.items() if m}
            doc = DecisionDoc.new(
                gateway=self.gateway, draft=draft_id, version=version, action=action,  # type: ignore[arg-type]
                reviewer=self.reviewer, at=dt.datetime.now(dt.UTC), reason=reason,
                medications={
                    p: "accept" if wanted.get(p, {}).get("decision") == "accept" else "reject"
                    for p, r in proposals(self.draft).items() if r.get("status") == "draft"
                } if action == "approve" else {},
                edit=EditDoc.model_validate(edit) if edit else None,
            )  # fmt: skip
            message = decision_message(self.draft, doc, key)
        except ValidationError as exc:
            fail(f"the decision is not valid: {exc.errors()[0]['msg']}")
        except BedsideError as exc:
            fail(str(exc))
        try:
            publish(self.settings, self.gateway, message)
        except OSError as exc:
            _refused(f"no broker answers at {self.settings.host}:{self.settings.port} ({exc})")
        _print({"decision_id": message["decision"]["decision_id"], "published": True})


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Check the audit trail's hash chain: exit 0 when intact, 1 naming the first break."""
    from gateway.config import load_settings
    from gateway.store import audit as audit_table
    from gateway.store.store import Store, store_path

    try:
        settings = load_settings(config, data_dir=data_dir)
        path = store_path(settings.data_dir)
        if not path.exists():
            fail(f"{path}: no store here; check --data-dir")
        with Store(path) as store:
            check = audit_table.verify(store.conn)
    except BedsideError as exc:
        fail(str(exc))
    _print(check.as_json())
    if not check.ok:
        raise typer.Exit(REFUSED)


def register(app: typer.Typer) -> None:
    """Add ``review`` and ``audit`` to the ``bedside`` app."""
    app.add_typer(review_app, name="review")
    app.add_typer(audit_app, name="audit")
