"""Bluetooth LE settings (nest as ``ble``): which radio, which devices.

A light module: :mod:`gateway.config` reads it without importing bleak or Bumble.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.errors import ConfigError

BLUEZ_TRANSPORT: Final = "bluez"
HCI_PREFIX: Final = "hci:"
BONDS_FILE: Final = "bonds.json"  # DATA_DIR: bonds and the gateway's identity address (hci:)
DEFAULT_FORGET_LOST_AFTER_S: Final = 3600.0


def hci_transport_spec(transport: str) -> str | None:
    """The Bumble transport spec in a BLE transport string, or None for ``"bluez"``.

    Raises ConfigError (a ValueError) for anything else.
    """
    value = transport.strip()
    if value == BLUEZ_TRANSPORT:
        return None
    if value.startswith(HCI_PREFIX) and value[len(HCI_PREFIX) :].strip():
        return value[len(HCI_PREFIX) :].strip()
    raise ConfigError(
        f"BLE transport {transport!r}: expected 'bluez' or 'hci:<Bumble transport>', "
        "for example 'hci:tcp-client:127.0.0.1:9411' or 'hci:usb:0'"
    )


class BleSettings(BaseModel):
    """Bluetooth LE: which radio, which devices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: str = Field(
        default=BLUEZ_TRANSPORT,
        description="'bluez' (bleak's default backend) or 'hci:<Bumble transport>' such as "
        "'hci:tcp-client:127.0.0.1:9411' (the simulator) or 'hci:usb:0'",
    )
    allow: tuple[str, ...] = Field(
        default=(), description="Bluetooth addresses the gateway may connect to"
    )
    auto_accept: bool = Field(
        default=False, description="connect to every sensor that matches a profile (demo mode)"
    )
    forget_lost_after: Annotated[float, Field(gt=0)] | None = Field(
        default=DEFAULT_FORGET_LOST_AFTER_S,
        description="seconds a lost sensor stays in the live view while unseen (its data stays; "
        "it comes back when it advertises again); none: forever",
    )
    profiles_dir: Path | None = Field(
        default=None, description="device profile directory (default: the bundled profiles)"
    )

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str) -> str:
        hci_transport_spec(value)  # raises ConfigError (a ValueError) with the expected forms
        return value.strip()

    @field_validator("allow")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.strip().upper() for a in value)
