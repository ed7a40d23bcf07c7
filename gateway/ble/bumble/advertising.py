"""GAP advertising data (AD structures) to bleak's :class:`AdvertisementData`.

Pure functions, no I/O. Advertising bytes come off the air from anyone in range, so parsing never
raises: a structure that does not follow its layout is skipped and counted in
:attr:`AdvertisementFields.malformed`.

The AD structures are parsed here rather than through Bumble's ``AdvertisingData.get()`` because
that decodes TX Power Level as unsigned, raises on short or non-UTF-8 fields and registers every
128-bit UUID it sees in a process-wide list that never shrinks.

Layouts: Core Specification Supplement (CSS) v11, Part A §1.1-1.5; type codes: Bluetooth Assigned
Numbers §2.3 "Common Data Types".
"""

from __future__ import annotations

import struct
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bleak.backends.scanner import AdvertisementData

# Assigned Numbers §2.3: AD type codes.
AD_SHORTENED_LOCAL_NAME: Final = 0x08
AD_COMPLETE_LOCAL_NAME: Final = 0x09
AD_TX_POWER_LEVEL: Final = 0x0A
AD_MANUFACTURER_SPECIFIC_DATA: Final = 0xFF

# CSS Part A §1.1: incomplete/complete lists of 16-, 32- and 128-bit Service UUIDs (type → width).
UUID_LIST_WIDTHS: Final[Mapping[int, int]] = {
    0x02: 2,
    0x03: 2,
    0x04: 4,
    0x05: 4,
    0x06: 16,
    0x07: 16,
}
# CSS Part A §1.11: Service Data with a 16-, 32- or 128-bit UUID first (type → UUID width).
SERVICE_DATA_UUID_WIDTHS: Final[Mapping[int, int]] = {0x16: 2, 0x20: 4, 0x21: 16}

# Core v5.4 Vol 3, Part B §2.5.1: Bluetooth Base UUID, the tail every 16/32-bit UUID expands to.
BASE_UUID_TAIL: Final = "-0000-1000-8000-00805f9b34fb"
COMPANY_ID = struct.Struct("<H")  # CSS Part A §1.4: Company Identifier Code, little-endian
TX_POWER = struct.Struct("<b")  # CSS Part A §1.5: TX Power Level, signed -127..+127 dBm
# Core v5.4 Vol 4, Part E §7.7.65.2: RSSI 127 means "not available"; bleak/BlueZ report -127.
RSSI_NOT_AVAILABLE: Final = 127
NO_RSSI: Final = -127


def uuid_from_le_bytes(raw: bytes) -> str:
    """A 2-, 4- or 16-byte little-endian UUID as bleak's lower-case 128-bit string.

    Raises ValueError for any other length.
    """
    if len(raw) == 2:
        return f"0000{int.from_bytes(raw, 'little'):04x}{BASE_UUID_TAIL}"
    if len(raw) == 4:
        return f"{int.from_bytes(raw, 'little'):08x}{BASE_UUID_TAIL}"
    if len(raw) == 16:
        return str(uuid_module.UUID(bytes=bytes(reversed(raw))))
    raise ValueError(f"a UUID is 2, 4 or 16 bytes, got {len(raw)}")


def _decode_name(raw: bytes) -> str:
    # Names are UTF-8 (CSS Part A §1.2); some devices pad them with NULs.
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class AdvertisementFields:
    """What one advertisement (with its scan response, if any) says, in bleak's vocabulary."""

    local_name: str | None = None
    service_uuids: tuple[str, ...] = ()
    service_data: Mapping[str, bytes] = field(default_factory=dict)
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict)
    tx_power: int | None = None
    malformed: int = 0  # AD structures skipped because they did not follow their layout

    def to_bleak(self, rssi: int, platform_data: tuple[Any, ...] = ()) -> AdvertisementData:
        """bleak's AdvertisementData; ``rssi`` 127 (HCI "not available") becomes -127."""
        return AdvertisementData(
            local_name=self.local_name,
            manufacturer_data=dict(self.manufacturer_data),
            service_data=dict(self.service_data),
            service_uuids=list(self.service_uuids),
            tx_power=self.tx_power,
            rssi=NO_RSSI if rssi == RSSI_NOT_AVAILABLE else rssi,
            platform_data=platform_data,
        )


def parse_ad_structures(structures: Iterable[tuple[int, bytes]]) -> AdvertisementFields:
    """Fold (AD type, AD data) pairs into :class:`AdvertisementFields`; never raises.

    A complete local name wins over a shortened one; for repeated service data or manufacturer
    data keys the last structure wins (the scan response follows the advertisement). UUID lists
    keep their complete entries and drop a trailing partial one.
    """
    complete_name: str | None = None
    short_name: str | None = None
    uuids: dict[str, None] = {}  # ordered set
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    malformed = 0
    for ad_type, data in structures:
        if (width := UUID_LIST_WIDTHS.get(ad_type)) is not None:
            whole = len(data) - len(data) % width
            malformed += whole != len(data)
            for offset in range(0, whole, width):
                uuids[uuid_from_le_bytes(data[offset : offset + width])] = None
        elif (width := SERVICE_DATA_UUID_WIDTHS.get(ad_type)) is not None:
            if len(data) < width:
                malformed += 1
                continue
            service_data[uuid_from_le_bytes(data[:width])] = bytes(data[width:])
        elif ad_type == AD_MANUFACTURER_SPECIFIC_DATA:
            if len(data) < COMPANY_ID.size:
                malformed += 1
                continue
            (company,) = COMPANY_ID.unpack_from(data)
            manufacturer_data[company] = bytes(data[COMPANY_ID.size :])
        elif ad_type == AD_COMPLETE_LOCAL_NAME:
            complete_name = _decode_name(data)
        elif ad_type == AD_SHORTENED_LOCAL_NAME:
            short_name = _decode_name(data)
        elif ad_type == AD_TX_POWER_LEVEL:
            if len(data) != TX_POWER.size:
                malformed += 1
                continue
            (tx_power,) = TX_POWER.unpack(data)
    return AdvertisementFields(
        local_name=complete_name if complete_name is not None else short_name,
        service_uuids=tuple(uuids),
        service_data=service_data,
        manufacturer_data=manufacturer_data,
        tx_power=tx_power,
        malformed=malformed,
    )
