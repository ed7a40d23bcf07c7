"""One consultation: the conversation loop with ``<request_observation>`` (see the package text
for how a reply runs), and :class:`Reply`, the events of one message."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from bleak.exc import BleakError

from gateway.assistant.backend import LlmEngine
from gateway.assistant.chatformat import CONTROL_TOKENS, format_gemma3
from gateway.assistant.consultation.errors import (
    ConsultationBusyError,
    ConsultationClosedError,
    ConsultationFullError,
    ConsultationInputError,
)
from gateway.assistant.consultation.events import (
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
    unavailable_reason,
)
from gateway.assistant.consultation.observations import (
    CONTEXT_SOURCE,
    MEASURED_SOURCE,
    UsedObservation,
    used_observation,
)
from gateway.assistant.consultation.ports import DraftStore, RetrieverLike, Sensors
from gateway.assistant.consultation.reply import Reply
from gateway.assistant.errors import ContextOverflowError, EngineTimeoutError
from gateway.assistant.grammars import any_code_completion, forced_tag, tag_completion
from gateway.assistant.guards import PassageText
from gateway.assistant.prompts import (
    CLOSE_MODEL_TURN,
    OPEN_TAG,
    TAG_PATTERN,
    SensorLine,
    SourceLine,
    is_loinc_code,
    limit_message,
    message_text,
    observation_message,
    report_request,
    system_prompt,
    tag,
    unavailable_message,
    user_turn,
)
from gateway.assistant.report import Citation
from gateway.assistant.settings import ConsultationSettings
from gateway.assistant.stream import Finished, Generation, TextPiece
from gateway.ble.errors import MeasureFailure, SensorError
from gateway.errors import BedsideError
from gateway.fhir.read import display_value, loinc_codes
from gateway.fhir.resource import fhir_datetime
from gateway.profiles import Burden
from gateway.rag.errors import EmptyIndexError, RagError

log = logging.getLogger(__name__)

TAG_MAX_TOKENS: Final = 32  # a tag completion is ~12 tokens
MEASURE_GRACE_S: Final = 1.0  # beyond the timeout handed to sensors.measure()


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
class ConsultationDeps:
    """What every consultation of a service shares."""

    engine: LlmEngine
    sensors: Sensors
    settings: ConsultationSettings
    retriever: RetrieverLike | None
    store: DraftStore | None
    codes_by_kind: Mapping[str, tuple[str, ...]]  # from the sensor profiles
    measure_timeouts: Mapping[str, float]  # seconds per sensor kind, from the sensor profiles
    clock: Callable[[], dt.datetime]


class Consultation:
    """One conversation; see :mod:`gateway.assistant.consultation` for how a reply runs. Create
    through :class:`~gateway.assistant.consultation.service.ConsultationService`."""

    def __init__(
        self,
        cid: str,
        deps: ConsultationDeps,
        require: Sequence[str],
        created: dt.datetime,
        on_change: Callable[[Consultation], Awaitable[object]] | None = None,
    ) -> None:
        self.id = cid
        self.require = tuple(require)
        self.created = created
        self.closed: dt.datetime | None = None
        self.draft: dict[str, Any] | None = None
        self._deps = deps
        self._on_change = on_change
        self._context = deps.engine.context()
        self._mark = 0  # context length (tokens) when the last engine request ended
        self._turn_open = False  # the model's turn is open (its reply not closed yet)
        self._history: list[dict[str, Any]] = []
        self._observations: dict[str, UsedObservation] = {}
        self._obtained: set[str] = set()
        self._sources: list[tuple[SourceLine, Citation]] = []  # every passage retrieved
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
    def citations(self) -> list[Citation]:
        return [c for _, c in self._sources]

    @property
    def passages(self) -> list[PassageText]:
        return [PassageText(s.citation, s.text) for s, _ in self._sources]

    @property
    def obtained(self) -> frozenset[str]:
        """The codes measured so far (a required code is not forced again once in here)."""
        return frozenset(self._obtained)

    @property
    def context_length(self) -> int:
        """Tokens of the conversation as the model holds it."""
        return len(self._context)

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
                "context_tokens": len(self._context),
            },
            "draft": self.draft,
        }

    def transcript(self) -> str:
        """The conversation as the model holds it (Gemma turns, tags and injected turns)."""
        return self._context.transcript()

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
        reply = Reply(self._release, self._run(text))
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
            self._context.prompt(),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=settings.top_p,
            stop=stop,
            grammar=grammar,
            seed=settings.seed,
            timeout=remaining,
        )

    async def _step(
        self, run: _Run, kind: StepKind, grammar: str, check: Callable[[str], str]
    ) -> str:
        """A grammar-constrained request whose text goes into the context (no token events).
        ``check`` turns its text into what the context keeps: a server that does not apply the
        grammar (docs/architecture.md, "A remote inference server") is held to it here."""
        generation = self._stream(run, max_tokens=TAG_MAX_TOKENS, temperature=0.0, grammar=grammar)
        finished: Finished | None = None
        async with generation:
            async for event in generation:
                if isinstance(event, Finished):
                    finished = event
        assert finished is not None
        text = check(finished.text)
        self._absorb(run, kind, finished, text)
        return text

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
        self._context.observe(usage)
        self._append(text)
        self._mark = len(self._context)

    def _append(self, text: str) -> None:
        self._context.append(text)

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
        expected = tag(code)

        def check(text: str) -> str:
            if text != expected:  # the grammar allows nothing else: the server ignored it
                log.info("consultation %s: forced tag came out as %r", self.id, text)
            return expected

        await self._step(run, "forced_tag", forced_tag(code), check)

    async def _complete_tag(self, run: _Run) -> str | None:
        """Finish the tag the model opened; the code, or None if it did not fit the budget or
        did not come out as a tag (a server that ignored the grammar)."""
        if run.budget <= 0:
            return None
        allowed = self._allowed()
        self._append(OPEN_TAG)
        grammar = tag_completion(allowed) if allowed else any_code_completion()

        def check(text: str) -> str:
            return text if TAG_PATTERN.fullmatch(OPEN_TAG + text) is not None else ""

        completion = await self._step(run, "tag", grammar, check)
        match = TAG_PATTERN.fullmatch(OPEN_TAG + completion)
        return match.group("code") if match is not None else None

    # -- sensors --

    def _allowed(self) -> set[str]:
        return {
            code
            for code, addresses in self._deps.sensors.can_measure().items()
            if addresses and is_loinc_code(code)
        }

    def _measure_timeout(self, code: str) -> float:
        """The longest profile timeout of the sensor kinds that can measure ``code`` now."""
        default = self._deps.settings.default_measure_timeout_s
        timeouts = self._deps.measure_timeouts
        addresses = set(self._deps.sensors.can_measure().get(code, ()))
        kinds = {s.kind for s in self._deps.sensors.statuses() if s.address in addresses}
        return max((timeouts.get(kind, default) for kind in kinds), default=default)

    async def _measure(self, code: str, run: _Run) -> Mapping[str, Any] | Unavailable:
        """The Observation, or why there is none. Only allow-listed codes reach the sensors."""
        if code not in self._allowed():
            known = any(code in codes for codes in self._deps.codes_by_kind.values())
            failure = MeasureFailure.NOT_CONNECTED if known else MeasureFailure.NO_SENSOR
            return Unavailable(failure, f"no connected sensor can measure {code} now")
        timeout = min(self._measure_timeout(code), run.remaining())
        if timeout <= 0:
            return Unavailable(MeasureFailure.TIMEOUT, "the reply ran out of time")
        settings = self._deps.settings
        max_burden = Burden.CUFF_INFLATION if settings.allow_cuff_inflation else Burden.SPOT_CHECK
        try:
            async with asyncio.timeout(timeout + MEASURE_GRACE_S):
                return await self._deps.sensors.measure(
                    code, timeout=timeout, max_burden=max_burden
                )
        except SensorError as exc:  # the manager's sentence goes to the log, not the model
            log.info("measuring %s: %s", code, exc)
            failure = exc.failure
        except TimeoutError:  # before OSError, its base: a sensor that ignored its timeout
            failure = MeasureFailure.TIMEOUT
        except (BedsideError, BleakError, OSError) as exc:  # the link failed under the trigger
            log.info("measuring %s: %s", code, exc)
            failure = MeasureFailure.NOT_CONNECTED
        return Unavailable(failure, unavailable_reason(failure, timeout))

    async def _observe(
        self, code: str, run: _Run, *, forced: bool
    ) -> AsyncIterator[ConsultationEvent]:
        """After a completed tag: measure, feed the result back as the next user turn."""
        yield ObservationRequested(code, forced)
        self._history.append(
            {"role": "observation_request", "at": self._now(), "code": code, "forced": forced}
        )
        outcome = await self._measure(code, run)
        if isinstance(outcome, Unavailable):
            self._history.append(
                {"role": "observation_unavailable", "at": self._now(), "code": code}
                | {"reason": outcome.reason, "reason_code": str(outcome.failure)}
            )
            self._append_turn(unavailable_message(code, outcome.reason))
            yield ObservationUnavailable(code, outcome.reason, outcome.failure)
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
        yield ObservationReceived(code, used.mapped.full_url, used.value, used.mapped.resource)

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
            codes = loinc_codes(row.resource)
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
            line = SourceLine(len(self._sources) + 1, passage.citation, passage.text)
            details = {k: v for k, v in passage.as_dict().items() if k != "text"}
            chunk = details.get("chunk_id")
            self._sources.append(
                (line, Citation(line.citation, None if chunk is None else str(chunk)))
            )
            lines.append(line)
            run.citations.append({"n": line.number} | details)
        return lines

    async def _open_message(self, content: str, run: _Run) -> None:
        sources = await self._retrieve(content, run)
        if self._context.empty:
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
            self._context.start(prompt)
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

    def report_prompt(self) -> str | list[int]:
        """The conversation followed by the request for the report (the service drafts it)."""
        request = report_request([o.line for o in self._observations.values()])
        if self._context.empty:
            return self._context.prompt(format_gemma3([{"role": "user", "content": request}]))
        return self._context.prompt(user_turn(request))

    def begin_close(self) -> None:
        """Mark the consultation busy while the service drafts its report."""
        self._check_open("drafting its report")

    def end_close(self) -> None:
        self._busy = None

    def record(self, entry: dict[str, Any]) -> None:
        """Add an entry to the consultation's messages (the service's report text)."""
        self._history.append(entry)
