"""Consultations: the conversation loop with ``<request_observation>``, and the signed draft report.

A :class:`Consultation` is one conversation with the local model about the patient at this
bedside. Each message of the clinician produces a reply, streamed as events
(:class:`TokenEvent`, :class:`ObservationRequested`, :class:`ObservationReceived`,
:class:`ObservationUnavailable`, then one :class:`Done`)::

    service = ConsultationService(
        engine, sensors,                       # Engine (started); SensorManager or alike
        gateway=gateway.info, signer=signer,   # GatewayInfo; the store's Signer (same key)
        store=gateway.store, retriever=retriever, patient=patient,
        devices=sensor_device_resolver(manager.statuses, ingest.sensor_info),
        profiles=profiles,                     # sensor kind → DeviceProfile (codes, timeouts)
        archive_dir=data_dir / "consultations",
    )
    consultation = service.create(require=["8867-4", "59408-5"])
    async with consultation.send("How is the patient?") as reply:
        async for event in reply: ...
    signed_bundle = await service.close(consultation.id)

How a reply runs (docs/architecture.md, "assistant/"):

1. The first message carries the system prompt (:mod:`gateway.assistant.prompts`): the sensors
   (kind, state, the LOINC codes each measures), the newest stored Observation per code, the
   passages retrieved for the message with their citations, and the protocol. Later messages
   carry the passages retrieved for them.
2. ``require`` (the intake): for each required code not obtained yet the gateway forces the tag
   with a grammar that allows exactly ``<request_observation code="X"/>`` — the intake works the
   same with any model — then measures and feeds the result back.
3. The model's reply streams with the stop string ``<request_observation``. When the model opens
   a tag the gateway completes it with a grammar that allows only the codes connected sensors can
   measure now (``sensors.can_measure()``, the allow-list); with none measurable, any well-formed
   LOINC code, answered "unavailable" without calling a sensor. A code outside the allow-list never
   reaches ``sensors.measure()``.
4. The measurement (timeout per sensor kind, from its device profile's ``[measure] timeout_s``:
   blood pressure 120 s, others 20 s) comes back as the next user turn — value, unit, time, the
   Observation's Bundle reference — or "unavailable: reason", one plain sentence per machine
   code (:data:`UNAVAILABLE_REASONS`, the ``observation_unavailable`` event's ``reason_code``);
   a cuff inflation is started only with ``allow_cuff_inflation``; the model continues on the same
   KV cache: the consultation keeps the exact tokens of its context and appends the new turn's
   tokens, so the engine evaluates only those (:class:`StepUsage` records it per step).
5. Limits per reply: at most ``max_measurements_per_reply`` model-requested measurements (the
   intake is bounded by its own list), a token budget, a timeout.

Closing runs a JSON-schema-constrained generation (:mod:`gateway.assistant.report`), builds the
FHIR transaction Bundle, signs it, enqueues it on the drafts topic of every uplink
(``store.enqueue_bundle(TopicKind.DRAFTS, …)``) and returns it signed.

What is persisted: the signed draft Bundle in the store's outbox (every uplink); the consultation
itself (history, Observations with their resources, usage, the draft) as one JSON file per
consultation in ``archive_dir`` (mode 0600), rewritten after every reply and on closing, so the
record survives a restart (:meth:`ConsultationService.snapshot` reads it back).

The modules: :mod:`.conversation` (the loop), :mod:`.service`, :mod:`.events`, :mod:`.errors`,
:mod:`.ports` (what the loop depends on, as protocols), :mod:`.observations`, :mod:`.archive`;
the settings are :class:`gateway.assistant.settings.ConsultationSettings`.
"""

from gateway.assistant.archive import ConsultationArchive
from gateway.assistant.consultation.conversation import Consultation, ConsultationDeps
from gateway.assistant.consultation.errors import (
    ConsultationBusyError,
    ConsultationClosedError,
    ConsultationError,
    ConsultationFullError,
    ConsultationInputError,
    ConsultationNotFoundError,
    ReportError,
)
from gateway.assistant.consultation.events import (
    UNAVAILABLE_REASONS,
    ConsultationEvent,
    Done,
    FinishReason,
    ObservationReceived,
    ObservationRequested,
    ObservationUnavailable,
    ReplyUsage,
    StepKind,
    StepUsage,
    TokenEvent,
    Unavailable,
)
from gateway.assistant.consultation.observations import (
    UsedObservation,
    mapped_observation,
    used_observation,
)
from gateway.assistant.consultation.ports import (
    DeviceResolver,
    DraftStore,
    PassageLike,
    RetrieverLike,
    SensorProfile,
    Sensors,
    SensorStatusLike,
    sensor_device_resolver,
)
from gateway.assistant.consultation.reply import Reply
from gateway.assistant.consultation.service import ConsultationService, file_sha256
from gateway.assistant.settings import ConsultationSettings

__all__ = [
    "UNAVAILABLE_REASONS",
    "Consultation",
    "ConsultationArchive",
    "ConsultationBusyError",
    "ConsultationClosedError",
    "ConsultationDeps",
    "ConsultationError",
    "ConsultationEvent",
    "ConsultationFullError",
    "ConsultationInputError",
    "ConsultationNotFoundError",
    "ConsultationService",
    "ConsultationSettings",
    "DeviceResolver",
    "Done",
    "DraftStore",
    "FinishReason",
    "ObservationReceived",
    "ObservationRequested",
    "ObservationUnavailable",
    "PassageLike",
    "Reply",
    "ReplyUsage",
    "ReportError",
    "RetrieverLike",
    "SensorProfile",
    "SensorStatusLike",
    "Sensors",
    "StepKind",
    "StepUsage",
    "TokenEvent",
    "Unavailable",
    "UsedObservation",
    "file_sha256",
    "mapped_observation",
    "sensor_device_resolver",
    "used_observation",
]
