"""The radio's health: up, down (with the reason in one sentence) or starting.

A missing BlueZ, an unplugged dongle or a simulator that is not running yet is not a crash: the
sensor manager reports the radio as down (``/healthz``, the watchdog status line), logs one line
saying what is missing and what to configure, and keeps retrying with backoff while the rest of
the gateway (HTTP API, outbox, assistant) runs on. Only a malformed ``ble.transport`` is a
configuration error, raised before the service starts.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Final

from bleak.exc import BleakError

from gateway.backoff import BackoffPolicy
from gateway.ble.settings import hci_transport_spec

# What a radio that is absent or went away raises: bleak's own errors (BlueZ not running, no
# adapter, BleakBluetoothNotAvailableError from the Bumble backend), OS errors (no D-Bus socket,
# a refused TCP connection, a USB device that vanished), EOF from a closed transport.
RADIO_ERRORS: Final = (BleakError, OSError, EOFError, TimeoutError)
RADIO_BACKOFF: Final = BackoffPolicy(base_s=1.0, cap_s=30.0)


class RadioState(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"


class RadioLostError(Exception):
    """The transport went away while the gateway was using it."""


@dataclass
class RadioStatus:
    """What ``/healthz`` and the watchdog status say about the radio."""

    transport: str
    state: RadioState = RadioState.STARTING
    reason: str | None = None
    failures: int = 0
    retry_in_s: float | None = None
    since: float = field(default_factory=time.time)

    def up(self) -> None:
        self.state, self.reason, self.failures, self.retry_in_s = RadioState.UP, None, 0, None
        self.since = time.time()

    def down(self, reason: str, retry_in_s: float) -> None:
        if self.state is not RadioState.DOWN:
            self.since = time.time()
        self.state, self.reason, self.retry_in_s = RadioState.DOWN, reason, retry_in_s
        self.failures += 1

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.state), "transport": self.transport}
        if self.state is RadioState.DOWN:
            out |= {
                "reason": self.reason,
                "failures": self.failures,
                "retry_in_s": round(self.retry_in_s or 0.0, 1),
            }
        return out


def radio_trouble(transport: str, exc: BaseException) -> str:
    """One sentence: what is wrong with the radio and what to check or configure."""
    first = exc.args[0] if exc.args else None  # bleak's errors carry (message, reason)
    detail = (first if isinstance(first, str) else str(exc)).strip() or type(exc).__name__
    if isinstance(exc, RadioLostError):
        what = f"the Bluetooth radio on {transport!r} went away"
    else:
        what = f"no Bluetooth radio on {transport!r} ({detail})"
    if hci_transport_spec(transport) is None:
        advice = (
            "check that bluetoothd is running and an adapter is present, or set ble.transport "
            "to 'hci:usb:0' (a USB controller) or 'hci:tcp-client:HOST:PORT' (the simulator)"
        )
    else:
        advice = (
            "check that the controller (or the simulator, `bedside-sim`) is there, or set "
            "ble.transport"
        )
    return f"{what}; {advice}"
