"""Characteristic UUID → codec: the one table ``bedside decode`` and the BLE layer use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, Self, TypeVar, runtime_checkable

from gateway.errors import UnknownCharacteristicError
from gateway.ieee11073.measurement import Measurement


class Characteristic(Protocol):
    """A decoded characteristic value: ``from_bytes`` and ``__bytes__`` are exact inverses."""

    UUID: ClassVar[int]
    NAME: ClassVar[str]

    @classmethod
    def from_bytes(cls, data: bytes) -> Self: ...

    def __bytes__(self) -> bytes: ...


@runtime_checkable
class MeasurementSource(Protocol):
    """A characteristic value that carries measurements."""

    def measurements(self) -> tuple[Measurement, ...]: ...


_CODECS: dict[int, type[Characteristic]] = {}
C = TypeVar("C", bound=type[Characteristic])


def register(cls: C) -> C:
    """Class decorator: make ``cls`` the codec for its ``UUID``."""
    existing = _CODECS.get(cls.UUID)
    if existing is not None and existing is not cls:
        raise RuntimeError(f"0x{cls.UUID:04X} registered twice: {existing} and {cls}")
    _CODECS[cls.UUID] = cls
    return cls


def codecs() -> Mapping[int, type[Characteristic]]:
    """Every registered codec by UUID (importing ``gateway.ieee11073`` registers them all)."""
    return _CODECS


def codec_for(uuid: int) -> type[Characteristic]:
    try:
        return _CODECS[uuid]
    except KeyError:
        raise UnknownCharacteristicError(uuid, tuple(_CODECS)) from None


def decode(uuid: int, data: bytes) -> Characteristic:
    """Decode one characteristic value; raises ``DecodeError`` or ``UnknownCharacteristicError``."""
    return codec_for(uuid).from_bytes(data)
