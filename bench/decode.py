"""Decode benchmark: characteristic bytes → measurements → FHIR JSON text, on one core.

The hot path is what a session does per notification: decode with the registered codec (GHS
notifications through the Reassembler), map the measurements to Observation dicts
(``gateway.fhir.map_measurements``) and write each as JSON (``gateway.fhir.dumps``). The baseline,
measured in the same run, takes the same Observation dicts through ``fhir.resources`` R4B
validate-and-dump. Goal: hot path ≥ 10× the baseline rate.

Traffic (one simulated minute, repeated): Heart Rate 0x2A37 at 1 Hz with RR intervals, PLX
Continuous 0x2A5F at 1 Hz, one ECG lead II strip per second (1 s at 250 Hz, GHS Live Health
Observations 0x2B8B, segmented for an ATT_MTU of 247), a Blood Pressure Measurement 0x2A35 per
minute and a Temperature Measurement 0x2A1C every 30 s. Byte layouts: docs/standards.md (the GHS
strip is built with gateway.ieee11073.ghs). A kind without a codec in this tree is left out and
named in ``notes``.

Prints ONE JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.errors import UnknownCharacteristicError
from gateway.fhir import (
    GatewayInfo,
    MappingContext,
    PatientRef,
    SensorInfo,
    dumps,
    map_measurements,
)
from gateway.fhir.validate import r4b_json
from gateway.ieee11073 import codec_for
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.hrs import HeartRateMeasurement, SensorContact
from gateway.ieee11073.measurement import Measurement
from gateway.ieee11073.numbers import Float, SFloat

SIMULATED_SECONDS = 60
ROUNDS = 5  # alternate the two paths this many times and keep each one's best round
ROUND_MIN_SECONDS = 0.5  # each path runs at least this long per round
GOAL_RATIO = 10
ATT_MTU = 247  # a typical negotiated LE ATT_MTU (Core Vol 3 Part F §3.2.8)
ECG_RATE_HZ = 250
ECG_LEAD_II = 131330  # MDC_ECG_ELEC_POTL_II
MDC_DIM_MILLI_VOLT = 4274
START = dt.datetime(2025, 6, 1, 8, 0, 0, tzinfo=dt.UTC)

HR_UUID, SPO2_UUID, BP_UUID, TEMP_UUID, GHS_LIVE_UUID = 0x2A37, 0x2A5F, 0x2A35, 0x2A1C, 0x2B8B


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str
    uuid: int
    data: bytes
    second: int


def _sfloat(value: str) -> bytes:
    return bytes(SFloat.from_decimal(value))


def _date_time(second: int) -> bytes:
    return bytes(
        DateTime.from_datetime((START + dt.timedelta(seconds=second)).replace(tzinfo=None))
    )


def heart_rate(second: int) -> bytes:
    rr = (800 + second % 7 * 9, 790 + second % 5 * 11) if second % 3 else (812,)
    hr = HeartRateMeasurement(72 + second % 5, SensorContact.DETECTED, rr_intervals=rr)
    return bytes(hr)


def plx_continuous(second: int) -> bytes:
    # docs/standards.md PLX Continuous: flags u8 (0: no optional fields), SpO2, PR (SFLOAT).
    return b"\x00" + _sfloat(str(96 + second % 3)) + _sfloat(str(70 + second % 4))


def blood_pressure(second: int) -> bytes:
    # docs/standards.md Blood Pressure Measurement: flags 0x1E (time stamp, pulse, user, status),
    # systolic, diastolic, MAP, Date Time, pulse, user id, status u16.
    return (
        b"\x1e"
        + _sfloat("128")
        + _sfloat("84")
        + _sfloat("99")
        + _date_time(second)
        + _sfloat("66")
        + b"\x01"
        + struct.pack("<H", 0x0004)  # irregular pulse
    )


def temperature(second: int) -> bytes:
    # docs/standards.md Temperature Measurement: flags 0x06 (time stamp, type), FLOAT °C, Date Time,
    # type 1 (armpit).
    return b"\x06" + bytes(Float.from_decimal("36.85")) + _date_time(second) + b"\x01"


def ecg_notifications(second: int) -> list[bytes]:
    """One second of lead II at 250 Hz as GHS Live Health Observations notifications."""
    from gateway.ieee11073 import ghs

    samples = tuple(2048 + (((second * ECG_RATE_HZ + i) * 37) % 900) - 450 for i in range(250))
    value = ghs.SampleArrayValue(
        MDC_DIM_MILLI_VOLT,
        Float.from_decimal("0.005"),
        Float.from_decimal("-10.240"),
        Float.from_decimal("0.004"),
        1,
        2,
        samples,
    )
    observation = ghs.Observation(value, ghs.ObservationHeader(type_code=ECG_LEAD_II))
    return ghs.segment(bytes(observation), ATT_MTU, second % 64)


def build_traffic(notes: list[str]) -> list[Notification]:
    kinds: list[tuple[str, int, Callable[[int], bytes], int]] = [
        ("heart_rate", HR_UUID, heart_rate, 1),
        ("spo2", SPO2_UUID, plx_continuous, 1),
        ("blood_pressure", BP_UUID, blood_pressure, 60),
        ("temperature", TEMP_UUID, temperature, 30),
    ]
    available = []
    for kind, uuid, build, every in kinds:
        try:
            codec_for(uuid)
        except UnknownCharacteristicError:
            notes.append(f"{kind}: no codec for 0x{uuid:04X} in this tree; left out")
        else:
            available.append((kind, uuid, build, every))
    ecg = True
    try:
        ecg_notifications(0)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        notes.append(f"ecg: gateway.ieee11073.ghs could not build a strip ({exc!r}); left out")
        ecg = False
    traffic = []
    for second in range(SIMULATED_SECONDS):
        for kind, uuid, build, every in available:
            if second % every == 0:
                traffic.append(Notification(kind, uuid, build(second), second))
        if ecg:
            traffic.extend(
                Notification("ecg", GHS_LIVE_UUID, data, second)
                for data in ecg_notifications(second)
            )
    return traffic


class HotPath:
    """What a session does per notification; returns the JSON texts of the Observations."""

    def __init__(self) -> None:
        self.sensor = SensorInfo("001BDC0FFFFE1234", bt_address="001BDC123456")
        self.gateway = GatewayInfo("ECDE3D4E58532D31")
        self.patient = PatientRef("Patient/bench-1", "urn:oid:2.999.1", "MRN-1")
        self.reassembler: Any = None

    def reset(self) -> None:
        """A fresh GHS reassembler (none when this tree has no GHS codec)."""
        try:
            from gateway.ieee11073 import ghs
        except ImportError:
            self.reassembler = None
        else:
            self.reassembler = ghs.Reassembler.live()

    def measurements(self, n: Notification) -> tuple[Measurement, ...]:
        if n.uuid == GHS_LIVE_UUID:
            obj = self.reassembler.feed(n.data)
            return () if obj is None else tuple(obj.measurements())
        value: Any = codec_for(n.uuid).from_bytes(n.data)
        return tuple(value.measurements())

    def resources(self, n: Notification) -> list[dict[str, Any]]:
        ms = self.measurements(n)
        if not ms:
            return []
        ctx = MappingContext(
            self.sensor,
            self.gateway,
            START + dt.timedelta(seconds=n.second, microseconds=250_000),
            patient=self.patient,
        )
        return [r.resource for r in map_measurements(ms, ctx)]

    def run(self, traffic: Iterable[Notification]) -> int:
        """One pass of the hot path; the number of Observations written."""
        count = 0
        for n in traffic:
            for resource in self.resources(n):
                dumps(resource)
                count += 1
        return count


def _timed(body: Callable[[], int], min_seconds: float) -> tuple[int, float]:
    """Run ``body`` until ``min_seconds`` have passed: (items done, seconds taken)."""
    items = 0
    start = time.perf_counter()
    while True:
        items += body()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return items, elapsed


def _best_of_alternating(
    first: Callable[[], int], second: Callable[[], int]
) -> tuple[tuple[int, float], tuple[int, float]]:
    """Alternate the two bodies for ROUNDS rounds; each one's fastest round (items, seconds).

    Alternating exposes both paths to the same background load; the best round is the least
    disturbed one (a shared machine only ever slows a round down).
    """
    best: list[tuple[int, float]] = [(0, 1.0), (0, 1.0)]
    for _ in range(ROUNDS):
        for i, body in enumerate((first, second)):
            items, seconds = _timed(body, ROUND_MIN_SECONDS)
            if items / seconds > best[i][0] / best[i][1]:
                best[i] = (items, seconds)
    return best[0], best[1]


def _parsed(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _pin_to_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def _rate(items: int, seconds: float) -> dict[str, float]:
    return {
        "observations_per_s": round(items / seconds, 1),
        "us_per_observation": round(seconds / items * 1e6, 2),
    }


def main() -> None:
    core = _pin_to_one_core()
    notes: list[str] = []
    traffic = build_traffic(notes)
    hot = HotPath()
    hot.reset()

    # The resources of one pass: the baseline validates and dumps exactly these.
    resources = [r for n in traffic for r in hot.resources(n)]
    notes.extend(
        f"paths differ for {resource['code']['coding'][0]['code']}"
        for resource in resources[:50]  # tests/test_fhir_hotpath.py checks every kind
        if _parsed(dumps(resource)) != _parsed(r4b_json(resource))
    )

    def hot_pass() -> int:
        hot.reset()
        return hot.run(traffic)

    def baseline_pass() -> int:
        for resource in resources:
            r4b_json(resource)
        return len(resources)

    hot_pass()  # warm caches (code table, status effects)
    baseline_pass()
    (hot_items, hot_seconds), (base_items, base_seconds) = _best_of_alternating(
        hot_pass, baseline_pass
    )
    hot_rate = hot_items / hot_seconds
    base_rate = base_items / base_seconds
    mix: dict[str, int] = {}
    for n in traffic:
        mix[n.kind] = mix.get(n.kind, 0) + 1
    print(
        json.dumps(
            {
                "bench": "decode",
                "simulated_seconds": SIMULATED_SECONDS,
                "notifications_per_pass": mix,
                "observations_per_pass": len(resources),
                "hot_path": _rate(hot_items, hot_seconds),
                "r4b_validate_and_dump": _rate(base_items, base_seconds),
                "ratio": round(hot_rate / base_rate, 2),
                "goal_ratio": GOAL_RATIO,
                "goal_met": hot_rate / base_rate >= GOAL_RATIO,
                "rounds": ROUNDS,
                "pinned_core": core,
                "python": platform.python_version(),
                "notes": notes,
            }
        )
    )


if __name__ == "__main__":
    main()
