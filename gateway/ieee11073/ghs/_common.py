"""What every GHS module shares: assigned numbers, integer limits, and unknown enum values kept."""

from __future__ import annotations

import enum
from typing import Final, TypeVar

# -- Bluetooth SIG Assigned Numbers ---------------------------------------------------------------
SERVICE_UUID: Final = 0x1840
LIVE_HEALTH_OBSERVATIONS_UUID: Final = 0x2B8B
STORED_HEALTH_OBSERVATIONS_UUID: Final = 0x2BDD
OBSERVATION_SCHEDULE_CHANGED_UUID: Final = 0x2BF1
HEALTH_SENSOR_FEATURES_UUID: Final = 0x2BF3
GHS_CONTROL_POINT_UUID: Final = 0x2BF4
ELAPSED_TIME_SERVICE_UUID: Final = 0x183F
CURRENT_ELAPSED_TIME_UUID: Final = 0x2BF2

LIVE_HEALTH_OBSERVATIONS_NAME: Final = "Live Health Observations"
STORED_HEALTH_OBSERVATIONS_NAME: Final = "Stored Health Observations"

U8_MAX: Final = 0xFF
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFF_FFFF
U48_MAX: Final = (1 << 48) - 1


def label(name: str, uuid: int) -> str:
    """How errors name a characteristic: ``Live Health Observations (0x2B8B)``."""
    return f"{name} (0x{uuid:04X})"


E = TypeVar("E", bound=enum.IntEnum)


def known(enum_type: type[E], raw: int) -> E | int:
    """``raw`` as a member of ``enum_type``, or the bare int when this gateway does not know it yet
    (kept for the exact inverse)."""
    try:
        return enum_type(raw)
    except ValueError:
        return raw
