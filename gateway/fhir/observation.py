"""Measurements → FHIR R4 Observations, as the HL7 PHD IG (STU 2, v2.0.0) prescribes.

Pure functions: plain dicts out (numbers as ``Decimal`` so the device precision survives into the
JSON text, see :mod:`gateway.fhir.jsonio`), no I/O. The rules and where they come from (PHD IG
pages by name):

- Profiles: PhdNumericObservation (a number), PhdCompoundNumericObservation (blood pressure:
  ``component`` per constituent, no value), PhdRtsaObservation (waveform: ``valueSampledData``),
  PhdBitsEnumerationObservation (device conditions). Every Observation carries the
  ``observation-gatewayDevice`` extension, ``device``, category ``phd`` (plus ``vital-signs`` for
  the FHIR vital-sign codes), code MDC first then LOINC (PhdBaseObservation).
- Value: ``valueQuantity.value`` keeps the MDER exponent ("Mder FLOATs and SFLOATs"); special
  values give a ``dataAbsentReason`` (same page); UCUM units (PhdNumericObservation).
- Measurement status (PhdBaseObservation notes, "Measurement Status" table): invalid /
  not-available / msmt-ongoing → ``dataAbsentReason`` and no value (this takes precedence over a
  special value, PhdNumericObservation.dataAbsentReason comment); questionable / calibrating /
  validated / early-indication → ``interpretation``; test or demo data → ``meta.security``
  HTEST; early-indication → status ``preliminary``; invalid → status ``entered-in-error``.
- Waveforms (PhdRtsaObservation notes): ``origin`` = the sample array's offset with the unit,
  ``factor`` = its scale factor, ``data`` = the samples unchanged; ``period`` in milliseconds per
  sample and ``dimensions`` 1 (one channel per observation).
- Time (PhdBaseObservation notes, "Timestamp"; "Time-stamps and time synchronization"):
  ``effectiveDateTime`` from the device's timestamp when complete (interpreted in the caller's
  time zone; the IG lets the gateway assume the device is in its own zone), placed on the
  gateway's timeline by :func:`gateway.fhir.timeline.place` with the connection's clock anchor:
  a moved timestamp refers to the Coincident Time Stamp Observation, which the mapping adds
  (once per call); a live reading without one takes the time of reception; a reading that cannot
  be dated (a clock never set, a stored record without a time stamp) is marked ``undated``.
- Identifier (PhdBaseObservation notes, "Conditional-create Identifier"): system
  ``.../PhdBaseObservation``, value ``device-patient-type-timestamp[-supplemental…]``: device =
  the EUI-64 (or EUI-48) in upper-case hex, patient = ``value-system`` of the patient identifier
  or the given logical id (empty when there is no patient), type = MDC code, timestamp = the
  device's own Date Time as ``YYYYMMDDhhmmss.00`` (the form of the IG's example
  numeric-spotnumeric; zeros for unknown parts). No timestamp → no identifier: the IG only needs
  it to deduplicate re-sent stored data, and without a device timestamp two live readings of the
  same value would collide.
- Device conditions (CodeSystem ASN1ToHL7, example bpm-status): one
  PhdBitsEnumerationObservation per BITs type and device timestamp, a ``valueBoolean`` true
  component per condition, ``derivedFrom`` the observations that reported them.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from gateway.fhir.codes import (
    MDC_SYSTEM,
    UCUM_SYSTEM,
    CodeTable,
    Coding,
    code_table,
)
from gateway.fhir.device import (
    GatewayInfo,
    SensorInfo,
    gateway_device,
    gateway_full_url,
    sensor_device,
    sensor_full_url,
)
from gateway.fhir.resource import (
    GATEWAY_DEVICE_EXTENSION,
    MappedResource,
    fhir_datetime,
    search_token,
    urn_for,
)
from gateway.fhir.timeline import (
    NO_TIME_STAMP,
    UNSET_BEFORE,
    ClockAnchor,
    coincident_time_stamp_entry,
    coincident_time_stamp_reference,
    place,
)
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.measurement import Condition, Measurement, MeasurementStatus, SampleArray

PHD_IDENTIFIER_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
PHD_CATEGORY_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories"
OBSERVATION_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
_PROFILE_BASE: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/"
NUMERIC_PROFILES: Final = (_PROFILE_BASE + "PhdNumericObservation",)
# As the IG's example compound-numeric-blood-pressure lists them.
COMPOUND_PROFILES: Final = (
    _PROFILE_BASE + "PhdCompoundNumericObservation",
    _PROFILE_BASE + "PhdCompoundObservation",
)
RTSA_PROFILES: Final = (_PROFILE_BASE + "PhdRtsaObservation",)
BITS_PROFILES: Final = (_PROFILE_BASE + "PhdBitsEnumerationObservation",)

MDC_ATTR_SUPPLEMENTAL_TYPES: Final = 68193  # PhdBaseObservation supplementalTypesComponent code
# The IG's identifier example (numeric-spotnumeric.json) writes a timestamp without hundredths
# as "20181113175903.00"; a Bluetooth Date Time has no hundredths.
IDENTIFIER_HUNDREDTHS: Final = ".00"
MS_PER_S: Final = Decimal(1000)
SAMPLED_DATA_DIMENSIONS: Final = 1  # one lead/channel per Observation
STATUS_FINAL: Final = "final"
# When several status bits set Observation.status, the most severe wins.
_STATUS_SEVERITY: Final = {STATUS_FINAL: 0, "preliminary": 1, "entered-in-error": 2}
_DAR_UNKNOWN: Final = "unknown"  # a measurement that carries no value and says not why
_DAR_ERROR: Final = "error"
_DATA_FORMAT_CACHE_SIZE: Final = 64  # sample counts differ per device, rarely per strip
_STATUS_CACHE_SIZE: Final = 1 << 11  # every combination of the 11 MeasurementStatus bits
_CONDITION_ORDER: Final = {condition: i for i, condition in enumerate(Condition)}


@dataclass(frozen=True, slots=True)
class PatientRef:
    """The patient the measurements belong to.

    ``reference`` goes into ``Observation.subject`` (``Patient/123`` or a ``urn:uuid:``).
    The identifier (``system`` + ``value``) feeds the dedup identifier as ``value-system``; without
    one the reference's logical id does (the IG's "provided logical id" case).
    """

    reference: str
    identifier_system: str | None = None
    identifier_value: str | None = None

    def __post_init__(self) -> None:
        if not self.reference:
            raise ValueError("a patient reference is needed")
        if (self.identifier_system is None) != (self.identifier_value is None):
            raise ValueError("give both identifier_system and identifier_value, or neither")

    @property
    def dedup_part(self) -> str:
        if self.identifier_value is not None:
            return f"{self.identifier_value}-{self.identifier_system}"
        return self.reference.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class MappingContext:
    """Everything beside the measurements that an Observation needs.

    ``received_at`` (aware) is the time of reception; ``tz`` is the zone the device's local Date
    Time is read in. ``anchor`` is the sensor's clock as read on this connection, for readings
    stamped by the clock it read (None: timestamps are taken as the sensor gives them);
    ``stored`` says the readings come from the sensor's memory, not live (a stored record without
    a time stamp cannot take the time of reception).
    """

    sensor: SensorInfo
    gateway: GatewayInfo
    received_at: _dt.datetime
    tz: _dt.tzinfo = _dt.UTC
    patient: PatientRef | None = None
    anchor: ClockAnchor | None = None
    stored: bool = False

    def __post_init__(self) -> None:
        if self.received_at.utcoffset() is None:
            raise ValueError("received_at needs a time zone")
        if self.sensor.system_id == self.gateway.system_id:
            raise ValueError(f"sensor and gateway share the system id {self.sensor.system_id}")


@dataclass(frozen=True, slots=True)
class _StatusEffects:
    data_absent_reason: Coding | None
    interpretations: tuple[Coding, ...]
    security: tuple[Coding, ...]
    observation_status: str


@functools.lru_cache(maxsize=_STATUS_CACHE_SIZE)
def _status_effects(status: int) -> _StatusEffects:
    """What a MeasurementStatus value does (cached per value: usually 0)."""
    flags = MeasurementStatus(status)
    dar: Coding | None = None
    interp: list[Coding] = []
    security: list[Coding] = []
    obs_status = STATUS_FINAL
    for mapping in code_table().status:
        if mapping.flag not in flags:
            continue
        if dar is None and mapping.data_absent_reason is not None:
            dar = mapping.data_absent_reason
        if mapping.interpretation is not None:
            interp.append(mapping.interpretation)
        if mapping.security is not None and mapping.security not in security:
            security.append(mapping.security)
        new = mapping.observation_status
        if new is not None and _STATUS_SEVERITY[new] > _STATUS_SEVERITY[obs_status]:
            obs_status = new
    return _StatusEffects(dar, tuple(interp), tuple(security), obs_status)


@dataclass(slots=True)
class _BitsGroup:
    codings: list[Coding]
    sources: list[str]
    when: _Time
    security: list[Coding]  # test/demo labels of the sources carry over


@dataclass(slots=True)
class _Run:
    """Per-call values shared by every Observation of one mapping call."""

    table: CodeTable
    ctx: MappingContext
    device_ref: str
    gateway_ref: str
    received: str
    dedup_prefix: str  # "device-patient"
    conditions: dict[tuple[int, DateTime | None], _BitsGroup] = field(default_factory=dict)
    coincident: MappedResource | None = None  # added once a timestamp was moved


@dataclass(frozen=True, slots=True)
class _Time:
    """Where one reading sits on the gateway's timeline."""

    effective: str
    device_time: _dt.datetime | None = None
    corrected: bool = False
    undated: str | None = None


_PHD_CATEGORY: Final = {
    "system": PHD_CATEGORY_SYSTEM,
    "code": "phd",
    "display": "PHD generated Observation",
}
_VITAL_SIGNS_CATEGORY: Final = {
    "system": OBSERVATION_CATEGORY_SYSTEM,
    "code": "vital-signs",
    "display": "Vital Signs",
}
_CODE_CACHE_SIZE: Final = 1024  # type codes come off the radio: bound what is remembered


@functools.lru_cache(maxsize=_CODE_CACHE_SIZE)
def _code_template(
    code: int, unit_code: int | None = None
) -> tuple[tuple[dict[str, str], ...], str | None, bool]:
    """Codings, text and vital-sign flag of an MDC code (LOINC codings that fit ``unit_code``),
    computed once per code and unit."""
    entry = code_table().mdc.get(code)
    if entry is None:
        return ({"system": MDC_SYSTEM, "code": str(code)},), None, False
    codings = (entry.coding.as_json(), *(lc.as_json() for lc in entry.loinc_for(unit_code)))
    return codings, entry.display, entry.vital_sign


def _codeable(code: int, unit_code: int | None = None) -> dict[str, Any]:
    """``code`` as a fresh CodeableConcept: MDC coding first, then LOINC (PhdBaseObservation)."""
    codings, text, _ = _code_template(code, unit_code)
    out: dict[str, Any] = {"coding": [dict(c) for c in codings]}
    if text is not None:
        out["text"] = text
    return out


def _categories(code: int) -> list[dict[str, Any]]:
    out = [{"coding": [dict(_PHD_CATEGORY)]}]
    if _code_template(code)[2]:
        out.append({"coding": [dict(_VITAL_SIGNS_CATEGORY)]})
    return out


def _concept(coding: Coding) -> dict[str, Any]:
    return {"coding": [coding.as_json()]}


def _quantity(table: CodeTable, value: Decimal, unit_code: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if unit_code is None:
        return out
    unit = table.units.get(unit_code)
    if unit is None:  # no UCUM mapping known: keep the MDC unit rather than lose it
        out.update(unit=f"MDC {unit_code}", system=MDC_SYSTEM, code=str(unit_code))
    else:
        out.update(unit=unit.display, system=UCUM_SYSTEM, code=unit.ucum)
    return out


def _number_or_absent(
    table: CodeTable, m: Measurement, unit_code: int | None
) -> tuple[str, dict[str, Any]]:
    """``("valueQuantity", …)`` or ``("dataAbsentReason", …)`` for a plain number."""
    value = m.value
    if value is None:
        return "dataAbsentReason", _concept(table.data_absent_reasons[_DAR_UNKNOWN])
    if value.special is not None:
        return "dataAbsentReason", _concept(table.special[value.special])
    decimal = value.decimal
    assert decimal is not None  # finite: special is None
    return "valueQuantity", _quantity(table, decimal, unit_code)


def _sampled_data(
    table: CodeTable, samples: SampleArray, unit_code: int | None
) -> dict[str, Any] | None:
    """``valueSampledData``, or None when the scaling cannot be expressed (special values)."""
    origin = samples.offset.decimal
    factor = samples.scale_factor.decimal
    period = samples.period_s.decimal
    if origin is None or factor is None or period is None:
        return None
    if period <= 0 or samples.samples_per_period < 1:  # no time axis to put the samples on
        return None
    out: dict[str, Any] = {
        "origin": _quantity(table, origin, unit_code),
        "period": period * MS_PER_S / samples.samples_per_period,
        "factor": factor,
        "dimensions": SAMPLED_DATA_DIMENSIONS,
    }
    if samples.samples:  # FHIR strings are never empty: no samples, no data
        out["data"] = _data_format(len(samples.samples)) % samples.samples
    return out


@functools.lru_cache(maxsize=_DATA_FORMAT_CACHE_SIZE)
def _data_format(count: int) -> str:
    """``"%d %d … %d"`` for ``count`` samples: one C-level format, twice as fast as a join."""
    return " ".join(["%d"] * count)


def _component(table: CodeTable, c: Measurement, parent_unit: int | None) -> dict[str, Any]:
    unit = c.unit_code if c.unit_code is not None else parent_unit
    out: dict[str, Any] = {"code": _codeable(c.type_code, unit)}
    effects = _status_effects(int(c.status))
    if effects.data_absent_reason is not None:
        out["dataAbsentReason"] = _concept(effects.data_absent_reason)
    else:
        key, value = _number_or_absent(table, c, unit)
        out[key] = value
    if effects.interpretations:
        out["interpretation"] = [_concept(i) for i in effects.interpretations]
    return out


def _supplemental(code: int) -> dict[str, Any]:
    """A Supplemental-Types component (PhdBaseObservation supplementalTypesComponent)."""
    attribute = _code_template(MDC_ATTR_SUPPLEMENTAL_TYPES)[0][0]
    value = _code_template(code)[0][0]
    return {
        "code": {"coding": [dict(attribute)]},
        "valueCodeableConcept": {"coding": [dict(value)]},
    }


def _time(run: _Run, m: Measurement) -> _Time:
    ctx = run.ctx
    ts = m.timestamp
    local = ts.to_datetime() if ts is not None else None
    device_time = local.replace(tzinfo=ctx.tz) if local is not None else None
    if local is None or any(
        run.table.conditions[c].effective_from_receive_time for c in m.conditions
    ):
        undated = NO_TIME_STAMP if ctx.stored else None
        return _Time(run.received, device_time, undated=undated)
    assert device_time is not None
    if ctx.anchor is None and local >= UNSET_BEFORE:  # the common live case: as stamped
        return _Time(fhir_datetime(device_time), device_time)
    placed = place(local, ctx.anchor, received=ctx.received_at, tz=ctx.tz)
    if placed.effective is None:  # kept with the sensor's own stamp, never sent
        return _Time(fhir_datetime(device_time), device_time, undated=placed.held)
    return _Time(fhir_datetime(placed.effective), device_time, corrected=placed.corrected)


def _coincident_reference(run: _Run) -> dict[str, Any]:
    """The extension of a moved timestamp; adds the coincident time stamp to the run once."""
    if run.coincident is None:
        ctx = run.ctx
        assert ctx.anchor is not None
        run.coincident = coincident_time_stamp_entry(
            ctx.anchor,
            tz=ctx.tz,
            sensor_id=ctx.sensor.system_id,
            sensor_ref=run.device_ref,
            gateway_ref=run.gateway_ref,
        )
    return coincident_time_stamp_reference(run.coincident.full_url)


def _dedup_value(run: _Run, type_code: int, ts: DateTime, supplemental: tuple[int, ...]) -> str:
    parts = [run.dedup_prefix, str(type_code), ts.compact() + IDENTIFIER_HUNDREDTHS]
    parts.extend(str(code) for code in supplemental)
    return "-".join(parts)


def _common(
    run: _Run,
    *,
    profiles: tuple[str, ...],
    status: str,
    type_code: int,
    identifier: str | None,
    effective: str,
    unit_code: int | None = None,
) -> dict[str, Any]:
    """The head of every Observation, in the element order FHIR JSON examples use."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"profile": list(profiles)},
        "extension": [
            {"url": GATEWAY_DEVICE_EXTENSION, "valueReference": {"reference": run.gateway_ref}}
        ],
    }
    if identifier is not None:
        obs["identifier"] = [{"system": PHD_IDENTIFIER_SYSTEM, "value": identifier}]
    obs["status"] = status
    obs["category"] = _categories(type_code)
    obs["code"] = _codeable(type_code, unit_code)
    if run.ctx.patient is not None:
        obs["subject"] = {"reference": run.ctx.patient.reference}
    obs["effectiveDateTime"] = effective
    return obs


def _value(
    table: CodeTable, m: Measurement, effects: _StatusEffects, obs: dict[str, Any]
) -> list[dict[str, Any]]:
    """Set the value (or why it is absent) on ``obs``; return compound components."""
    if effects.data_absent_reason is not None:  # no value and no components (IG)
        obs["dataAbsentReason"] = _concept(effects.data_absent_reason)
    elif m.samples is not None:
        sampled = _sampled_data(table, m.samples, m.unit_code)
        if sampled is None:
            obs["dataAbsentReason"] = _concept(table.data_absent_reasons[_DAR_ERROR])
        else:
            obs["valueSampledData"] = sampled
    elif m.components:
        return [_component(table, c, m.unit_code) for c in m.components]
    else:
        key, value = _number_or_absent(table, m, m.unit_code)
        obs[key] = value
    return []


def _body_site(table: CodeTable, key: str) -> dict[str, Any]:
    site = table.body_sites.get(key)
    if site is None:  # a key the table does not know: keep it as text
        return {"text": key}
    return {"coding": [site.coding.as_json()], "text": key}


def _observation(run: _Run, index: int, m: Measurement) -> MappedResource:
    table = run.table
    effects = _status_effects(int(m.status))
    profiles: tuple[str, ...]
    if m.samples is not None:
        profiles = RTSA_PROFILES
    elif m.components:
        profiles = COMPOUND_PROFILES
    else:
        profiles = NUMERIC_PROFILES
    identifier = (
        _dedup_value(run, m.type_code, m.timestamp, m.supplemental)
        if m.timestamp is not None
        else None
    )
    when = _time(run, m)
    effective = when.effective
    obs = _common(
        run,
        profiles=profiles,
        status=effects.observation_status,
        type_code=m.type_code,
        identifier=identifier,
        effective=effective,
        unit_code=m.unit_code,
    )
    if effects.security:
        obs["meta"]["security"] = [s.as_json() for s in effects.security]
    if when.corrected:
        obs["extension"].append(_coincident_reference(run))

    components = _value(table, m, effects, obs)
    if effects.interpretations:
        obs["interpretation"] = [_concept(i) for i in effects.interpretations]
    if m.body_site is not None:
        obs["bodySite"] = _body_site(table, m.body_site)
    obs["device"] = {"reference": run.device_ref}
    components.extend(_supplemental(code) for code in m.supplemental)
    if components:
        obs["component"] = components

    if identifier is not None:
        full_url = urn_for(PHD_IDENTIFIER_SYSTEM, identifier)
        if_none_exist: str | None = search_token(PHD_IDENTIFIER_SYSTEM, identifier)
    else:
        full_url = urn_for(
            PHD_IDENTIFIER_SYSTEM, f"{run.dedup_prefix}-{m.type_code}@{run.received}#{index}"
        )
        if_none_exist = None
    _collect_conditions(run, m, full_url, when, effects.security)
    return MappedResource(
        full_url, obs, if_none_exist, device_time=when.device_time, undated=when.undated
    )


def _collect_conditions(
    run: _Run, m: Measurement, source: str, when: _Time, security: tuple[Coding, ...]
) -> None:
    for condition in sorted(m.conditions, key=_CONDITION_ORDER.__getitem__):
        mapping = run.table.conditions[condition]
        if mapping.bits is None or mapping.coding is None:
            continue
        group = run.conditions.setdefault((mapping.bits, m.timestamp), _BitsGroup([], [], when, []))
        if mapping.coding not in group.codings:
            group.codings.append(mapping.coding)
        if source not in group.sources:
            group.sources.append(source)
        group.security.extend(s for s in security if s not in group.security)


def _bits_observation(
    run: _Run, bits: int, ts: DateTime | None, group: _BitsGroup, index: int
) -> MappedResource:
    identifier = _dedup_value(run, bits, ts, ()) if ts is not None else None
    obs = _common(
        run,
        profiles=BITS_PROFILES,
        status=STATUS_FINAL,
        type_code=bits,
        identifier=identifier,
        effective=group.when.effective,
    )
    if group.security:
        obs["meta"]["security"] = [s.as_json() for s in group.security]
    if group.when.corrected:
        obs["extension"].append(_coincident_reference(run))
    obs["device"] = {"reference": run.device_ref}
    obs["component"] = [{"code": _concept(c), "valueBoolean": True} for c in group.codings]
    obs["derivedFrom"] = [{"reference": source} for source in group.sources]
    when = group.when
    if identifier is not None:
        return MappedResource(
            urn_for(PHD_IDENTIFIER_SYSTEM, identifier),
            obs,
            search_token(PHD_IDENTIFIER_SYSTEM, identifier),
            device_time=when.device_time,
            undated=when.undated,
        )
    key = f"{run.dedup_prefix}-{bits}@{run.received}#bits{index}"
    return MappedResource(
        urn_for(PHD_IDENTIFIER_SYSTEM, key), obs, device_time=when.device_time, undated=when.undated
    )


def _start(ctx: MappingContext) -> _Run:
    patient = ctx.patient.dedup_part if ctx.patient is not None else ""
    return _Run(
        table=code_table(),
        ctx=ctx,
        device_ref=sensor_full_url(ctx.sensor),
        gateway_ref=gateway_full_url(ctx.gateway),
        received=fhir_datetime(ctx.received_at),
        dedup_prefix=f"{ctx.sensor.system_id}-{patient}",
    )


def map_measurements(
    measurements: Iterable[Measurement], ctx: MappingContext
) -> list[MappedResource]:
    """One Observation per measurement, then one BITs Observation per group of conditions, then
    the Coincident Time Stamp Observation when a timestamp was moved onto the gateway's timeline.

    References point at ``urn:uuid:`` of the sensor and gateway Devices (see
    :func:`resources_for` to get those too).
    """
    run = _start(ctx)
    out = [_observation(run, index, m) for index, m in enumerate(measurements)]
    out.extend(
        _bits_observation(run, bits, ts, group, index)
        for index, ((bits, ts), group) in enumerate(run.conditions.items())
    )
    if run.coincident is not None:
        out.append(run.coincident)
    return out


def resources_for(measurements: Iterable[Measurement], ctx: MappingContext) -> list[MappedResource]:
    """The gateway Device, the sensor Device and the Observations: a self-contained set."""
    return [
        gateway_device(ctx.gateway),
        sensor_device(ctx.sensor),
        *map_measurements(measurements, ctx),
    ]
