"""The FHIR code table (``codes.toml``): MDC codes, units, body sites, status bits, special values.

The TOML file is the data; this module validates it once with pydantic and turns it into frozen
lookup structures (:class:`CodeTable`). Code systems are the URIs the HL7 PHD IG (STU 2) and FHIR R4
fix for each coding.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.ieee11073.measurement import Condition, MeasurementStatus
from gateway.ieee11073.numbers import Special

# -- Code systems (FHIR R4 / PHD IG) --------------------------------------------------------------
MDC_SYSTEM: Final = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM: Final = "http://loinc.org"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
SNOMED_SYSTEM: Final = "http://snomed.info/sct"
DATA_ABSENT_REASON_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# PhdBaseObservation.interpretation slice MsmtStatusInterpretation fixes this system.
MEASUREMENT_STATUS_SYSTEM: Final = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
ACT_REASON_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ASN1_TO_HL7_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/ASN1ToHL7"

_PACKAGE: Final = "gateway.fhir"
CODE_TABLE_RESOURCE: Final = "codes.toml"
_LOINC_CODE = re.compile(r"^[0-9]{1,7}-[0-9]$")
_SNOMED_CODE = re.compile(r"^[0-9]{6,18}$")


# -- Frozen lookup structures ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coding:
    """One FHIR Coding; ``as_json()`` gives a fresh dict for a resource."""

    system: str
    code: str
    display: str | None = None

    def as_json(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display is not None:
            out["display"] = self.display
        return out


@dataclass(frozen=True, slots=True)
class MdcCode:
    """An MDC code: its MDC coding (display = reference id), a human text, LOINC codings."""

    code: int
    ref: str | None
    display: str
    loinc: tuple[Coding, ...]
    vital_sign: bool
    loinc_units: tuple[int | None, ...] = ()  # per LOINC coding: the only unit it fits, or None

    @property
    def coding(self) -> Coding:
        return Coding(MDC_SYSTEM, str(self.code), self.ref)

    def loinc_for(self, unit_code: int | None) -> tuple[Coding, ...]:
        """The LOINC codings that fit a value in ``unit_code``: a LOINC code names its property
        (Glucose [Mass/volume] vs [Moles/volume]), so one restricted to a unit is left out for
        values in another (or without one)."""
        if not any(self.loinc_units):
            return self.loinc
        return tuple(
            coding
            for coding, unit in zip(self.loinc, self.loinc_units, strict=True)
            if unit is None or unit == unit_code
        )


@dataclass(frozen=True, slots=True)
class Unit:
    """An MDC dimension code and the UCUM unit it maps to."""

    code: int
    ref: str
    ucum: str
    display: str


@dataclass(frozen=True, slots=True)
class BodySite:
    key: str
    coding: Coding


@dataclass(frozen=True, slots=True)
class StatusMapping:
    """What one MeasurementStatus bit does to an Observation."""

    flag: MeasurementStatus
    data_absent_reason: Coding | None
    interpretation: Coding | None
    security: Coding | None
    observation_status: str | None


@dataclass(frozen=True, slots=True)
class ConditionMapping:
    """A device condition: a BITs observation component, or a change of timeline."""

    condition: Condition
    bits: int | None
    coding: Coding | None
    effective_from_receive_time: bool


@dataclass(frozen=True, slots=True)
class CodeTable:
    mdc: Mapping[int, MdcCode]
    units: Mapping[int, Unit]
    body_sites: Mapping[str, BodySite]
    status: tuple[StatusMapping, ...]  # in bit order: the first data absent reason wins
    special: Mapping[Special, Coding]
    conditions: Mapping[Condition, ConditionMapping]
    data_absent_reasons: Mapping[str, Coding]


# -- The file's schema -----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _LoincEntry(_Model):
    code: str
    display: str
    unit: int | None = None  # an MDC dimension code: the coding fits values in this unit only

    @field_validator("code")
    @classmethod
    def _loinc_form(cls, value: str) -> str:
        if not _LOINC_CODE.fullmatch(value):
            raise ValueError(f"LOINC code {value!r} is not of the form digits-digit")
        return value


class _MdcEntry(_Model):
    ref: str | None = Field(default=None, pattern=r"^MDC_[A-Z0-9_]+$")
    display: str = Field(min_length=1)
    loinc: tuple[_LoincEntry, ...] = ()
    vital_sign: bool = False


class _UnitEntry(_Model):
    ref: str = Field(pattern=r"^MDC_DIM_[A-Z0-9_]+$")
    ucum: str = Field(min_length=1)
    display: str = Field(min_length=1)


class _SiteEntry(_Model):
    snomed: str
    display: str = Field(min_length=1)

    @field_validator("snomed")
    @classmethod
    def _sctid(cls, value: str) -> str:
        if not _SNOMED_CODE.fullmatch(value):
            raise ValueError(f"SNOMED CT id {value!r} is not 6-18 digits")
        return value


class _StatusEntry(_Model):
    data_absent_reason: str | None = None
    interpretation: str | None = None
    security: str | None = None
    observation_status: Literal["preliminary", "entered-in-error"] | None = None

    @model_validator(mode="after")
    def _one_effect(self) -> Self:
        effects = (self.data_absent_reason, self.interpretation, self.security)
        if sum(e is not None for e in effects) > 1:
            raise ValueError("give at most one of data_absent_reason, interpretation, security")
        return self


class _ConditionEntry(_Model):
    bits: int | None = None
    code: str | None = None
    display: str | None = None
    effective_from_receive_time: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = (self.bits is not None, self.code is not None, self.display is not None)
        if any(given) and not all(given):
            raise ValueError("bits, code and display go together")
        if self.bits is not None and not str(self.code).startswith(f"{self.bits}."):
            raise ValueError(f"code {self.code!r} is not a bit of {self.bits}")
        if self.bits is None and not self.effective_from_receive_time:
            raise ValueError("a condition needs a BITs coding or effective_from_receive_time")
        return self


class _CodeTableFile(_Model):
    mdc: dict[int, _MdcEntry]
    unit: dict[int, _UnitEntry]
    body_site: dict[str, _SiteEntry]
    data_absent_reason: dict[str, str]
    interpretation: dict[str, str]
    security: dict[str, str]
    status: dict[str, _StatusEntry]
    special: dict[str, str]
    condition: dict[str, _ConditionEntry]

    @model_validator(mode="after")
    def _complete_and_resolved(self) -> Self:
        _same_keys("status", self.status, {f.name for f in MeasurementStatus if f.name})
        _same_keys("special", self.special, {s.name for s in Special})
        _same_keys("condition", self.condition, {c.value for c in Condition})
        for name, entry in self.status.items():
            _known("status", name, entry.data_absent_reason, self.data_absent_reason)
            _known("status", name, entry.interpretation, self.interpretation)
            _known("status", name, entry.security, self.security)
        for name, reason in self.special.items():
            _known("special", name, reason, self.data_absent_reason)
        for code, mdc_entry in self.mdc.items():
            for lc in mdc_entry.loinc:
                if lc.unit is not None and lc.unit not in self.unit:
                    raise ValueError(f"mdc.{code}: LOINC {lc.code} unit {lc.unit} has no [unit]")
        for name, cond in self.condition.items():
            if cond.bits is not None and cond.bits not in self.mdc:
                raise ValueError(f"condition.{name}: bits {cond.bits} has no [mdc] entry")
        return self


def _same_keys(table: str, given: Mapping[str, object], expected: set[str]) -> None:
    missing, extra = expected - set(given), set(given) - expected
    if missing or extra:
        raise ValueError(f"[{table}]: missing {sorted(missing)}, unknown {sorted(extra)}")


def _known(table: str, key: str, code: str | None, known: Mapping[str, str]) -> None:
    if code is not None and code not in known:
        raise ValueError(f"{table}.{key}: {code!r} is not defined in its code list")


# -- Loading ---------------------------------------------------------------------------------------


def load_code_table(text: str) -> CodeTable:
    """Validate ``text`` (codes.toml) and build the lookup structures.

    Raises ``tomllib.TOMLDecodeError`` or ``pydantic.ValidationError`` (both ``ValueError``)
    naming the entry at fault.
    """
    return build_code_table(tomllib.loads(text))


def build_code_table(data: Mapping[str, Any]) -> CodeTable:
    """Validate the parsed TOML ``data`` and build the lookup structures (see load_code_table)."""
    raw = _CodeTableFile.model_validate(data)
    dar = {
        code: Coding(DATA_ABSENT_REASON_SYSTEM, code, display)
        for code, display in raw.data_absent_reason.items()
    }
    interp = {
        code: Coding(MEASUREMENT_STATUS_SYSTEM, code, display)
        for code, display in raw.interpretation.items()
    }
    security = {
        code: Coding(ACT_REASON_SYSTEM, code, display) for code, display in raw.security.items()
    }
    mdc = {
        code: MdcCode(
            code,
            e.ref,
            e.display,
            tuple(Coding(LOINC_SYSTEM, lc.code, lc.display) for lc in e.loinc),
            e.vital_sign,
            tuple(lc.unit for lc in e.loinc),
        )
        for code, e in raw.mdc.items()
    }
    status = tuple(
        _status_mapping(flag, raw.status[flag.name], dar, interp, security)
        for flag in MeasurementStatus
        if flag.name
    )
    conditions = {cond: _condition_mapping(cond, raw.condition[cond.value]) for cond in Condition}
    return CodeTable(
        mdc=MappingProxyType(mdc),
        units=MappingProxyType(
            {code: Unit(code, e.ref, e.ucum, e.display) for code, e in raw.unit.items()}
        ),
        body_sites=MappingProxyType(
            {
                key: BodySite(key, Coding(SNOMED_SYSTEM, e.snomed, e.display))
                for key, e in raw.body_site.items()
            }
        ),
        status=status,
        special=MappingProxyType({s: dar[raw.special[s.name]] for s in Special}),
        conditions=MappingProxyType(conditions),
        data_absent_reasons=MappingProxyType(dar),
    )


def _status_mapping(
    flag: MeasurementStatus,
    entry: _StatusEntry,
    dar: Mapping[str, Coding],
    interp: Mapping[str, Coding],
    security: Mapping[str, Coding],
) -> StatusMapping:
    return StatusMapping(
        flag,
        dar[entry.data_absent_reason] if entry.data_absent_reason else None,
        interp[entry.interpretation] if entry.interpretation else None,
        security[entry.security] if entry.security else None,
        entry.observation_status,
    )


def _condition_mapping(cond: Condition, entry: _ConditionEntry) -> ConditionMapping:
    coding = (
        Coding(ASN1_TO_HL7_SYSTEM, entry.code, entry.display)
        if entry.code is not None and entry.display is not None
        else None
    )
    return ConditionMapping(cond, entry.bits, coding, entry.effective_from_receive_time)


@functools.cache
def code_table() -> CodeTable:
    """The packaged code table, loaded and validated on first use."""
    resource = importlib.resources.files(_PACKAGE).joinpath(CODE_TABLE_RESOURCE)
    return load_code_table(resource.read_text(encoding="utf-8"))
