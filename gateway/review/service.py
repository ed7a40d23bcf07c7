"""Draft reports under review: list, read, edit (a version each), offer a decision to sign,
approve or reject (docs/architecture.md, "Drafts and their review"; docs/contracts.md, "Review").

The HTTP API and the MQTT ``reviews`` topic both end in :meth:`ReviewService.decide`, so a decision
has the same effect, checks and audit whichever way it came:

1. the decision is for this gateway, by the reviewer who sent it (API) and not seen before (a
   replayed decision id returns the earlier outcome and changes nothing);
2. it is recent (``max_age_s``; a decision from the future beyond ``skew_s`` is refused too) and
   names the draft's latest version (else 409 ``stale``: reload and decide again);
3. the decided Bundle is rebuilt here from that version (:func:`gateway.fhir.review.decided_bundle`)
   and the clinician's detached JWS is checked over its signing payload against the keys the
   reviewer registered (``bedside users key``); an approval needs one, a rejection through the
   API may go without (the session authenticates it), over MQTT it needs one;
4. one durable transaction stores the new version, the decision, its audit entry and the signed
   Bundle in the outbox (``drafts`` topic).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.fhir.audit import audit_entry
from gateway.fhir.resource import NAMESPACE
from gateway.fhir.review import (
    Edit,
    Reviewer,
    ReviewError,
    apply_edit,
    decided_bundle,
    report_entry,
    signing_payload,
    with_verification_signature,
)
from gateway.forward.errors import SignatureError
from gateway.forward.signing import b64url_encode, verify_detached
from gateway.review import pdf
from gateway.review.decision import DecisionDoc
from gateway.review.errors import (
    AlreadyDecidedError,
    DraftNotFoundError,
    NotTheReviewerError,
    ReviewRefusedError,
    ReviewSignatureError,
    StaleDecisionError,
)
from gateway.store import audit as audit_table
from gateway.store import reviews as tables
from gateway.store.models import TopicKind
from gateway.store.reviews import DraftQuery, NewVersion, StaleVersionError, UnknownDraftError

if TYPE_CHECKING:
    from gateway.store.aio import AsyncStore
    from gateway.store.store import BundleSigner, Store

log = logging.getLogger(__name__)

DRAFT_VERSION_SYSTEM: Final = f"{NAMESPACE}/sid/draft-version"
SYSTEM_AUTHOR: Final = "assistant"
DECIDED: Final = frozenset({"cancelled", "entered-in-error"})
DONE: Final = {"approve": "approved", "reject": "rejected"}  # draft_versions.action
STRIP_SCAN: Final = 500  # stored Observations searched for the ECG strip of a draft


class ReviewerKeys(Protocol):
    """The reviewers' registered public keys (``gateway.users.UserDirectory``)."""

    def public_keys(self, name: str) -> dict[str, Ed25519PublicKey]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision's result: the signed Bundle that left, and whether it was a replay."""

    bundle: dict[str, Any]
    replayed: bool = False


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def with_version(bundle: Mapping[str, Any], draft_id: str, version: int) -> dict[str, Any]:
    """The draft Bundle naming its version (``Bundle.identifier``), so that a reviewer elsewhere
    knows which version a decision is about; a Bundle id of its own, so that every version is
    forwarded."""
    value = f"{draft_id}/{version}"
    out = {k: v for k, v in bundle.items() if k not in ("identifier", "signature")}
    out["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{DRAFT_VERSION_SYSTEM}|{value}"))
    out["identifier"] = {"system": DRAFT_VERSION_SYSTEM, "value": value}
    return out


def report_status(bundle: Mapping[str, Any]) -> str:
    return str(report_entry(bundle)["resource"].get("status"))


class ReviewService:
    """Draft reports and the clinicians' decisions on them (see the module text)."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        gateway_id: str,
        signer: BundleSigner,
        keys: ReviewerKeys,
        transcripts: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        pdf: bool = True,
        audit_written: Callable[[], None] | None = None,
        max_age_s: float = 24 * 3600.0,
        skew_s: float = 300.0,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._store = store
        self.gateway_id = gateway_id
        self._signer = signer
        self._keys = keys
        self._transcripts = transcripts
        self._pdf = pdf
        self._audit_written = audit_written or (lambda: None)
        self.max_age_s = max_age_s
        self.skew_s = skew_s
        self._clock = clock

    # -- drafts arrive ------------------------------------------------------------------------

    async def add_draft(self, draft_id: str, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """Record a new draft (its first version); returns it signed, naming its version (what
        the consultation forwards). A draft already recorded is left as it is."""
        unsigned = with_version(bundle, draft_id, 1)
        signed = self._signer.sign_bundle(unsigned)
        subject = report_entry(unsigned)["resource"].get("subject", {}).get("reference")
        first = NewVersion(
            report_status(unsigned),
            "drafted",
            SYSTEM_AUTHOR,
            _text(self._clock()),
            unsigned,
            signed,
        )

        def write(store: Store) -> None:
            with store.transaction() as conn:
                if tables.add_draft(conn, draft_id, subject, first):
                    store.enqueue_in(conn, TopicKind.DRAFTS, signed, signed=True)

        await self._store.write(write, notify=True)
        return signed

    # -- reading ------------------------------------------------------------------------------

    async def drafts(self, query: DraftQuery) -> tuple[list[dict[str, Any]], int]:
        def read(store: Store) -> tuple[list[tables.DraftRecord], int]:
            return tables.list_drafts(store.conn, query)

        rows, total = await self._store.read(read)
        return [r.as_json() for r in rows], total

    async def _load(self, draft_id: str) -> tuple[tables.DraftRecord, list[tables.VersionRecord]]:
        def read(store: Store) -> tuple[tables.DraftRecord, list[tables.VersionRecord]]:
            return tables.get_draft(store.conn, draft_id), tables.versions(store.conn, draft_id)

        try:
            return await self._store.read(read)
        except UnknownDraftError as exc:
            raise DraftNotFoundError(f"there is no draft {draft_id!r}") from exc

    async def get(self, draft_id: str) -> dict[str, Any]:
        """The draft: its latest version's Bundle (signed when one left), every version, the
        Observations it refers to, the consultation's transcript and citations, ECG strips."""
        draft, versions = await self._load(draft_id)
        latest = versions[-1]
        bundle = latest.signed or latest.bundle
        resources = [e["resource"] for e in bundle.get("entry", [])]
        observations = [r for r in resources if r.get("resourceType") == "Observation"]
        record = await self._transcripts(draft_id) if self._transcripts is not None else None
        messages = record.get("messages", []) if record else []
        return draft.as_json() | {
            "bundle": bundle,
            "versions": [v.summary() for v in versions],
            "observations": observations,
            "transcript": messages,
            "citations": [c for m in messages for c in m.get("citations", [])],
            "strips": [o for o in observations if "valueSampledData" in o]
            or await self._nearest_strip(draft.created),
        }

    async def _nearest_strip(self, before: str) -> list[dict[str, Any]]:
        """The last ECG strip stored before the draft, when its Bundle holds none."""
        limit = dt.datetime.fromisoformat(before)
        for row in await self._store.latest_observations(STRIP_SCAN):
            if "valueSampledData" in row.resource and (
                row.effective is None or row.effective <= limit
            ):
                return [row.resource]
        return []

    async def latest(self, draft_id: str) -> dict[str, Any]:
        """The draft's record and its latest Bundle (signed when one left), nothing more."""
        draft, versions = await self._load(draft_id)
        return draft.as_json() | {"bundle": versions[-1].signed or versions[-1].bundle}

    async def version(self, draft_id: str, number: int) -> dict[str, Any]:
        _, versions = await self._load(draft_id)
        for v in versions:
            if v.version == number:
                return v.summary() | {"bundle": v.signed or v.bundle}
        raise DraftNotFoundError(f"draft {draft_id!r} has no version {number}")

    # -- edits --------------------------------------------------------------------------------

    async def edit(self, draft_id: str, version: int, edit: Edit, *, user: str) -> dict[str, Any]:
        """Make the next version with ``edit`` applied to ``version`` (the latest)."""
        draft, versions = await self._load(draft_id)
        if draft.status in DECIDED:
            raise AlreadyDecidedError(f"draft {draft_id} is {draft.status}: it cannot be edited")
        if version != draft.version:
            raise StaleDecisionError(
                f"draft {draft_id} is at version {draft.version}, not {version}: reload it"
            )
        try:
            bundle = with_version(apply_edit(versions[-1].bundle, edit), draft_id, version + 1)
        except ReviewError as exc:
            raise ReviewRefusedError(str(exc)) from exc
        # An edited draft goes to the hospital side too (a remote reviewer decides on the
        # latest version); an edited final report waits for its approval as an amendment.
        forward = draft.status == "partial"
        signed = self._signer.sign_bundle(bundle) if forward else None
        new = NewVersion(draft.status, "edited", user, _text(self._clock()), bundle, signed)
        entry = audit_entry(
            at=self._clock(), action="update", user=user, what="DiagnosticReport",
            what_id=draft_id, patient=draft.patient, detail=f"edited: version {version + 1}",
        )  # fmt: skip

        def write(store: Store) -> int:
            with store.transaction() as conn:
                number = tables.add_version(conn, draft_id, version, new)
                audit_table.append(conn, entry)
                if signed is not None:
                    store.enqueue_in(conn, TopicKind.DRAFTS, signed, signed=True)
                return number

        try:
            number = await self._store.write(write, notify=forward)
        except StaleVersionError as exc:
            raise StaleDecisionError(str(exc)) from exc
        self._audit_written()
        return {"id": draft_id, "version": number, "status": draft.status}

    # -- decisions ----------------------------------------------------------------------------

    async def offer(self, doc: DecisionDoc) -> dict[str, Any]:
        """The decided Bundle for ``doc`` and the bytes the clinician signs (base64url)."""
        _, versions = await self._load(doc.draft)
        if doc.version != versions[-1].version:
            raise StaleDecisionError(
                f"draft {doc.draft} is at version {versions[-1].version}, not {doc.version}"
            )
        base, _ = self._base(versions[-1], doc)
        decided = self._decided(base, doc)
        return {
            "decision": doc.as_json(),
            "bundle": decided,
            "payload": b64url_encode(signing_payload(decided)),
        }

    def _base(
        self, latest: tables.VersionRecord, doc: DecisionDoc
    ) -> tuple[dict[str, Any], NewVersion | None]:
        """The Bundle the decision is made on: the latest version, or that version with the
        decision's edit applied (then also the edited version to store before the decision)."""
        if doc.edit is None:
            return latest.bundle, None
        try:
            edited = apply_edit(latest.bundle, doc.edit.edit())
        except ReviewError as exc:
            raise ReviewRefusedError(str(exc)) from exc
        bundle = with_version(edited, doc.draft, doc.version + 1)
        at = _text(self._clock())
        return bundle, NewVersion(latest.status, "edited", doc.reviewer, at, bundle)

    def _decided(self, bundle: dict[str, Any], doc: DecisionDoc) -> dict[str, Any]:
        try:
            return decided_bundle(bundle, doc.decision())
        except ReviewError as exc:
            raise ReviewRefusedError(str(exc)) from exc

    def new_decision(
        self, draft_id: str, version: int, action: str, reviewer: str, **kw: Any
    ) -> DecisionDoc:
        return DecisionDoc.new(
            gateway=self.gateway_id, draft=draft_id, version=version, action=action,  # type: ignore[arg-type]
            reviewer=reviewer, at=self._clock(), **kw,
        )  # fmt: skip

    def _check_time(self, doc: DecisionDoc) -> None:
        age = (self._clock() - doc.at).total_seconds()
        if age > self.max_age_s:
            raise StaleDecisionError(
                f"the decision was made {age / 3600:.1f} h ago, more than the "
                f"{self.max_age_s / 3600:.0f} h a decision stays valid: decide again"
            )
        if -age > self.skew_s:
            raise StaleDecisionError("the decision is dated in the future: check the clock")

    async def decide(
        self,
        doc: DecisionDoc,
        jws: str | None,
        *,
        via: str,
        principal: str | None = None,
        address: str | None = None,
    ) -> Outcome:
        """Apply a decision (see the module text); refused ones are audited and raised, a replayed
        one is audited and answered with its earlier outcome."""
        try:
            outcome = await self._decide(doc, jws, via=via, principal=principal, address=address)
        except ReviewRefusedError as exc:
            await self._audit_refusal(doc, f"refused ({exc.code}): {exc}", principal, address)
            raise
        if outcome.replayed:
            detail = f"refused (replayed): decision {doc.decision_id} seen before; nothing changed"
            await self._audit_refusal(doc, detail, principal, address)
        return outcome

    async def _audit_refusal(
        self, doc: DecisionDoc, detail: str, principal: str | None, address: str | None
    ) -> None:
        entry = audit_entry(
            at=self._clock(), action=doc.action, user=principal or doc.reviewer,
            outcome="failure", what="DiagnosticReport", what_id=doc.draft, detail=detail,
            address=address,
        )  # fmt: skip

        def write(store: Store) -> None:
            with store.transaction() as conn:
                audit_table.append(conn, entry)

        await self._store.write(write)
        self._audit_written()

    async def _decide(
        self,
        doc: DecisionDoc,
        jws: str | None,
        *,
        via: str,
        principal: str | None,
        address: str | None,
    ) -> Outcome:
        if principal is not None and doc.reviewer != principal:
            raise NotTheReviewerError(
                f"the decision is signed for {doc.reviewer!r}; you are {principal!r}"
            )
        if doc.gateway != self.gateway_id:
            raise ReviewRefusedError(f"the decision is for gateway {doc.gateway!r}, not this one")
        replay = await self._replay(doc)
        if replay is not None:
            return replay
        self._check_time(doc)
        draft, versions = await self._load(doc.draft)
        if draft.status in DECIDED:
            raise AlreadyDecidedError(f"draft {doc.draft} is {draft.status} already")
        if doc.version != draft.version:
            raise StaleDecisionError(
                f"draft {doc.draft} is at version {draft.version}, not {doc.version}: "
                "reload it and decide again"
            )
        base, edited = self._base(versions[-1], doc)
        decided = self._decided(base, doc)
        reviewer = Reviewer(doc.reviewer, self.gateway_id)
        kid = None
        if jws is not None:
            kid = self._verify(jws, decided, doc.reviewer)
            decided = with_verification_signature(decided, jws, reviewer, self._clock())
        elif doc.action == "approve" or via != "api":
            raise ReviewSignatureError(
                "an approval (and any decision over MQTT) needs the clinician's signature: "
                "sign with `bedside review approve --key`"
            )
        if doc.action == "approve" and self._pdf:
            decided = await self._with_pdf(decided, kid, draft.created)
        signed = self._signer.sign_bundle(decided)
        status = report_status(decided)
        new = NewVersion(
            status, DONE[doc.action], doc.reviewer, _text(self._clock()), decided, signed
        )
        detail = f"{status} via {via}" + (f", key {kid}" if kid else "")
        entry = audit_entry(
            at=self._clock(), action=doc.action, user=doc.reviewer, what="DiagnosticReport",
            what_id=doc.draft, patient=draft.patient, detail=detail, address=address,
        )  # fmt: skip

        def write(store: Store) -> None:
            with store.transaction() as conn:
                version = doc.version
                if edited is not None:
                    version = tables.add_version(conn, doc.draft, version, edited)
                version = tables.add_version(conn, doc.draft, version, new)
                tables.add_decision(
                    conn, str(doc.decision_id), doc.draft, version, action=doc.action,
                    reviewer=doc.reviewer, via=via, at=doc.at.isoformat(),
                )  # fmt: skip
                audit_table.append(conn, entry)
                store.enqueue_in(conn, TopicKind.DRAFTS, signed, signed=True)

        try:
            await self._store.write(write, notify=True)
        except StaleVersionError as exc:
            raise StaleDecisionError(str(exc)) from exc
        self._audit_written()
        log.info(
            "draft %s %s by %s via %s (%s)", doc.draft, DONE[doc.action], doc.reviewer, via, status
        )
        return Outcome(signed)

    async def _with_pdf(
        self, decided: dict[str, Any], kid: str | None, created: str
    ) -> dict[str, Any]:
        """The approved Bundle with its PDF copy (rendered in a thread: tens of milliseconds)."""
        strips = [
            e["resource"] for e in decided.get("entry", [])
            if "valueSampledData" in e["resource"]
        ] or await self._nearest_strip(created)  # fmt: skip
        document = await asyncio.to_thread(
            pdf.render, decided, kid=kid, strips=strips, gateway_id=self.gateway_id
        )
        status = report_status(decided)
        return pdf.with_pdf(decided, document, f"Consultation report ({status})")

    async def _replay(self, doc: DecisionDoc) -> Outcome | None:
        def read(store: Store) -> dict[str, Any] | None:
            return tables.decision_seen(store.conn, str(doc.decision_id))

        seen = await self._store.read(read)
        if seen is None:
            return None
        if seen["draft"] != doc.draft or seen["action"] != doc.action:
            raise ReviewRefusedError("this decision id was used for another decision")
        result = await self.version(doc.draft, int(seen["version"]))
        return Outcome(result["bundle"], replayed=True)

    def _verify(self, jws: str, decided: Mapping[str, Any], reviewer: str) -> str:
        keys = self._keys.public_keys(reviewer)
        if not keys:
            raise ReviewSignatureError(
                f"{reviewer!r} has no registered key: register one with "
                f"`bedside users key {reviewer} PUBLIC.jwk`"
            )
        try:
            return verify_detached(jws, signing_payload(decided), keys)
        except SignatureError as exc:
            raise ReviewSignatureError(
                f"the signature is not {reviewer!r}'s over this decision: {exc}"
            ) from exc
