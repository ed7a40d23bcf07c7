"""Scenarios: the patient's vital signs over time, the sensors' timing and the faults to inject.

A scenario is a TOML document validated with pydantic. Built-in scenarios live in
``firmware_sim/scenarios/*.toml`` (``normal``, ``tachycardia``, ``hypoxia``, ``hypertension``,
``fever``, ``faults``); any other name is read as a path to a TOML file. Example::

    name = "ward round"
    [vitals]
    hr = 80
    [bp]
    interval_s = 120
    [[at]]            # from t = 30 s the heart rate climbs to 120 /min over 20 s
    t = 30
    ramp_s = 20
    hr = 120

Overrides (``Simulator(..., overrides={"bp.interval_s": 2})``) address the same keys with dots and
are applied before validation, so they are checked like the file. Errors name the file and the
field: ``bad.toml: bp.interval_s: Input should be greater than 0``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

BUILTIN_DIRECTORY: Final = Path(__file__).resolve().parent / "scenarios"  # package data
VITAL_FIELDS: Final = ("hr", "hrv", "resp_rate", "spo2", "systolic", "diastolic", "temp")


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the source and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


HeartRate = Annotated[float, Field(ge=20, le=250)]
Hrv = Annotated[float, Field(ge=0, le=0.3)]
RespRate = Annotated[float, Field(ge=4, le=60)]
Spo2 = Annotated[float, Field(ge=50, le=100)]
Pressure = Annotated[float, Field(ge=20, le=300)]
Temperature = Annotated[float, Field(ge=30, le=43)]
Percent = Annotated[float, Field(ge=0, le=100)]
Seconds = Annotated[float, Field(gt=0)]


class Vitals(_Model):
    """Targets the signal models follow (hrv: relative RR variability, 0.03 = 3 %)."""

    hr: HeartRate = 72
    hrv: Hrv = 0.04
    resp_rate: RespRate = 14
    spo2: Spo2 = 98
    systolic: Pressure = 118
    diastolic: Pressure = 76
    temp: Temperature = 36.8

    @model_validator(mode="after")
    def _pressures(self) -> Self:
        if self.diastolic + 10 > self.systolic:
            raise ValueError("diastolic must be at least 10 mmHg below systolic")
        return self


class TimelinePoint(_Model):
    """From ``t`` (s), move the given vitals to new values, linearly over ``ramp_s``."""

    t: Annotated[float, Field(ge=0)]
    ramp_s: Annotated[float, Field(ge=0)] = 0
    hr: HeartRate | None = None
    hrv: Hrv | None = None
    resp_rate: RespRate | None = None
    spo2: Spo2 | None = None
    systolic: Pressure | None = None
    diastolic: Pressure | None = None
    temp: Temperature | None = None


class EcgSettings(_Model):
    interval_s: Seconds = 1.0  # HR notification and one waveform observation per interval
    sample_rate_hz: Annotated[int, Field(ge=50, le=1000)] = 250

    @field_validator("sample_rate_hz")
    @classmethod
    def _exact_period(cls, value: int) -> int:
        if (Decimal(1) / Decimal(value)) * value != 1:
            raise ValueError("1/rate must be an exact decimal (e.g. 125, 200, 250, 500)")
        return value


class Spo2Settings(_Model):
    interval_s: Seconds = 1.0  # continuous measurement
    spot_check_interval_s: Seconds | None = None  # periodic spot-checks (on demand always)
    pleth: bool = False  # add a GHS service with a pleth waveform
    pleth_rate_hz: Annotated[int, Field(ge=10, le=500)] = 50


class BpSettings(_Model):
    interval_s: Seconds | None = 60.0  # None: only on demand
    cycle_s: Seconds = 30.0  # cuff inflation + deflation
    cuff_update_s: Seconds = 1.0  # intermediate cuff pressure notifications
    stored_records: Annotated[int, Field(ge=0, le=100)] = 3
    user_id: Annotated[int, Field(ge=0, le=255)] = 1


class ThermoSettings(_Model):
    interval_s: Seconds = 5.0
    intermediate_s: Seconds = 1.0


class GlucoseSettings(_Model):
    """The glucose meter: a person takes a reading every ``interval_s`` (None: never during the
    run); the meter keeps it and, when a gateway is connected, ends the link so that the gateway
    reconnects and downloads it over the RACP (GLS §3.4: a meter sends records only when asked)."""

    interval_s: Seconds | None = 600.0
    stored_records: Annotated[int, Field(ge=0, le=100)] = 4  # taken before the run, 3 h apart
    mg_dl: Annotated[float, Field(ge=20, le=600)] = 98  # the patient's glucose level
    mmol_per_l: bool = False  # report in mol/L instead of kg/L


class SecuritySettings(_Model):
    """Sensors that demand a secure link (firmware_sim.security): ``encrypted`` kinds pair by
    Just Works, ``authenticated`` kinds by passkey entry with ``passkey`` (shown on the sensor).
    A kind listed in both is authenticated."""

    encrypted: list[str] = []
    authenticated: list[str] = []
    passkey: Annotated[int, Field(ge=0, le=999_999)] = 123_456

    def level(self, kind: str) -> str:
        if kind in self.authenticated:
            return "authenticated"
        return "encrypted" if kind in self.encrypted else "none"


class FaultSettings(_Model):
    """Faults to inject; None disables one. Packet faults hit every Nth measurement packet."""

    disconnect_every_s: Seconds | None = None
    advertising_pause_s: Annotated[float, Field(ge=0)] = 0
    truncate_every: Annotated[int, Field(ge=1)] | None = None
    wrong_flags_every: Annotated[int, Field(ge=1)] | None = None
    nan_every: Annotated[int, Field(ge=1)] | None = None
    nres_every: Annotated[int, Field(ge=1)] | None = None
    burst_every_s: Seconds | None = None
    burst_size: Annotated[int, Field(ge=1, le=100)] = 10
    battery_start: Percent = 95
    battery_drain_per_min: Annotated[float, Field(ge=0)] = 0.05
    low_battery_threshold: Percent = 15
    # A battery change: the sensor powers off (links drop, advertising pauses), its clock loses
    # the time and restarts at the unset epoch, and the new battery is full.
    battery_change_every_s: Seconds | None = None
    # The firmware update path (MCUmgr image upload; firmware_sim.faults.SmpFaults), each once
    # in the sensor's lifetime: the link drops once an upload first reaches this many bytes
    # (after the device took the chunk, before it answers), and the Nth upload chunk the device
    # takes arrives with one byte flipped (the image then fails its SHA-256 check).
    smp_drop_at_bytes: Annotated[int, Field(ge=1)] | None = None
    smp_corrupt_chunk: Annotated[int, Field(ge=1)] | None = None


class Scenario(_Model):
    name: str = "custom"
    description: str = ""
    advertising_interval_ms: Annotated[float, Field(ge=20, le=10240)] = 100
    # How fast (positive) or slow the sensors' clocks run, in parts per million; each sensor
    # gets the value, so a gateway that set their clocks sees them walk away at that rate.
    clock_drift_ppm: Annotated[float, Field(ge=-1000, le=1000)] = 0.0
    # Clocks that start set, this many seconds ahead (positive) or behind true UTC, as if a
    # gateway set them long ago and they drifted since; None: they start unset (factory epoch).
    clock_set_error_s: Annotated[float, Field(ge=-86400, le=86400)] | None = None
    vitals: Vitals = Vitals()
    ecg: EcgSettings = EcgSettings()
    spo2: Spo2Settings = Spo2Settings()
    bp: BpSettings = BpSettings()
    thermo: ThermoSettings = ThermoSettings()
    glucose: GlucoseSettings = GlucoseSettings()
    faults: FaultSettings = FaultSettings()
    security: SecuritySettings = SecuritySettings()
    at: list[TimelinePoint] = []

    @field_validator("at")
    @classmethod
    def _ordered(cls, points: list[TimelinePoint]) -> list[TimelinePoint]:
        return sorted(points, key=lambda p: p.t)


@dataclass(frozen=True, slots=True)
class VitalsNow:
    """Vital-sign values at one instant (satisfies ``signals.Physiology``)."""

    hr: float
    hrv: float
    resp_rate: float
    spo2: float
    systolic: float
    diastolic: float
    temp: float


class Timeline:
    """Evaluates a scenario's vitals at any time: piecewise constant with linear ramps.

    A ramp starts from the value the vital has when the point begins (which may itself be
    mid-way through an earlier ramp) and reaches the point's target ``ramp_s`` seconds later.
    """

    def __init__(self, scenario: Scenario) -> None:
        self._segments: dict[str, tuple[float, list[_Segment]]] = {}
        for name in VITAL_FIELDS:
            base = float(getattr(scenario.vitals, name))
            segments: list[_Segment] = []
            for point in scenario.at:
                target = getattr(point, name)
                if target is not None:
                    start = _evaluate(base, segments, point.t)
                    segments.append(_Segment(point.t, point.ramp_s, start, float(target)))
            self._segments[name] = (base, segments)

    def at(self, t: float) -> VitalsNow:
        return VitalsNow(
            **{name: _evaluate(base, segs, t) for name, (base, segs) in self._segments.items()}
        )


@dataclass(frozen=True, slots=True)
class _Segment:
    t: float
    ramp_s: float
    start: float
    target: float


def _evaluate(base: float, segments: list[_Segment], t: float) -> float:
    value = base
    for seg in segments:
        if seg.t > t:
            break
        if seg.ramp_s and t < seg.t + seg.ramp_s:
            value = seg.start + (seg.target - seg.start) * (t - seg.t) / seg.ramp_s
        else:
            value = seg.target
    return value


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIRECTORY.glob("*.toml"))


def load(source: str | Path, overrides: Mapping[str, object] | None = None) -> Scenario:
    """A built-in scenario by name, or a TOML file by path, with dotted-key overrides applied."""
    text, origin = _read(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: not valid TOML: {exc}") from exc
    data.setdefault("name", Path(origin).stem)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value, origin)
    return validate(data, origin)


def validate(data: Mapping[str, Any], origin: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(document)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ScenarioError(f"{origin}: {field}: {first['msg']}{more}") from exc


def _read(source: str | Path) -> tuple[str, str]:
    if isinstance(source, str) and source in builtin_names():
        resource = BUILTIN_DIRECTORY / f"{source}.toml"
        return resource.read_text(encoding="utf-8"), f"firmware_sim/scenarios/{source}.toml"
    path = Path(source)
    if not path.is_file():
        raise ScenarioError(
            f"scenario {str(source)!r}: neither a built-in scenario "
            f"({', '.join(builtin_names())}) nor a TOML file"
        )
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from exc


def set_dotted(data: dict[str, Any], key: str, value: object, origin: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ScenarioError(f"{origin}: override {key!r}: {part!r} is not a table")
        node = child
    node[parts[-1]] = value
