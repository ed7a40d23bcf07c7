"""How a simulated sensor protects its data: LE Secure Connections pairing and bonding.

A Zephyr sensor marks its GATT attributes ``BT_GATT_PERM_READ_ENCRYPT`` (an encrypted link) or
``BT_GATT_PERM_READ_AUTHEN`` (an encrypted link whose keys were made with MITM protection). A
central that reads one over a plain link gets ATT "Insufficient Encryption" (0x0F) or
"Insufficient Authentication" (0x05) and pairs (Bluetooth Core Specification Vol 3 Part F
§3.4.1.1, Part C §10.3). The simulated sensors do the same on every characteristic, and send no
notification or indication over a link that is not secure enough (the client configuration
descriptors stay writable, as Bumble's server makes them).

- ``encrypted``: Just Works pairing (the sensor has no display or keyboard);
- ``authenticated``: passkey entry; the sensor "displays" a fixed six-digit passkey (logged, and
  in the scenario) that the central must type.

The sensor keeps its bonds in memory for the simulator's life, as a sensor does in flash: a
bonded central reconnects and encrypts with the stored keys, without pairing again.
"""

from __future__ import annotations

import enum
import logging

from bumble import gatt
from bumble.device import Connection
from bumble.pairing import PairingConfig, PairingDelegate

log = logging.getLogger(__name__)


class SecurityLevel(enum.StrEnum):
    NONE = "none"
    ENCRYPTED = "encrypted"
    AUTHENTICATED = "authenticated"


def permissions(
    level: SecurityLevel, *, readable: bool, writeable: bool
) -> gatt.Characteristic.Permissions:
    """The attribute permissions a characteristic needs at ``level``, beyond read/write."""
    out = gatt.Characteristic.Permissions(0)
    if level is SecurityLevel.NONE:
        return out
    authenticated = level is SecurityLevel.AUTHENTICATED
    if readable:
        out |= (
            gatt.Characteristic.Permissions.READ_REQUIRES_AUTHENTICATION
            if authenticated
            else gatt.Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
        )
    if writeable:
        out |= (
            gatt.Characteristic.Permissions.WRITE_REQUIRES_AUTHENTICATION
            if authenticated
            else gatt.Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION
        )
    return out


def link_is_secure(connection: Connection, level: SecurityLevel) -> bool:
    """May the sensor send its data over ``connection``?"""
    if level is SecurityLevel.NONE:
        return True
    if not connection.is_encrypted:
        return False
    return level is SecurityLevel.ENCRYPTED or connection.authenticated


class _SensorDelegate(PairingDelegate):
    """The sensor's side: no input; a display at ``authenticated`` that shows the passkey."""

    def __init__(self, name: str, level: SecurityLevel, passkey: int) -> None:
        io = (
            PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY
            if level is SecurityLevel.AUTHENTICATED
            else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
        )
        super().__init__(io)
        self._name = name
        self._passkey = passkey

    async def generate_passkey(self) -> int:
        return self._passkey

    async def display_number(self, number: int, digits: int) -> None:
        log.info("%s shows the passkey %0*d", self._name, digits, number)


def pairing_config(name: str, level: SecurityLevel, passkey: int) -> PairingConfig:
    """Secure Connections with bonding; MITM protection at ``authenticated``."""
    return PairingConfig(
        sc=True,
        mitm=level is SecurityLevel.AUTHENTICATED,
        bonding=True,
        delegate=_SensorDelegate(name, level, passkey),
    )
