"""Decisions over MQTT, both ends (docs/contracts.md, "MQTT" and "Review").

The message on ``{prefix}/{gateway_id}/reviews`` (QoS 1, JSON) is ``{"decision": <decision
document>, "signature": <the clinician's compact detached JWS>}``. The signature covers the
signing payload of the Bundle the decision makes of the draft version it names, the same bytes an
approval through the API signs (``gateway.fhir.review.signing_payload``): the hospital side builds
that Bundle itself from the draft it received (:func:`decision_message`), the gateway rebuilds it
from its own copy and checks the signature (:func:`review_handler`). A decision that does not
verify, is stale or replayed changes nothing and is audited; its outcome reaches the hospital as
the signed Bundle on ``drafts`` (or an AuditEvent of the refusal on ``audit``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.fhir.review import Edit, ReviewError, apply_edit, decided_bundle, signing_payload
from gateway.forward.signing import Signer, SigningKey
from gateway.review.decision import DecisionDoc
from gateway.review.errors import ReviewRefusedError
from gateway.review.service import DRAFT_VERSION_SYSTEM, with_version

if TYPE_CHECKING:
    from gateway.forward.inbound import InboundHandler
    from gateway.forward.settings import MqttSettings
    from gateway.review.audit import AuditTrail
    from gateway.review.service import ReviewService

log = logging.getLogger(__name__)


def draft_version(bundle: Mapping[str, Any]) -> tuple[str, int]:
    """(draft id, version) named by a draft Bundle's identifier."""
    identifier = bundle.get("identifier", {})
    value = identifier.get("value") if identifier.get("system") == DRAFT_VERSION_SYSTEM else None
    draft, _, version = str(value or "").rpartition("/")
    if not draft or not version.isdigit():
        raise ReviewRefusedError("this Bundle is not a draft under review (no draft version)")
    return draft, int(version)


def decision_message(draft: Mapping[str, Any], doc: DecisionDoc, key: SigningKey) -> dict[str, Any]:
    """The signed message for ``doc`` about the draft Bundle ``draft`` (see the module text)."""
    base: Mapping[str, Any] = draft
    if doc.edit is not None:
        edit: Edit = doc.edit.edit()
        try:
            base = apply_edit(draft, edit)
        except ReviewError as exc:
            raise ReviewRefusedError(str(exc)) from exc
        base = with_version(base, doc.draft, doc.version + 1)
    try:
        decided = decided_bundle(base, doc.decision())
    except ReviewError as exc:
        raise ReviewRefusedError(str(exc)) from exc
    signature = Signer(key, {}).sign_detached(signing_payload(decided))
    return {"decision": doc.as_json(), "signature": signature}


class DecisionMessage(BaseModel):
    """The message on the reviews topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: DecisionDoc
    signature: str = Field(min_length=1, max_length=4096)


def publish(settings: MqttSettings, gateway_id: str, message: Mapping[str, Any]) -> None:
    """Publish one decision at QoS 1 and return once the broker acknowledged it."""
    import ssl

    import paho.mqtt.publish as paho_publish
    from paho.mqtt.enums import MQTTProtocolVersion

    from gateway.forward.mqtt import topic

    tls: Any = None
    if settings.tls:
        tls = {
            "ca_certs": str(settings.ca_file) if settings.ca_file else None,
            "tls_version": ssl.PROTOCOL_TLS_CLIENT,
        }
        if settings.cert_file is not None:
            tls |= {"certfile": str(settings.cert_file), "keyfile": str(settings.key_file)}
    auth: Any = None
    if settings.username is not None:
        password = None if settings.password is None else settings.password.get_secret_value()
        auth = {"username": settings.username, "password": password}
    paho_publish.single(
        topic(settings.topic_prefix, gateway_id, "reviews"),
        json.dumps(message).encode("utf-8"),
        qos=1,
        hostname=settings.host,
        port=settings.port,
        client_id=settings.client_id or "",
        auth=auth,
        tls=tls,
        protocol=MQTTProtocolVersion.MQTTv5,
    )


def review_handler(service: ReviewService, trail: AuditTrail) -> InboundHandler:
    """The gateway's handler of the ``reviews`` topic (see the module text)."""

    async def handle(payload: bytes) -> None:
        try:
            message = DecisionMessage.model_validate_json(payload)
        except ValidationError as exc:
            log.warning(
                "a message on the reviews topic is not a signed decision (%d problem(s))",
                exc.error_count(),
            )
            await trail.record(
                "update", user=None, outcome="failure", what="DiagnosticReport",
                detail="a message on the reviews topic is not a signed decision document",
            )  # fmt: skip
            return
        try:
            outcome = await service.decide(message.decision, message.signature, via="mqtt")
        except ReviewRefusedError as exc:  # audited by decide()
            log.warning("decision %s over MQTT refused: %s", message.decision.decision_id, exc)
            return
        if outcome.replayed:
            log.info(
                "decision %s over MQTT seen before: nothing changed", message.decision.decision_id
            )

    return handle
