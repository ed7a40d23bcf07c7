"""Device profiles: one TOML file per sensor kind in ``device_profiles/`` ("data first", see
docs/architecture.md).

A profile says how the gateway recognises a sensor (advertised services), what it reads and
subscribes to on connect, how it downloads stored records, and how it obtains a fresh measurement
on demand. Everything is validated at load (pydantic, frozen, unknown keys rejected); a broken file
raises :class:`~gateway.errors.ProfileError` naming the file and the field, for example
``device_profiles/bp.toml: measure.timeout_s: Input should be greater than 0``.

UUIDs may be written as 16-bit (``"2A35"``), 32-bit or full 128-bit strings; they are stored as
full lower-case 128-bit strings (:func:`full_uuid`). Byte values (``value``, ``start``, ``stop``)
are hex strings, checked and stored lower-case without spaces (``bytes.fromhex`` reads them).
"""

from __future__ import annotations

import enum
import importlib.resources
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ProfileError

# The repository's device_profiles/, installed as the package data of gateway.device_profiles
# (pyproject.toml maps the folder), so a wheel carries the profiles too.
DEFAULT_DIRECTORY: Final = Path(str(importlib.resources.files("gateway.device_profiles")))
PROFILE_SUFFIX: Final = ".toml"
# Bluetooth Core Spec Vol 3 Part B §2.5.1: 16/32-bit UUIDs live in the Bluetooth Base UUID.
BLUETOOTH_BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
_UUID16_32 = re.compile(r"^(?:0x)?([0-9a-f]{4}|[0-9a-f]{8})$")
_UUID128 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX_BYTES = re.compile(r"^(?:[0-9a-f]{2})+$")
MDC_PARTITION_INFRA: Final = 8  # MDC_DEV_SPEC_PROFILE_* codes are in partition 8 (infrastructure)


def full_uuid(value: str) -> str:
    """Normalise a 16-bit, 32-bit or 128-bit UUID string to the full 128-bit lower-case form.

    ``"2A35"`` → ``"00002a35-0000-1000-8000-00805f9b34fb"``. Raises ``ValueError`` otherwise.
    """
    text = value.strip().lower()
    short = _UUID16_32.fullmatch(text)
    if short is not None:
        return short.group(1).rjust(8, "0") + BLUETOOTH_BASE_UUID_SUFFIX
    if _UUID128.fullmatch(text):
        return text
    raise ValueError(f"{value!r} is not a 16-bit, 32-bit or 128-bit UUID")


def _uuid(value: object) -> object:
    return full_uuid(value) if isinstance(value, str) else value


def _hex_bytes(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = value.replace(" ", "").lower()
    if not _HEX_BYTES.fullmatch(text):
        raise ValueError(f"{value!r} is not hex bytes (pairs of 0-9a-f)")
    return text


Uuid = Annotated[str, BeforeValidator(_uuid)]
HexBytes = Annotated[str, BeforeValidator(_hex_bytes)]
LoincCode = Annotated[str, Field(pattern=r"^[0-9]{1,7}-[0-9]$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReadCharacteristic(_Model):
    """A characteristic read once on connect."""

    uuid: Uuid


class Subscription(_Model):
    """A characteristic to enable notifications or indications on."""

    uuid: Uuid
    mode: Literal["notify", "indicate"]


class StoredRecords(_Model):
    """Record Access Control Point download: the RACP and the measurement it replays."""

    racp: Uuid
    measurement: Uuid

    @property
    def racp_subscription(self) -> Subscription:
        """RACP responses come as indications (RACP is write + indicate)."""
        return Subscription(uuid=self.racp, mode="indicate")


class Burden(enum.StrEnum):
    """What starting a measurement asks of the patient, least first (the sensor manager starts
    the least burdensome sensor that can measure a code; see docs/architecture.md)."""

    NONE = "none"
    SPOT_CHECK = "spot-check"  # a probe or clip reading taken now
    CUFF_INFLATION = "cuff-inflation"  # a blood-pressure cuff inflates on the arm (up to 2 min)

    @property
    def rank(self) -> int:
        return list(Burden).index(self)


class Measure(_Model):
    """How to get a fresh measurement on demand.

    ``write``: write ``value`` to ``uuid`` (in ``service``, when it is a vendor service) and wait
    for the measurement; ``racp``: write the RACP request ``value`` to ``uuid``; ``wait``: the
    sensor streams, wait for the next value; ``manual``: a person takes the measurement (a
    glucose meter's sample), so the gateway cannot obtain one on demand: its codes are not offered
    to the assistant and a request for them fails at once. ``timeout_s`` bounds the wait: the
    one setting of how long a measurement of this kind may take (the sensor manager's and the
    assistant's).

    ``streams``: the codes the sensor sends on its own, steadily, once subscribed (no trigger):
    for them the gateway waits for the next value and never starts a measurement. Unset: every
    code of a ``wait`` profile, none of the others. ``burden``: what starting a measurement
    (the ``write`` trigger) asks of the patient.
    """

    method: Literal["write", "racp", "wait", "manual"]
    uuid: Uuid | None = None
    service: Uuid | None = None
    value: HexBytes | None = None
    timeout_s: float = Field(gt=0)
    streams: tuple[LoincCode, ...] | None = None
    burden: Burden = Burden.NONE

    @model_validator(mode="after")
    def _target_matches_method(self) -> Self:
        if self.method in {"wait", "manual"}:
            if self.uuid is not None or self.value is not None or self.service is not None:
                raise ValueError(f"method {self.method!r} takes no uuid, service or value")
        elif self.uuid is None or self.value is None:
            raise ValueError(f"method {self.method!r} needs uuid and value")
        return self


class GhsLive(_Model):
    """Generic Health Sensor live observations: the gateway enables notifications on
    ``live_observations`` and indications on ``control_point``, then writes ``start``; ``stop``
    ends the stream."""

    live_observations: Uuid
    control_point: Uuid
    start: HexBytes
    stop: HexBytes

    @property
    def live_subscription(self) -> Subscription:
        return Subscription(uuid=self.live_observations, mode="notify")

    @property
    def control_point_subscription(self) -> Subscription:
        """The control point answers with indications; they must be on before the first write."""
        return Subscription(uuid=self.control_point, mode="indicate")


class DeviceProfile(_Model):
    """One sensor kind (``kind`` equals the file name's stem)."""

    kind: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    display: str = Field(min_length=1)
    specialization: int = Field(gt=0)
    match_services: tuple[Uuid, ...] = Field(min_length=1)
    loinc: tuple[LoincCode, ...] = ()
    time_sync: bool = False
    read: tuple[ReadCharacteristic, ...] = ()
    subscribe: tuple[Subscription, ...] = ()
    stored_records: StoredRecords | None = None
    measure: Measure
    ghs: GhsLive | None = None

    @model_validator(mode="after")
    def _streams_are_measured(self) -> Self:
        unknown = [c for c in self.measure.streams or () if c not in self.loinc]
        if unknown:
            raise ValueError(
                f"measure.streams: {', '.join(unknown)} not in loinc ({', '.join(self.loinc)})"
            )
        return self

    @property
    def on_demand(self) -> bool:
        """Whether the gateway can obtain a fresh measurement of this kind when asked."""
        return self.measure.method != "manual"

    def streamed(self) -> frozenset[str]:
        """The codes this kind sends on its own (``[measure] streams``; unset: all of a
        ``wait`` profile's codes, none of the others)."""
        streams = self.measure.streams
        if streams is None:
            return frozenset(self.loinc) if self.measure.method == "wait" else frozenset()
        return frozenset(streams)

    @field_validator("specialization")
    @classmethod
    def _specialization_code(cls, value: int) -> int:
        if value >> 16 != MDC_PARTITION_INFRA:
            raise ValueError(
                f"{value} is not an MDC_DEV_SPEC_PROFILE_* code (partition {MDC_PARTITION_INFRA})"
            )
        return value


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _messages(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{_field_path(error['loc'])}: {message}")
    return "; ".join(parts)


def _display_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def load_profile(path: Path) -> DeviceProfile:
    """Load and validate one profile file; ``ProfileError`` names the file and the field."""
    name = _display_name(path)
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{name}: cannot read a TOML profile: {exc}") from exc
    try:
        profile = DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        raise ProfileError(f"{name}: {_messages(exc)}") from exc
    if profile.kind != path.stem:
        raise ProfileError(
            f"{name}: kind: {profile.kind!r} must equal the file name without "
            f"{PROFILE_SUFFIX} ({path.stem!r})"
        )
    return profile


def load_profiles(directory: Path | None = None) -> dict[str, DeviceProfile]:
    """Every profile in ``directory`` (default: the repository's ``device_profiles/``), by kind.

    Raises ``ProfileError`` for a broken file, a kind defined twice (``bp.toml`` and ``bp.TOML``)
    or a service UUID two kinds both match on (discovery would be ambiguous).
    """
    directory = DEFAULT_DIRECTORY if directory is None else directory
    if not directory.is_dir():
        raise ProfileError(f"{directory}: no such profile directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == PROFILE_SUFFIX)
    profiles: dict[str, DeviceProfile] = {}
    origin: dict[str, Path] = {}
    for path in files:
        profile = load_profile(path)
        if profile.kind in profiles:
            first = _display_name(origin[profile.kind])
            raise ProfileError(
                f"{_display_name(path)}: kind: {profile.kind!r} is already defined in {first}"
            )
        profiles[profile.kind] = profile
        origin[profile.kind] = path
    _check_unambiguous(profiles, origin)
    return profiles


def _check_unambiguous(profiles: Mapping[str, DeviceProfile], origin: Mapping[str, Path]) -> None:
    owner: dict[str, str] = {}
    for kind, profile in profiles.items():
        for service in profile.match_services:
            other = owner.setdefault(service, kind)
            if other != kind:
                raise ProfileError(
                    f"{_display_name(origin[kind])}: match_services: {service} is also matched "
                    f"by {_display_name(origin[other])}"
                )
