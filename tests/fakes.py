"""Fakes and shared constants of the assistant tests: sensors that record what reaches them, a
retriever standing in for the real one, sensor kinds as the consultation reads them, and driving
one consultation reply to its end within a bound."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.assistant.consultation import Consultation, ConsultationEvent, Sensors
from gateway.ble.session import SessionState
from gateway.fhir.device import GatewayInfo
from gateway.profiles import Burden, Measure
from gateway.rag.errors import EmptyIndexError
from gateway.rag.retriever import Passage

GATEWAY = GatewayInfo("0011223344556677", name="gw-test", manufacturer="test")
NOW = dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.UTC)
STREAMING = str(SessionState.STREAMING)
HR, SPO2, TEMP = "8867-4", "59408-5", "8310-5"  # LOINC (docs/standards.md, PHD IG mapping)
BOUNDED_S = 60  # a reply must end within this, whatever the sensors do


# -- sensors ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeStatus:
    address: str
    name: str
    kind: str
    state: str = STREAMING


FAKE_VALUES = {HR: (Decimal(72), "/min"), SPO2: (Decimal(97), "%"), TEMP: (Decimal("36.8"), "Cel")}


def fake_observation(code: str, value: Decimal, unit: str) -> dict[str, Any]:
    """A minimal FHIR R4 Observation (the shape the PHD IG mapping produces, reduced)."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": "2025-01-02T10:00:00Z",
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
        "device": {"reference": "urn:uuid:6a1b4c1e-8f4e-5c8b-9d1c-2f3a4b5c6d7e"},
    }


class RecordingSensors:
    """Sensors that measure instantly and record every code that reached ``measure()``."""

    def __init__(self, measurable: Mapping[str, list[str]]) -> None:
        self.measurable = dict(measurable)
        self.calls: list[str] = []

    def can_measure(self) -> dict[str, list[str]]:
        return dict(self.measurable)

    def statuses(self) -> list[FakeStatus]:
        addresses = sorted({a for v in self.measurable.values() for a in v})
        return [FakeStatus(a, f"sensor {a}", "ecg") for a in addresses]

    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the sensors API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> dict[str, Any]:
        self.calls.append(loinc_code)
        value, unit = FAKE_VALUES[loinc_code]
        return fake_observation(loinc_code, value, unit)


class Spy:
    """The real sensor manager, recording every code that reached ``measure()``."""

    def __init__(self, inner: Sensors) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.burdens: list[Burden] = []  # the max_burden of each call

    def can_measure(self) -> Mapping[str, Sequence[str]]:
        return self.inner.can_measure()

    def statuses(self) -> Sequence[Any]:
        return self.inner.statuses()

    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the sensors API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> Mapping[str, Any]:
        self.calls.append(loinc_code)
        self.burdens.append(max_burden)
        return await self.inner.measure(loinc_code, timeout, max_burden=max_burden)


@dataclasses.dataclass(frozen=True)
class KindProfile:
    """A sensor kind as the consultation reads its device profile: codes, measure timeout."""

    loinc: tuple[str, ...]
    measure: Measure


def kind_profile(*codes: str, timeout_s: float = 20.0) -> KindProfile:
    """A kind measuring ``codes`` that waits up to ``timeout_s`` for a measurement."""
    return KindProfile(codes, Measure(method="wait", timeout_s=timeout_s))


class FailingSensors(RecordingSensors):
    """Sensors whose every measurement fails with ``error`` (a ``SensorError`` of the BLE layer,
    as the real manager raises it)."""

    def __init__(self, measurable: Mapping[str, list[str]], error: Exception) -> None:
        super().__init__(measurable)
        self.error = error

    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the sensors API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> dict[str, Any]:
        self.calls.append(loinc_code)
        raise self.error


class HangingSensors(RecordingSensors):
    """A sensor that accepts the request and never delivers (ignoring its timeout)."""

    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the sensors API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> dict[str, Any]:
        self.calls.append(loinc_code)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


# -- retrieval -------------------------------------------------------------------------------------


class FakeRetriever:
    """Stands in for gateway.rag's Retriever (tested with real embeddings in test_rag.py):
    returns passages of the real Passage type, or raises EmptyIndexError like an empty index."""

    def __init__(self, passages: list[Passage] | None) -> None:
        self.passages = passages
        self.queries: list[tuple[str, int, float | None]] = []

    async def search(self, query: str, k: int = 6, threshold: float | None = None) -> list[Passage]:
        self.queries.append((query, k, threshold))
        if self.passages is None:
            raise EmptyIndexError(Path("index.db"))
        return self.passages[:k]


# -- driving a consultation ------------------------------------------------------------------------


async def reply_events(consultation: Consultation, content: str) -> list[ConsultationEvent]:
    """Send ``content`` and collect every event of the reply, which must end within BOUNDED_S."""
    async with asyncio.timeout(BOUNDED_S):
        async with consultation.send(content) as reply:
            return [event async for event in reply]
