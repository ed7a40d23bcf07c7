"""Device Information service 0x180A (DIS v1.1) and Battery Level 0x2A19 (BAS v1.0 §3.1).

Strings (GATT Specification Supplement, GSS: Manufacturer Name String, Model Number String, Serial
Number String, Hardware Revision String, Firmware Revision String, Software Revision String) are
UTF-8 without a length byte: the attribute length is the string length.

Trailing NUL: some firmware sends C strings with their terminating NUL (or a NUL-padded buffer).
The NULs are not part of the text, so :attr:`DisString.value` never ends in one, but their count
is kept in ``trailing_nuls`` so that ``__bytes__`` re-creates exactly what the device sent.

System ID 0x2A23 (GSS System ID): a 64-bit EUI-64 sent least significant octet first: the 40-bit
manufacturer-defined identifier, then the 24-bit OUI. The IEEE-RA writes an EUI-64 most
significant octet first, OUI first (GSS System ID example: OUI 0x123456 with company-assigned
0x9ABCDE gives 0x123456FFFE9ABCDE), and the PHD IG SYSID identifier is that EUI-64 in upper-case
hex. :attr:`SystemId.eui64` is therefore the wire bytes reversed, without separators (the PHD IG
dedup identifier's form; Device.identifier adds dashes between octets).

PnP ID 0x2A50 (GSS PnP ID): Vendor ID Source u8, Vendor ID u16, Product ID u16, Product Version
u16.

Battery Level 0x2A19 (GSS Battery Level): u8 percent 0-100. The PHD IG reports a PHD's battery
level as a numeric Observation (MDC_ATTR_VAL_BATT_CHARGE 67996, unit %; PhdDevice intro: "battery
level … reported using the Observation resource"; example bundle-continuousnonin.json), so
Battery Level emits a Measurement.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.ieee11073 import mdc
from gateway.ieee11073._buffer import Reader, check_range
from gateway.ieee11073.measurement import Measurement
from gateway.ieee11073.numbers import Float
from gateway.ieee11073.registry import register

SERVICE_UUID = 0x180A
BATTERY_SERVICE_UUID = 0x180F
ATT_MAX_VALUE_LENGTH = 512  # Core v5.4 Vol 3 Part F §3.2.9: maximum attribute value length
NUL = b"\x00"

# MDC code not (yet) in mdc.py: IEEE 11073-10101 partition 1 (object-oriented), term 2460.
MDC_ATTR_VAL_BATT_CHARGE: Final = 67996

BATTERY_LEVEL_MAX = 100  # GSS Battery Level: 0-100 %, 101-255 reserved

MANUFACTURER_ID_BITS = 40  # GSS System ID: least significant 40 bits, manufacturer defined
OUI_BITS = 24  # GSS System ID: most significant 24 bits, IEEE-assigned OUI
SYSTEM_ID_SIZE = 8
EUI64_HEX_DIGITS = 2 * SYSTEM_ID_SIZE


@dataclass(frozen=True, slots=True)
class DisString:
    """A DIS UTF-8 string characteristic; subclasses fix the UUID."""

    value: str
    trailing_nuls: int = 0

    UUID: ClassVar[int]
    NAME: ClassVar[str]

    def __post_init__(self) -> None:
        if self.value.endswith("\x00"):
            raise ValueError("the text cannot end in NUL; count trailing NULs in trailing_nuls")
        size = len(self.value.encode("utf-8")) + self.trailing_nuls
        check_range("trailing NUL count", self.trailing_nuls, 0, ATT_MAX_VALUE_LENGTH)
        check_range("string length in bytes", size, 0, ATT_MAX_VALUE_LENGTH)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw = r.rest()
        text = raw.rstrip(NUL)
        try:
            value = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise r.error(f"UTF-8 text ({exc.reason})", offset=exc.start) from exc
        with r.field(cls.NAME):
            return cls(value, len(raw) - len(text))

    def __bytes__(self) -> bytes:
        return self.value.encode("utf-8") + NUL * self.trailing_nuls

    def __str__(self) -> str:
        return self.value


@register
@dataclass(frozen=True, slots=True)
class ManufacturerName(DisString):
    UUID: ClassVar[int] = 0x2A29
    NAME: ClassVar[str] = "Manufacturer Name String"


@register
@dataclass(frozen=True, slots=True)
class ModelNumber(DisString):
    UUID: ClassVar[int] = 0x2A24
    NAME: ClassVar[str] = "Model Number String"


@register
@dataclass(frozen=True, slots=True)
class SerialNumber(DisString):
    UUID: ClassVar[int] = 0x2A25
    NAME: ClassVar[str] = "Serial Number String"


@register
@dataclass(frozen=True, slots=True)
class HardwareRevision(DisString):
    UUID: ClassVar[int] = 0x2A27
    NAME: ClassVar[str] = "Hardware Revision String"


@register
@dataclass(frozen=True, slots=True)
class FirmwareRevision(DisString):
    UUID: ClassVar[int] = 0x2A26
    NAME: ClassVar[str] = "Firmware Revision String"


@register
@dataclass(frozen=True, slots=True)
class SoftwareRevision(DisString):
    UUID: ClassVar[int] = 0x2A28
    NAME: ClassVar[str] = "Software Revision String"


@register
@dataclass(frozen=True, slots=True)
class SystemId:
    """System ID 0x2A23: manufacturer identifier (40 bits) then OUI (24 bits), little-endian."""

    manufacturer_id: int
    oui: int

    UUID: ClassVar[int] = 0x2A23
    NAME: ClassVar[str] = "System ID"

    def __post_init__(self) -> None:
        check_range(
            "manufacturer identifier", self.manufacturer_id, 0, (1 << MANUFACTURER_ID_BITS) - 1
        )
        check_range("OUI", self.oui, 0, (1 << OUI_BITS) - 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw = int.from_bytes(r.take(SYSTEM_ID_SIZE, "System ID"), "little")
        r.end()
        return cls(raw & ((1 << MANUFACTURER_ID_BITS) - 1), raw >> MANUFACTURER_ID_BITS)

    def __bytes__(self) -> bytes:
        return self.value.to_bytes(SYSTEM_ID_SIZE, "little")

    @property
    def value(self) -> int:
        """The EUI-64 as one 64-bit number (OUI in the most significant bits)."""
        return (self.oui << MANUFACTURER_ID_BITS) | self.manufacturer_id

    @property
    def eui64(self) -> str:
        """Upper-case hex, OUI first (IEEE-RA order), no separators: ``123456FFFE9ABCDE``."""
        return f"{self.value:0{EUI64_HEX_DIGITS}X}"

    @classmethod
    def from_eui64(cls, text: str) -> Self:
        """Parse ``123456FFFE9ABCDE`` (dashes or colons between octets allowed)."""
        digits = text.replace("-", "").replace(":", "")
        if len(digits) != EUI64_HEX_DIGITS:
            raise ValueError(f"EUI-64 {text!r} does not have {EUI64_HEX_DIGITS} hex digits")
        value = int(digits, 16)
        return cls(value & ((1 << MANUFACTURER_ID_BITS) - 1), value >> MANUFACTURER_ID_BITS)


class VendorIdSource(enum.IntEnum):
    """PnP ID Vendor ID Source (GSS PnP ID); other values are reserved (kept as integers)."""

    BLUETOOTH_SIG = 1  # Company Identifier from the Bluetooth Assigned Numbers
    USB_IMPLEMENTERS_FORUM = 2


@register
@dataclass(frozen=True, slots=True)
class PnpId:
    """PnP ID 0x2A50: vendor ID source, vendor ID, product ID, product version."""

    vendor_id_source: VendorIdSource | int
    vendor_id: int
    product_id: int
    product_version: int

    UUID: ClassVar[int] = 0x2A50
    NAME: ClassVar[str] = "PnP ID"
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<BHHH")

    def __post_init__(self) -> None:
        check_range("vendor ID source", int(self.vendor_id_source), 0, 0xFF)
        check_range("vendor ID", self.vendor_id, 0, 0xFFFF)
        check_range("product ID", self.product_id, 0, 0xFFFF)
        check_range("product version", self.product_version, 0, 0xFFFF)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        source, vendor, product, version = r.unpack(cls.STRUCT, "PnP ID")
        r.end()
        try:
            vendor_source: VendorIdSource | int = VendorIdSource(source)
        except ValueError:
            vendor_source = source  # reserved for future use: keep, do not fail
        return cls(vendor_source, vendor, product, version)

    def __bytes__(self) -> bytes:
        return self.STRUCT.pack(
            int(self.vendor_id_source), self.vendor_id, self.product_id, self.product_version
        )


@register
@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery Level 0x2A19: state of charge in percent (0-100); reserved values are rejected."""

    level: int

    UUID: ClassVar[int] = 0x2A19
    NAME: ClassVar[str] = "Battery Level"

    def __post_init__(self) -> None:
        check_range("battery level", self.level, 0, BATTERY_LEVEL_MAX)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        with r.field("battery level (percent)"):
            value = cls(r.u8("battery level"))
        r.end()
        return value

    def __bytes__(self) -> bytes:
        return bytes((self.level,))

    def measurements(self) -> tuple[Measurement, ...]:
        return (Measurement(MDC_ATTR_VAL_BATT_CHARGE, Float(self.level, 0), mdc.MDC_DIM_PERCENT),)
