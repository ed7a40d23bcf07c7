"""The events of a reply (:class:`TokenEvent`, :class:`ObservationRequested`,
:class:`ObservationReceived`, :class:`ObservationUnavailable`, then one :class:`Done`) and the
token usage they report. ``name`` and ``data()`` are what the HTTP API sends as server-sent
events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from gateway.ble.errors import MeasureFailure

FinishReason = Literal["stop", "length", "timeout", "cancelled", "measurement_limit"]
StepKind = Literal["reply", "tag", "forced_tag", "report"]


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
class ObservationReceived:
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
    """``code`` could not be measured; the model was told ``reason`` (one plain sentence) and
    ``reason_code`` says why for programs: ``not_connected``, ``busy``, ``timeout``,
    ``no_sensor`` or ``not_allowed`` (:class:`gateway.ble.session.MeasureFailure`)."""

    name: ClassVar[str] = "observation_unavailable"
    code: str
    reason: str
    reason_code: MeasureFailure

    def data(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "reason_code": str(self.reason_code)}


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Why a measurement is not there: the machine code and the sentence the model is told."""

    failure: MeasureFailure
    reason: str


# What the model and the API are told per failure (docs/contracts.md, observation_unavailable):
# one plain sentence, never the sensor layer's exception.
UNAVAILABLE_REASONS: Final[Mapping[MeasureFailure, str]] = {
    MeasureFailure.NOT_CONNECTED: "the sensor that measures it is not connected",
    MeasureFailure.BUSY: "the sensor is busy with another measurement that gave no result in time",
    MeasureFailure.TIMEOUT: "no measurement within {timeout:g} s",
    MeasureFailure.NO_SENSOR: "no sensor at this bedside measures it",
    MeasureFailure.NOT_ALLOWED: "it cannot be started from here: a person at the bedside takes "
    "it (a clinician starts a cuff inflation, a patient takes a glucose sample)",
}


def unavailable_reason(failure: MeasureFailure, timeout: float) -> str:
    return UNAVAILABLE_REASONS[failure].format(timeout=timeout)


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
    TokenEvent | ObservationRequested | ObservationReceived | ObservationUnavailable | Done
)
