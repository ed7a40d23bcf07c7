"""Passkeys for LE Secure Connections pairing, given by a person through the CLI or the API.

A sensor with a display shows a six-digit passkey when the gateway pairs with it (passkey entry,
Bluetooth Core Specification Vol 3 Part H §2.3.5.3; the gateway is the side that types it). The
technician reads it off the sensor and gives it with ``bedside sensors pair ADDRESS PASSKEY`` or
``POST /api/sensors/{address}/passkey``, before or while the gateway asks for it; the pairing
waits up to :data:`PASSKEY_WAIT_S` for it. A passkey is used once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from gateway.errors import BedsideError

log = logging.getLogger(__name__)

PASSKEY_WAIT_S: Final = 120.0
PASSKEY_MAX: Final = 999_999


class PasskeyError(BedsideError):
    """A passkey that is not six digits."""


def check_passkey(value: int | str) -> int:
    """The passkey as a number; six digits (leading zeros allowed), 000000-999999."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > len(str(PASSKEY_MAX)) or int(text) > PASSKEY_MAX:
        raise PasskeyError(
            f"passkey {value!r}: expected the six digits the sensor shows, e.g. 123456"
        )
    return int(text)


class PasskeyBroker:
    """Passkeys given for sensors, and the pairings waiting for them."""

    def __init__(self, wait_s: float = PASSKEY_WAIT_S) -> None:
        self.wait_s = wait_s
        self._given: dict[str, int] = {}
        self._waiting: dict[str, asyncio.Future[int]] = {}

    def give(self, address: str, passkey: int | str) -> bool:
        """Give the passkey for the sensor at ``address``; True when a pairing was waiting for
        it (else it is kept for the next pairing)."""
        key = check_passkey(passkey)
        address = address.upper()
        waiting = self._waiting.get(address)
        if waiting is not None and not waiting.done():
            waiting.set_result(key)
            return True
        self._given[address] = key
        return False

    def waiting(self) -> frozenset[str]:
        """Addresses of sensors whose pairing waits for a passkey now."""
        return frozenset(a for a, f in self._waiting.items() if not f.done())

    async def passkey(self, address: str) -> int | None:
        """The passkey for ``address``: one given already, or the next one given within
        :attr:`wait_s`; None when none came (the pairing is then refused)."""
        address = address.upper()
        given = self._given.pop(address, None)
        if given is not None:
            return given
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[address] = future
        log.warning(
            "%s asks for the passkey it shows: bedside sensors pair %s PASSKEY", address, address
        )
        try:
            async with asyncio.timeout(self.wait_s):
                return await future
        except TimeoutError:
            log.warning("%s: no passkey given within %.0f s; pairing refused", address, self.wait_s)
            return None
        finally:
            if self._waiting.get(address) is future:
                del self._waiting[address]
