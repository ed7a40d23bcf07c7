"""Consultations: the conversation loop with ``<request_observation>``, and the signed draft report.

A :class:`Consultation` is one conversation with the local model about the patient at this
bedside. Each message of the clinician produces a reply, streamed as events
(:class:`TokenEvent`, :class:`ObservationRequested`, :class:`ObservationEvent`,
:class:`ObservationUnavailable`, then one :class:`Done`)::

    service = ConsultationService(
        engine, sensors,                       # Engine (started); SensorManager or alike
        gateway=gateway.info, signer=signer,   # GatewayInfo; the store's Signer (same key)
        store=gateway.store, retriever=retriever, patient=patient,
        devices=sensor_device_resolver(manager.statuses, ingest.sensor_info),
        codes_by_kind={kind: p.loinc for kind, p in profiles.items()},
        archive_dir=data_dir / "consultations",
    )
    consultation = service.create(require=["8867-4", "59408-5"])
    async with consultation.send("How is the patient?") as reply:
        async for event in reply: ...
    signed_bundle = await service.close(consultation.id)

How a reply runs (DESIGN.md §2 "assistant/", issue 5 items 2-3):

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
4. The measurement (timeout per sensor kind: blood pressure 120 s, others 20 s) comes back as the
   next user turn — value, unit, time, the Observation's Bundle reference — or "unavailable:
   reason"; the model continues on the same KV cache: the consultation keeps the exact tokens of
   its context and appends the new turn's tokens, so the engine evaluates only those
   (:class:`StepUsage` records it per step).
5. Limits per reply: at most ``max_measurements_per_reply`` model-requested measurements (the
   intake is bounded by its own list), a token budget, a timeout.

Closing runs a JSON-schema-constrained generation (:mod:`gateway.assistant.report`), builds the
FHIR transaction Bundle, signs it, enqueues it on the drafts topic of every uplink
(``store.enqueue_bundle(TopicKind.DRAFTS, …)``) and returns it signed.

What is persisted: the signed draft Bundle in the store's outbox (every uplink); the consultation
itself (history, Observations with their resources, usage, the draft) as one JSON file per
consultation in ``archive_dir`` (mode 0600), rewritten after every reply and on closing, so the
record survives a restart (:meth:`ConsultationService.snapshot` reads it back).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, Protocol, Self, TypeVar

from bleak.exc import BleakError
from pydantic import BaseModel, ConfigDict, Field

from gateway.assistant.chatformat import CONTROL_TOKENS, format_gemma3
from gateway.assistant.engine import Engine, Finished, Generation, TextPiece
from gateway.assistant.errors import (
    AssistantError,
    ContextOverflowError,
    EngineError,
    EngineTimeoutError,
)
from gateway.assistant.grammars import any_code_completion, forced_tag, json_schema, tag_completion
from gateway.assistant.prompts import (
    CLOSE_MODEL_TURN,
    OPEN_TAG,
    TAG_PATTERN,
    ObservationLine,
    SensorLine,
    SourceLine,
    is_loinc_code,
    limit_message,
    message_text,
    observation_message,
    report_request,
    system_prompt,
    unavailable_message,
    user_turn,
)
from gateway.assistant.report import (
    REPORT_ORDER,
    DraftInputs,
    ModelIdentity,
    ReportContent,
    ReportFormatError,
    build_draft,
    fallback_schema,
    parse_report,
    report_schema,
)
from gateway.errors import BedsideError
from gateway.fhir import jsonio
from gateway.fhir.codes import LOINC_SYSTEM
from gateway.fhir.device import GatewayInfo, SensorInfo, sensor_device, sensor_full_url
from gateway.fhir.observation import PHD_IDENTIFIER_SYSTEM, PatientRef
from gateway.fhir.resource import MappedResource, fhir_datetime, search_token, urn_for
from gateway.forward.fhirjson import canonical
from gateway.ingest import display_value
from gateway.rag.errors import EmptyIndexError, RagError
from gateway.store.models import StoredObservation, TopicKind

log = logging.getLogger(__name__)

S = TypeVar("S")

TAG_MAX_TOKENS: Final = 32  # a tag completion is ~12 tokens
MEASURE_GRACE_S: Final = 1.0  # beyond the timeout handed to sensors.measure()
HASH_CHUNK: Final = 1 << 20
ARCHIVE_MODE: Final = 0o600
ARCHIVE_DIR_MODE: Final = 0o700
CONTEXT_SOURCE: Final = "context"
MEASURED_SOURCE: Final = "measured"

FinishReason = Literal["stop", "length", "timeout", "cancelled", "measurement_limit"]
StepKind = Literal["reply", "tag", "forced_tag", "report"]


# -- errors ----------------------------------------------------------------------------------------


class ConsultationError(AssistantError):
    """Root of the consultation errors."""


class ConsultationNotFoundError(ConsultationError, LookupError):
    def __init__(self, cid: str) -> None:
        self.consultation_id = cid
        super().__init__(f"consultation {cid!r}: no such consultation on this gateway")


class ConsultationClosedError(ConsultationError):
    def __init__(self, cid: str, why: str = "is closed; its draft report is in its record") -> None:
        self.consultation_id = cid
        super().__init__(
            f"consultation {cid!r} {why} (GET the consultation); create a new consultation to "
            "continue"
        )


class ConsultationBusyError(ConsultationError):
    def __init__(self, cid: str, doing: str) -> None:
        self.consultation_id = cid
        super().__init__(
            f"consultation {cid!r} is {doing}; wait until it has finished (one message at a time)"
        )


class ConsultationInputError(ConsultationError, ValueError):
    """A message or a ``require`` list the consultation cannot take."""


class ConsultationFullError(ConsultationError):
    """The conversation no longer fits the model's context window."""


class ReportError(ConsultationError):
    """The draft report could not be made."""


# -- settings --------------------------------------------------------------------------------------


class ConsultationSettings(BaseModel):
    """Limits and sampling of consultations (nest as ``assistant.consultation`` or alike)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_measurements_per_reply: int = Field(default=3, ge=0)
    max_reply_tokens: int = Field(default=512, ge=1, description="generated tokens per reply")
    reply_timeout_s: float = Field(default=600.0, gt=0, description="a whole reply")
    measure_timeout_s: dict[str, float] = Field(
        default_factory=lambda: {"bp": 120.0},
        description="measurement timeout per sensor kind (a cuff inflates for up to 2 min)",
    )
    default_measure_timeout_s: float = Field(default=20.0, gt=0)
    temperature: float = Field(default=0.3, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    retrieval_k: int = Field(default=4, ge=0, description="passages per message (0: none)")
    retrieval_threshold: float | None = Field(
        default=None, description="cosine threshold (None: the retriever's, 0.35)"
    )
    recent_observations: int = Field(default=8, ge=0, description="codes in the system prompt")
    recent_scan: int = Field(default=200, ge=1, description="stored Observations looked at")
    max_require: int = Field(default=8, ge=0)
    max_message_chars: int = Field(default=8000, ge=1)
    report_max_tokens: int = Field(default=1024, ge=16)
    report_fallback_max_tokens: int = Field(default=256, ge=16)
    report_temperature: float = Field(default=0.0, ge=0)
    report_timeout_s: float = Field(default=300.0, gt=0)


# -- what the service depends on -------------------------------------------------------------------


class SensorStatusLike(Protocol):
    """A sensor session's visible state (``gateway.ble.session.SessionStatus``)."""

    @property
    def address(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...


class Sensors(Protocol):
    """Measure on demand (``gateway.ble.manager.SensorManager``)."""

    def can_measure(self) -> Mapping[str, Sequence[str]]: ...
    def statuses(self) -> Sequence[SensorStatusLike]: ...
    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the manager's API takes a timeout
    ) -> Mapping[str, Any]: ...


class PassageLike(Protocol):
    """A retrieved passage (``gateway.rag.retriever.Passage``)."""

    @property
    def citation(self) -> str: ...
    @property
    def text(self) -> str: ...
    def as_dict(self) -> dict[str, object]: ...


class RetrieverLike(Protocol):
    async def search(
        self, query: str, k: int = ..., threshold: float | None = None
    ) -> Sequence[PassageLike]: ...


class DraftStore(Protocol):
    """The store's part the consultation uses (``gateway.store.aio.AsyncStore``)."""

    async def latest_observations(self, limit: int) -> list[StoredObservation]: ...
    async def enqueue_bundle(self, kind: TopicKind, bundle: Mapping[str, Any]) -> str | None: ...


class BundleSigner(Protocol):
    """``gateway.forward.signing.Signer``."""

    def sign_bundle(self, bundle: Mapping[str, Any]) -> dict[str, Any]: ...


DeviceResolver = Callable[[str], MappedResource | None]


def sensor_device_resolver(
    statuses: Callable[[], Iterable[S]], sensor_info: Callable[[S], SensorInfo]
) -> DeviceResolver:
    """Device reference (``urn:uuid``) → the sensor's Device, from the live sessions
    (``manager.statuses`` and ``ingest.sensor_info``), for the draft Bundle."""

    def resolve(reference: str) -> MappedResource | None:
        for status in statuses():
            try:
                info = sensor_info(status)
            except ValueError:  # a session that has not read its identity yet
                continue
            if sensor_full_url(info) == reference:
                return sensor_device(info)
        return None

    return resolve


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Reply text, in order."""

    name: ClassVar[str] = "token"
    text: str

    def data(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(frozen=True, slots=True)
class ObservationRequested:
    """A tag was completed: the model (or the intake, ``forced``) asked for ``code``."""

    name: ClassVar[str] = "observation_requested"
    code: str
    forced: bool

    def data(self) -> dict[str, Any]:
        return {"code": self.code, "forced": self.forced}


@dataclass(frozen=True, slots=True)
class ObservationEvent:
    """The Observation a sensor delivered for ``code``."""

    name: ClassVar[str] = "observation"
    code: str
    full_url: str
    value: str | None
    resource: Mapping[str, Any]

    def data(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "fullUrl": self.full_url,
            "value": self.value,
            "observation": self.resource,
        }


@dataclass(frozen=True, slots=True)
class ObservationUnavailable:
    """``code`` could not be measured; the model was told ``reason``."""

    name: ClassVar[str] = "observation_unavailable"
    code: str
    reason: str

    def data(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class StepUsage:
    """One engine request of a reply: ``appended_tokens`` were added to the context since the
    previous request ended (an injected turn), ``tokens_evaluated`` is what the engine had to
    evaluate of its prompt (the rest came from the KV cache)."""

    kind: StepKind
    prompt_tokens: int
    appended_tokens: int
    tokens_evaluated: int
    completion_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "prompt_tokens": self.prompt_tokens,
            "appended_tokens": self.appended_tokens,
            "tokens_evaluated": self.tokens_evaluated,
            "completion_tokens": self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class ReplyUsage:
    steps: tuple[StepUsage, ...]

    @property
    def tokens_evaluated(self) -> int:
        return sum(s.tokens_evaluated for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    @property
    def prompt_tokens(self) -> int:
        """The context length at the last request."""
        return self.steps[-1].prompt_tokens if self.steps else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "tokens_evaluated": self.tokens_evaluated,
            "completion_tokens": self.completion_tokens,
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class Done:
    """The end of a reply."""

    name: ClassVar[str] = "done"
    finish_reason: FinishReason
    usage: ReplyUsage
    citations: tuple[Mapping[str, Any], ...]
    observations: tuple[str, ...]  # full URLs of the Observations measured in this reply

    def data(self) -> dict[str, Any]:
        return {
            "finish_reason": self.finish_reason,
            "usage": self.usage.as_dict(),
            "citations": list(self.citations),
            "observations": list(self.observations),
        }


ConsultationEvent = (
    TokenEvent | ObservationRequested | ObservationEvent | ObservationUnavailable | Done
)


# -- observations ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsedObservation:
    """An Observation the consultation obtained (``measured``) or showed the model (``context``)."""

    code: str
    mapped: MappedResource
    source: str
    value: str | None
    time: dt.datetime | None

    @property
    def line(self) -> ObservationLine:
        return ObservationLine(self.code, self.value or "no value", self.time, self.mapped.full_url)

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "fullUrl": self.mapped.full_url,
            "source": self.source,
            "value": self.value,
            "time": fhir_datetime(self.time) if self.time is not None else None,
            "resource": self.mapped.resource,
        }


def _loinc_codes(resource: Mapping[str, Any]) -> list[str]:
    return [
        c["code"]
        for c in resource.get("code", {}).get("coding", [])
        if c.get("system") == LOINC_SYSTEM and isinstance(c.get("code"), str)
    ]


def _effective(resource: Mapping[str, Any]) -> dt.datetime | None:
    text = resource.get("effectiveDateTime")
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None


def mapped_observation(resource: Mapping[str, Any], key: str | None = None) -> MappedResource:
    """An Observation with its Bundle ``fullUrl``: the ``urn:uuid`` the ingest pipeline gives it
    (from its PHD identifier, or ``key``: the store's key, which is that URL for live readings),
    else one derived from its content."""
    identifiers = resource.get("identifier") or []
    value = next(
        (i.get("value") for i in identifiers if i.get("system") == PHD_IDENTIFIER_SYSTEM), None
    )
    if isinstance(value, str):
        return MappedResource(
            urn_for(PHD_IDENTIFIER_SYSTEM, value),
            dict(resource),
            search_token(PHD_IDENTIFIER_SYSTEM, value),
        )
    if key is not None and key.startswith("urn:uuid:"):
        return MappedResource(key, dict(resource))
    digest = hashlib.sha256(canonical(resource)).hexdigest()
    return MappedResource(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, digest)}", dict(resource))


def used_observation(
    code: str, resource: Mapping[str, Any], source: str, key: str | None = None
) -> UsedObservation:
    return UsedObservation(
        code,
        mapped_observation(resource, key),
        source,
        display_value(resource),
        _effective(resource),
    )


# -- one reply -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """The state of one reply."""

    deadline: float  # loop time
    budget: int  # tokens left
    steps: list[StepUsage] = field(default_factory=list)
    requested: int = 0  # model-requested measurements
    limit_told: bool = False
    measured: list[str] = field(default_factory=list)
    citations: list[Mapping[str, Any]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # streamed text not yet in the context
    finish: FinishReason = "stop"
    committed: bool = False  # its usage is in the consultation's totals

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


class _ReplyTimeoutError(Exception):
    """The reply's own deadline passed between steps."""


@dataclass(frozen=True, slots=True)
class _Deps:
    engine: Engine
    sensors: Sensors
    settings: ConsultationSettings
    retriever: RetrieverLike | None
    store: DraftStore | None
    codes_by_kind: Mapping[str, tuple[str, ...]]
    clock: Callable[[], dt.datetime]


class Reply:
    """The events of one message (async iterator, async context manager). Iterate it or close
    it: until then the consultation is busy. Leaving ``async with`` cancels an unfinished reply."""

    def __init__(self, consultation: Consultation, events: AsyncIterator[ConsultationEvent]):
        self._consultation = consultation
        self._events = events

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ConsultationEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        close = getattr(self._events, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            self._consultation._release(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Consultation:
    """One conversation; see the module text. Create through :class:`ConsultationService`."""

    def __init__(
        self,
        cid: str,
        deps: _Deps,
        require: Sequence[str],
        created: dt.datetime,
        on_change: Callable[[Consultation], Awaitable[None]] | None = None,
    ) -> None:
        self.id = cid
        self.require = tuple(require)
        self.created = created
        self.closed: dt.datetime | None = None
        self.draft: dict[str, Any] | None = None
        self._deps = deps
        self._on_change = on_change
        self._tokens: list[int] = []
        self._mark = 0  # context length when the last engine request ended
        self._turn_open = False  # the model's turn is open (its reply not closed yet)
        self._history: list[dict[str, Any]] = []
        self._observations: dict[str, UsedObservation] = {}
        self._obtained: set[str] = set()
        self._sources = 0
        self._busy: str | None = None
        self._reply: Reply | None = None
        self._usage: list[StepUsage] = []

    # -- state --

    @property
    def status(self) -> Literal["open", "closed"]:
        return "open" if self.closed is None else "closed"

    @property
    def busy(self) -> bool:
        return self._busy is not None

    @property
    def observations(self) -> list[UsedObservation]:
        return list(self._observations.values())

    @property
    def obtained(self) -> frozenset[str]:
        """The codes measured so far (a required code is not forced again once in here)."""
        return frozenset(self._obtained)

    @property
    def context_length(self) -> int:
        """Tokens of the conversation as the model holds it."""
        return len(self._tokens)

    def snapshot(self) -> dict[str, Any]:
        """The record (JSON-able; Observation values are ``Decimal``, see fhir.jsonio)."""
        usage = ReplyUsage(tuple(self._usage))
        return {
            "id": self.id,
            "status": self.status,
            "created": fhir_datetime(self.created),
            "closed": fhir_datetime(self.closed) if self.closed is not None else None,
            "require": list(self.require),
            "obtained": sorted(self._obtained),
            "busy": self.busy,
            "messages": list(self._history),
            "observations": [o.as_dict() for o in self._observations.values()],
            "usage": {
                "tokens_evaluated": usage.tokens_evaluated,
                "completion_tokens": usage.completion_tokens,
                "context_tokens": len(self._tokens),
            },
            "draft": self.draft,
        }

    def transcript(self) -> str:
        """The conversation as the model holds it (Gemma turns, tags and injected turns)."""
        return self._deps.engine.detokenize(self._tokens)

    def _check_open(self, doing: str) -> None:
        if self.closed is not None:
            raise ConsultationClosedError(self.id)
        if self._busy is not None:
            raise ConsultationBusyError(self.id, self._busy)
        self._busy = doing

    def _release(self, reply: Reply) -> None:
        if self._reply is reply:
            self._reply = None
            self._busy = None

    def _now(self) -> str:
        return fhir_datetime(self._deps.clock())

    # -- a message --

    def send(self, content: str) -> Reply:
        """Start the reply to ``content``; raises now (not when iterated) for a closed or busy
        consultation or a message it cannot take."""
        text = content.strip() if isinstance(content, str) else ""
        if not text:
            raise ConsultationInputError("content: expected the message text")
        limit = self._deps.settings.max_message_chars
        if len(text) > limit:
            raise ConsultationInputError(f"content: at most {limit} characters")
        for token in CONTROL_TOKENS:
            if token in text:
                raise ConsultationInputError(
                    f"content contains the control token {token}; remove it"
                )
        self._check_open("answering a message")
        reply = Reply(self, self._run(text))
        self._reply = reply
        return reply

    async def _run(self, content: str) -> AsyncIterator[ConsultationEvent]:
        deps = self._deps
        settings = deps.settings
        run = _Run(
            deadline=asyncio.get_running_loop().time() + settings.reply_timeout_s,
            budget=settings.max_reply_tokens,
        )
        try:
            try:
                await self._open_message(content, run)
                for code in [c for c in self.require if c not in self._obtained]:
                    await self._forced_tag(code, run)
                    async for event in self._observe(code, run, forced=True):
                        yield event
                async for event in self._generate(run):
                    yield event
            except (EngineTimeoutError, _ReplyTimeoutError):
                run.finish = "timeout"
            except ContextOverflowError as exc:
                raise ConsultationFullError(
                    f"consultation {self.id!r} no longer fits the model's context ({exc}); "
                    "close it and start a new one"
                ) from exc
            self._close_turn(run)
            self._usage.extend(run.steps)
            run.committed = True
            usage = ReplyUsage(tuple(run.steps))
            self._history.append(
                {"role": "done", "at": self._now(), "finish_reason": run.finish}
                | {"usage": usage.as_dict()}
            )
            await self._changed()
            measured = tuple(dict.fromkeys(run.measured))
            yield Done(run.finish, usage, tuple(run.citations), measured)
        finally:
            self._close_turn(run)
            if not run.committed:
                self._usage.extend(run.steps)
            self._busy = None
            self._reply = None

    async def _generate(self, run: _Run) -> AsyncIterator[ConsultationEvent]:
        """The model's free reply, with the tags it opens; sets ``run.finish``."""
        settings = self._deps.settings
        while True:
            if run.budget <= 0:
                run.finish = "length"
                return
            generation = self._stream(
                run, max_tokens=run.budget, stop=(OPEN_TAG,), temperature=settings.temperature
            )
            finished: Finished | None = None
            async with generation:
                async for event in generation:
                    if isinstance(event, TextPiece):
                        run.pending.append(event.text)
                        yield TokenEvent(event.text)
                    else:
                        finished = event
            assert finished is not None  # the iteration ends with Finished
            text = "".join(run.pending)
            run.pending.clear()
            self._absorb(run, "reply", finished, text)
            if text.strip():
                self._history.append({"role": "assistant", "at": self._now(), "content": text})
            if finished.stop != OPEN_TAG:
                run.finish = finished.finish_reason
                return
            if run.requested >= settings.max_measurements_per_reply:
                if run.limit_told:
                    run.finish = "measurement_limit"
                    return
                run.limit_told = True
                self._append_turn(limit_message(settings.max_measurements_per_reply))
                continue
            code = await self._complete_tag(run)
            if code is None:
                run.finish = "length"
                return
            run.requested += 1
            async for item in self._observe(code, run, forced=False):
                yield item

    # -- engine steps --

    def _stream(
        self,
        run: _Run,
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        grammar: str | None = None,
    ) -> Generation:
        remaining = run.remaining()
        if remaining <= 0:
            raise _ReplyTimeoutError
        settings = self._deps.settings
        return self._deps.engine.stream(
            list(self._tokens),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=settings.top_p,
            stop=stop,
            grammar=grammar,
            seed=settings.seed,
            timeout=remaining,
        )

    async def _step(self, run: _Run, kind: StepKind, grammar: str) -> Finished:
        """A grammar-constrained request whose text goes into the context (no token events)."""
        generation = self._stream(run, max_tokens=TAG_MAX_TOKENS, temperature=0.0, grammar=grammar)
        finished: Finished | None = None
        async with generation:
            async for event in generation:
                if isinstance(event, Finished):
                    finished = event
        assert finished is not None
        self._absorb(run, kind, finished, finished.text)
        return finished

    def _absorb(self, run: _Run, kind: StepKind, finished: Finished, text: str) -> None:
        usage = finished.usage
        appended = usage.prompt_tokens - self._mark
        run.steps.append(
            StepUsage(
                kind, usage.prompt_tokens, appended, usage.tokens_evaluated, usage.completion_tokens
            )
        )
        if kind in {"reply", "tag"}:  # the intake's forced tags are the gateway's, not the model's
            run.budget -= usage.completion_tokens
        self._append(text)
        self._mark = len(self._tokens)

    def _append(self, text: str) -> None:
        if text:
            self._tokens += self._deps.engine.tokenize(text, add_bos=False, special=True)

    def _append_turn(self, text: str) -> None:
        """Close the model's turn, add a user turn with ``text``, open the model's next turn."""
        self._append(CLOSE_MODEL_TURN + user_turn(text))
        self._turn_open = True

    def _close_turn(self, run: _Run) -> None:
        if run.pending:  # text streamed before a cancellation or a timeout
            text = "".join(run.pending)
            run.pending.clear()
            self._append(text)
            self._history.append(
                {"role": "assistant", "at": self._now(), "content": text, "interrupted": True}
            )
        if self._turn_open:
            self._append(CLOSE_MODEL_TURN)
            self._turn_open = False

    async def _forced_tag(self, code: str, run: _Run) -> None:
        finished = await self._step(run, "forced_tag", forced_tag(code))
        if TAG_PATTERN.fullmatch(finished.text) is None:  # the grammar allows nothing else
            raise ConsultationError(f"the forced tag for {code} came out as {finished.text!r}")

    async def _complete_tag(self, run: _Run) -> str | None:
        """Finish the tag the model opened; the code, or None if it did not fit the budget."""
        if run.budget <= 0:
            return None
        allowed = self._allowed()
        self._append(OPEN_TAG)
        grammar = tag_completion(allowed) if allowed else any_code_completion()
        finished = await self._step(run, "tag", grammar)
        match = TAG_PATTERN.fullmatch(OPEN_TAG + finished.text)
        return match.group("code") if match is not None else None

    # -- sensors --

    def _allowed(self) -> set[str]:
        return {
            code
            for code, addresses in self._deps.sensors.can_measure().items()
            if addresses and is_loinc_code(code)
        }

    def _measure_timeout(self, code: str) -> float:
        settings = self._deps.settings
        addresses = set(self._deps.sensors.can_measure().get(code, ()))
        kinds = {s.kind for s in self._deps.sensors.statuses() if s.address in addresses}
        timeouts = [
            settings.measure_timeout_s.get(k, settings.default_measure_timeout_s) for k in kinds
        ]
        return max(timeouts, default=settings.default_measure_timeout_s)

    async def _measure(self, code: str, run: _Run) -> Mapping[str, Any] | str:
        """The Observation, or why there is none. Only allow-listed codes reach the sensors."""
        if code not in self._allowed():
            return f"no connected sensor can measure {code} now"
        timeout = min(self._measure_timeout(code), run.remaining())
        if timeout <= 0:
            return "the reply ran out of time"
        try:
            async with asyncio.timeout(timeout + MEASURE_GRACE_S):
                return await self._deps.sensors.measure(code, timeout=timeout)
        except BedsideError as exc:  # SensorError: not connected, none delivered in time
            return str(exc) or type(exc).__name__
        except TimeoutError:  # before OSError, its base: a sensor that ignored its timeout
            return f"no measurement within {timeout:g} s"
        except (BleakError, OSError) as exc:  # the link failed under the trigger write
            return f"{type(exc).__name__}: {exc}"

    async def _observe(
        self, code: str, run: _Run, *, forced: bool
    ) -> AsyncIterator[ConsultationEvent]:
        """After a completed tag: measure, feed the result back as the next user turn."""
        yield ObservationRequested(code, forced)
        self._history.append(
            {"role": "observation_request", "at": self._now(), "code": code, "forced": forced}
        )
        outcome = await self._measure(code, run)
        if isinstance(outcome, str):
            self._history.append(
                {"role": "observation_unavailable", "at": self._now(), "code": code}
                | {"reason": outcome}
            )
            self._append_turn(unavailable_message(code, outcome))
            yield ObservationUnavailable(code, outcome)
            return
        used = used_observation(code, outcome, MEASURED_SOURCE)
        self._observations[used.mapped.full_url] = used
        self._obtained.add(code)
        run.measured.append(used.mapped.full_url)
        self._history.append(
            {"role": "observation", "at": self._now(), "code": code}
            | {"fullUrl": used.mapped.full_url, "value": used.value}
        )
        self._append_turn(observation_message(used.line))
        yield ObservationEvent(code, used.mapped.full_url, used.value, used.mapped.resource)

    # -- the prompt --

    def _sensor_lines(self) -> list[SensorLine]:
        sensors = self._deps.sensors
        ready: dict[str, list[str]] = {}
        for code, addresses in sensors.can_measure().items():
            for address in addresses:
                ready.setdefault(address, []).append(code)
        return [
            SensorLine(
                s.kind,
                s.name,
                str(s.state),
                tuple(sorted(ready.get(s.address, self._deps.codes_by_kind.get(s.kind, ())))),
            )
            for s in sorted(sensors.statuses(), key=lambda s: (s.kind, s.address))
        ]

    async def _recent(self) -> list[UsedObservation]:
        """The newest stored Observation per LOINC code (what the model is shown)."""
        store = self._deps.store
        limit = self._deps.settings.recent_observations
        if store is None or limit == 0:
            return []
        newest: dict[str, UsedObservation] = {}
        for row in await store.latest_observations(self._deps.settings.recent_scan):
            codes = _loinc_codes(row.resource)
            if not codes or codes[0] in newest or display_value(row.resource) is None:
                continue
            newest[codes[0]] = used_observation(
                codes[0], row.resource, CONTEXT_SOURCE, row.identifier
            )
            if len(newest) >= limit:
                break
        return list(newest.values())

    async def _retrieve(self, content: str, run: _Run) -> list[SourceLine]:
        retriever = self._deps.retriever
        settings = self._deps.settings
        if retriever is None or settings.retrieval_k == 0:
            return []
        try:
            passages = await retriever.search(
                content, settings.retrieval_k, settings.retrieval_threshold
            )
        except EmptyIndexError:
            return []
        except RagError as exc:
            log.warning("consultation %s: retrieval failed, answering without: %s", self.id, exc)
            return []
        lines = []
        for passage in passages:
            self._sources += 1
            lines.append(SourceLine(self._sources, passage.citation, passage.text))
            details = {k: v for k, v in passage.as_dict().items() if k != "text"}
            run.citations.append({"n": self._sources} | details)
        return lines

    async def _open_message(self, content: str, run: _Run) -> None:
        sources = await self._retrieve(content, run)
        if not self._tokens:
            recent = await self._recent()
            for used in recent:
                self._observations.setdefault(used.mapped.full_url, used)
            system = system_prompt(
                now=self._deps.clock(),
                sensors=self._sensor_lines(),
                recent=[u.line for u in recent],
                sources=sources,
            )
            prompt = format_gemma3(
                [{"role": "system", "content": system}, {"role": "user", "content": content}]
            )
            self._tokens = self._deps.engine.tokenize(prompt, add_bos=True, special=True)
        else:
            self._append(user_turn(message_text(content, sources)))
        self._turn_open = True
        self._history.append(
            {"role": "user", "at": self._now(), "content": content, "citations": run.citations}
        )

    async def _changed(self) -> None:
        if self._on_change is not None:
            await self._on_change(self)

    # -- the report --

    def _report_prompt(self) -> list[int]:
        request = report_request([o.line for o in self._observations.values()])
        if self._tokens:
            return self._tokens + self._deps.engine.tokenize(
                user_turn(request), add_bos=False, special=True
            )
        prompt = format_gemma3([{"role": "user", "content": request}])
        return self._deps.engine.tokenize(prompt, add_bos=True, special=True)

    def _begin_close(self) -> None:
        self._check_open("drafting its report")

    def _end_close(self) -> None:
        self._busy = None


class ConsultationService:
    """Creates, finds and closes consultations; see the module text for the wiring."""

    def __init__(
        self,
        engine: Engine,
        sensors: Sensors,
        *,
        gateway: GatewayInfo,
        signer: BundleSigner,
        store: DraftStore | None = None,
        retriever: RetrieverLike | None = None,
        patient: PatientRef | None = None,
        settings: ConsultationSettings | None = None,
        devices: DeviceResolver | None = None,
        codes_by_kind: Mapping[str, Sequence[str]] | None = None,
        archive_dir: Path | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.engine = engine
        self.settings = settings or ConsultationSettings()
        self.gateway = gateway
        self.patient = patient
        self._signer = signer
        self._store = store
        self._devices = devices
        self._clock = clock
        self._deps = _Deps(
            engine=engine,
            sensors=sensors,
            settings=self.settings,
            retriever=retriever,
            store=store,
            codes_by_kind={k: tuple(v) for k, v in (codes_by_kind or {}).items()},
            clock=clock,
        )
        self._archive = ConsultationArchive(archive_dir) if archive_dir is not None else None
        self._consultations: dict[str, Consultation] = {}
        self._model: ModelIdentity | None = None

    @property
    def known_codes(self) -> frozenset[str] | None:
        """The codes some sensor profile measures (None: not configured, anything goes)."""
        if not self._deps.codes_by_kind:
            return None
        return frozenset(c for codes in self._deps.codes_by_kind.values() for c in codes)

    def create(self, require: Sequence[str] = ()) -> Consultation:
        """A new open consultation; ``require``: LOINC codes to measure before the first answer."""
        codes = list(dict.fromkeys(require))
        limit = self.settings.max_require
        if len(codes) > limit:
            raise ConsultationInputError(f"require: at most {limit} codes")
        bad = [c for c in codes if not isinstance(c, str) or not is_loinc_code(c)]
        if bad:
            raise ConsultationInputError(
                f"require: {', '.join(map(repr, bad))} are not LOINC codes (like 8867-4)"
            )
        known = self.known_codes
        if known is not None:
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise ConsultationInputError(
                    f"require: no sensor profile measures {', '.join(unknown)}; known codes: "
                    f"{', '.join(sorted(known))}"
                )
        cid = str(uuid.uuid4())
        consultation = Consultation(cid, self._deps, codes, self._clock(), self._save)
        self._consultations[cid] = consultation
        return consultation

    def get(self, cid: str) -> Consultation:
        try:
            return self._consultations[cid]
        except KeyError:
            raise ConsultationNotFoundError(cid) from None

    def consultations(self) -> list[Consultation]:
        return list(self._consultations.values())

    async def snapshot(self, cid: str) -> dict[str, Any]:
        """The record of a consultation of this session, or one archived earlier."""
        consultation = self._consultations.get(cid)
        if consultation is not None:
            return consultation.snapshot()
        record = await self._archive.load(cid) if self._archive is not None else None
        if record is None:
            raise ConsultationNotFoundError(cid)
        return record

    async def _live(self, cid: str) -> Consultation:
        consultation = self._consultations.get(cid)
        if consultation is not None:
            return consultation
        record = await self._archive.load(cid) if self._archive is not None else None
        if record is None:
            raise ConsultationNotFoundError(cid)
        if record.get("status") == "closed":
            raise ConsultationClosedError(cid)
        raise ConsultationClosedError(cid, "belongs to an earlier run of the gateway")

    async def send(self, cid: str, content: str) -> Reply:
        """:meth:`Consultation.send` by id (an archived consultation takes no messages)."""
        return (await self._live(cid)).send(content)

    async def close(self, cid: str) -> dict[str, Any]:
        """Draft the report, build, sign and enqueue the Bundle; returns it signed."""
        consultation = await self._live(cid)
        consultation._begin_close()
        try:
            content = await self._draft_content(consultation)
            issued = self._clock()
            observations = consultation.observations
            devices = self._sensor_devices(observations)
            draft = build_draft(
                DraftInputs(
                    consultation_id=cid,
                    content=content,
                    observations=[o.mapped for o in observations],
                    gateway=self.gateway,
                    model=await self.model_identity(),
                    started=consultation.created,
                    issued=issued,
                    devices=devices,
                    patient=self.patient,
                )
            )
            signed = self._signer.sign_bundle(draft.bundle)
            if self._store is not None:
                await self._store.enqueue_bundle(TopicKind.DRAFTS, signed)
            consultation.closed = issued
            consultation.draft = signed
            await self._save(consultation)
            return signed
        finally:
            consultation._end_close()

    async def _draft_content(self, consultation: Consultation) -> ReportContent:
        settings = self.settings
        codes = sorted({o.code for o in consultation.observations})
        prompt = consultation._report_prompt()
        attempts = (
            (report_schema(codes), settings.report_max_tokens),
            (fallback_schema(), settings.report_fallback_max_tokens),
        )
        problem = "no attempt"
        for schema, max_tokens in attempts:
            try:
                finished = await self.engine.complete(
                    prompt,
                    grammar=json_schema(schema, REPORT_ORDER),
                    max_tokens=max_tokens,
                    temperature=settings.report_temperature,
                    seed=settings.seed,
                    timeout=settings.report_timeout_s,
                )
            except EngineError as exc:
                raise ReportError(f"consultation {consultation.id!r}: {exc}") from exc
            try:
                content = parse_report(finished.text, codes)
            except ReportFormatError as exc:
                problem = f"{exc} (after {finished.usage.completion_tokens} tokens)"
                log.info("consultation %s: report attempt failed: %s", consultation.id, problem)
                continue
            consultation._history.append(
                {"role": "report", "at": fhir_datetime(self._clock()), "content": finished.text}
            )
            return content
        raise ReportError(
            f"consultation {consultation.id!r}: the model's report is unusable: {problem}"
        )

    def _sensor_devices(self, observations: Iterable[UsedObservation]) -> list[MappedResource]:
        if self._devices is None:
            return []
        found: dict[str, MappedResource] = {}
        for used in observations:
            reference = used.mapped.resource.get("device", {}).get("reference")
            if isinstance(reference, str) and reference not in found:
                device = self._devices(reference)
                if device is not None:
                    found[reference] = device
        return list(found.values())

    async def model_identity(self) -> ModelIdentity:
        """The loaded model's name and file sha256 (hashed once when the manifest has none)."""
        if self._model is None:
            info = self.engine.model_info
            sha256 = info.sha256
            if sha256 is None:  # a model_path outside the manifest
                sha256 = await asyncio.to_thread(file_sha256, info.file)
            self._model = ModelIdentity(info.name, sha256, info.file.name)
        return self._model

    async def _save(self, consultation: Consultation) -> None:
        if self._archive is None:
            return
        try:
            await self._archive.save(consultation.snapshot())
        except OSError as exc:
            log.warning("consultation %s: cannot archive it: %s", consultation.id, exc)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ConsultationArchive:
    """One JSON file per consultation (``<id>.json``, mode 0600), written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, cid: str) -> Path | None:
        try:
            canonical_id = str(uuid.UUID(cid))
        except ValueError:
            return None
        return self.directory / f"{canonical_id}.json" if canonical_id == cid else None

    def _write(self, record: Mapping[str, Any]) -> None:
        path = self.path(str(record["id"]))
        if path is None:
            raise ValueError(f"consultation id {record['id']!r} is not a UUID")
        self.directory.mkdir(mode=ARCHIVE_DIR_MODE, parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, ARCHIVE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(jsonio.dumps(record))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)

    def _read(self, cid: str) -> dict[str, Any] | None:
        path = self.path(cid)
        if path is None or not path.is_file():
            return None
        return jsonio.loads(path.read_text(encoding="utf-8"))

    async def save(self, record: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._write, record)

    async def load(self, cid: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._read, cid)
