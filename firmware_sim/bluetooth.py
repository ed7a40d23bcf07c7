"""Bluetooth Core numbers the simulated sensors use: ATT error codes, advertising data types, and
16-bit UUIDs and advertising data structures built from them."""

from __future__ import annotations

from typing import Final

from bumble.core import UUID

# -- ATT error codes (Core Specification Supplement Part B §1.4; ATT §3.4.1.1) ------------------
ATT_INVALID_ATTRIBUTE_LENGTH: Final = 0x0D
ATT_VALUE_NOT_SUPPORTED: Final = 0x80  # first application error code
ATT_CCCD_IMPROPERLY_CONFIGURED: Final = 0xFD
ATT_PROCEDURE_ALREADY_IN_PROGRESS: Final = 0xFE
ATT_OUT_OF_RANGE: Final = 0xFF

# -- Advertising data types (Core Specification Supplement Part A §1) ----------------------------
AD_FLAGS: Final = 0x01
AD_COMPLETE_16_BIT_UUIDS: Final = 0x03
AD_COMPLETE_LOCAL_NAME: Final = 0x09
AD_APPEARANCE: Final = 0x19
AD_FLAGS_LE_GENERAL_NO_BREDR: Final = 0x06
LEGACY_ADVERTISING_MAX: Final = 31


def uuid16(value: int) -> UUID:
    return UUID.from_16_bits(value)


def ad_structure(ad_type: int, data: bytes) -> bytes:
    """One advertising data structure: length, AD type, data (Core Vol 3 Part C §11)."""
    return bytes((len(data) + 1, ad_type)) + data
