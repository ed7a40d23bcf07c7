"""The consultation's prompt text: the system prompt, the turns the gateway injects, the
``<request_observation code="LOINC"/>`` tag and the report request (pure: text in, text out).

The Gemma 3 turn format comes from :mod:`gateway.assistant.chatformat`: the system text is
folded into the first user turn, turns alternate strictly. A consultation grows by appending turns
to the text the model already holds, so that only the new tokens are evaluated:

- a reply is closed with :data:`CLOSE_MODEL_TURN`;
- a user turn (the clinician's message, an observation the gateway measured, or why it could not)
  is :func:`user_turn`, which also opens the model's next turn.

What reaches the model from outside (retrieved passages, sensor names, observation text) never
carries Gemma's control tokens: :func:`neutralise` removes them, so a document cannot forge a turn.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.assistant.chatformat import (
    CONTROL_TOKENS,
    END_OF_TURN,
    GENERATION_PROMPT,
    START_OF_TURN,
)
from gateway.fhir.codes import code_table
from gateway.fhir.resource import fhir_datetime

# -- the request_observation protocol --------------------------------------------------------------
OPEN_TAG: Final = "<request_observation"  # the stop string: the gateway finishes the tag
TAG_ATTRIBUTE: Final = ' code="'
TAG_CLOSE: Final = '"/>'
# LOINC codes: 1 to 7 digits, a hyphen, one check digit (LOINC Users' Guide, "LOINC codes").
LOINC_CODE: Final = re.compile(r"[0-9]{1,7}-[0-9]")
TAG_PATTERN: Final = re.compile(
    re.escape(OPEN_TAG) + re.escape(TAG_ATTRIBUTE) + r"(?P<code>[0-9]{1,7}-[0-9])" + TAG_CLOSE
)

# -- turns -----------------------------------------------------------------------------------------
CLOSE_MODEL_TURN: Final = f"{END_OF_TURN}\n"
USER_TURN_START: Final = f"{START_OF_TURN}user\n"

INSTRUCTIONS: Final = (
    "You are the clinical assistant of a bedside gateway. You help a clinician; a clinician "
    "reviews everything you write. Answer briefly. State only measured values that appear "
    "below or in observation messages; never invent a number."
)
PROTOCOL: Final = (
    "To take a new measurement, write {open}{attribute}LOINC{close} with one of the codes a "
    "connected sensor measures and stop; the gateway takes it and replies with the observation."
)
REPORT_REQUEST: Final = (
    "The consultation is closed. Write the draft report as JSON: a short clinical "
    '"conclusion", optional "findings" (each with "text" and, if it concerns one of the '
    'measurements, its LOINC "code"), optional "medications" proposed (each with "text" and '
    '"dose"). Use only the measured values listed here: {values}.'
)
LIMIT_MESSAGE: Final = (
    "No more measurements in this reply (at most {limit}); answer with the observations you have."
)
SOURCES_HEADING: Final = "Sources (cite them as [n]):"
UNAVAILABLE_MESSAGE: Final = "Observation {code} unavailable: {reason}"
NO_VALUES: Final = "none were measured"
NONE_LISTED: Final = "- none"


def tag(code: str) -> str:
    """The complete tag for ``code``: ``<request_observation code="8867-4"/>``."""
    return f"{OPEN_TAG}{TAG_ATTRIBUTE}{code}{TAG_CLOSE}"


def is_loinc_code(text: str) -> bool:
    return LOINC_CODE.fullmatch(text) is not None


def neutralise(text: str) -> str:
    """``text`` without Gemma control tokens (outside text must not change the turns)."""
    for token in CONTROL_TOKENS:
        text = text.replace(token, "")
    return text


def user_turn(text: str) -> str:
    """A user turn after a closed model turn, opening the model's reply."""
    return f"{USER_TURN_START}{text.strip()}{CLOSE_MODEL_TURN}{GENERATION_PROMPT}"


@functools.cache
def loinc_displays() -> Mapping[str, str]:
    """LOINC code → display, from the FHIR code table (``gateway/fhir/codes.toml``)."""
    out: dict[str, str] = {}
    for entry in code_table().mdc.values():
        for coding in entry.loinc:
            if coding.display is not None:
                out.setdefault(coding.code, coding.display)
    return out


def code_name(code: str) -> str:
    """``8867-4 Heart rate`` (just the code when the table does not know it)."""
    display = loinc_displays().get(code)
    return f"{code} {display}" if display else code


# -- what the system prompt lists ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SensorLine:
    """A sensor as the model sees it."""

    kind: str
    name: str
    state: str
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ObservationLine:
    """An Observation as the model sees it: code, value text, time, its Bundle reference."""

    code: str
    value: str
    time: dt.datetime | None
    reference: str


@dataclass(frozen=True, slots=True)
class SourceLine:
    """A retrieved passage, numbered for citation."""

    number: int
    citation: str
    text: str


def _sensor_text(sensor: SensorLine) -> str:
    codes = ", ".join(code_name(c) for c in sensor.codes) or "no codes"
    return f'- {neutralise(sensor.kind)} "{neutralise(sensor.name)}" ({sensor.state}): {codes}'


def observation_text(line: ObservationLine) -> str:
    """``8867-4 Heart rate: 72 /min at 2025-01-02T10:00:00Z [urn:uuid:…]``."""
    when = f" at {fhir_datetime(line.time)}" if line.time is not None else ""
    return f"{code_name(line.code)}: {neutralise(line.value)}{when} [{line.reference}]"


def sources_text(sources: Sequence[SourceLine]) -> str:
    """The numbered passages, or an empty string when there are none."""
    if not sources:
        return ""
    blocks = [
        f"[{s.number}] {neutralise(s.citation)}\n{neutralise(s.text).strip()}" for s in sources
    ]
    return f"{SOURCES_HEADING}\n" + "\n".join(blocks)


def system_prompt(
    *,
    now: dt.datetime,
    sensors: Sequence[SensorLine],
    recent: Sequence[ObservationLine],
    sources: Sequence[SourceLine],
) -> str:
    """The system text of a consultation (folded into its first user turn)."""
    parts = [
        INSTRUCTIONS,
        f"Current time: {fhir_datetime(now)}",
        "Sensors:\n" + ("\n".join(_sensor_text(s) for s in sensors) or NONE_LISTED),
        "Recent observations:\n"
        + ("\n".join(f"- {observation_text(o)}" for o in recent) or NONE_LISTED),
    ]
    if sources:
        parts.append(sources_text(sources))
    parts.append(PROTOCOL.format(open=OPEN_TAG, attribute=TAG_ATTRIBUTE, close=TAG_CLOSE))
    return "\n\n".join(parts)


def message_text(content: str, sources: Sequence[SourceLine]) -> str:
    """A clinician's later message with the passages retrieved for it."""
    block = sources_text(sources)
    return f"{content.strip()}\n\n{block}" if block else content.strip()


def observation_message(line: ObservationLine) -> str:
    """The user turn that feeds a measurement back."""
    return f"Observation {observation_text(line)}"


def unavailable_message(code: str, reason: str) -> str:
    """The user turn that says a measurement could not be taken."""
    return UNAVAILABLE_MESSAGE.format(code=code_name(code), reason=neutralise(reason))


def limit_message(limit: int) -> str:
    """The user turn after the model asked for more than ``limit`` measurements in one reply."""
    return LIMIT_MESSAGE.format(limit=limit)


def report_request(values: Sequence[ObservationLine]) -> str:
    """The user turn that asks for the draft report (JSON, grammar-constrained)."""
    listing = "; ".join(observation_text(v) for v in values) or NO_VALUES
    return REPORT_REQUEST.format(values=listing)


# -- what the gateway itself writes into the prompt ------------------------------------------------

GATEWAY_TEXTS: Final = (
    INSTRUCTIONS,
    PROTOCOL,
    REPORT_REQUEST,
    LIMIT_MESSAGE,
    SOURCES_HEADING,
    UNAVAILABLE_MESSAGE,
)
"""The gateway's own sentences (``{…}`` marks what is filled in): a reply that copies them is no
clinical content (:mod:`gateway.assistant.guards`)."""


@functools.cache
def prompt_version() -> str:
    """``sha256:`` and 16 hex digits of the gateway's prompt templates: a draft's Provenance
    names the prompt it was written with, and any change of wording changes it."""
    digest = hashlib.sha256("\x1e".join(GATEWAY_TEXTS).encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"
