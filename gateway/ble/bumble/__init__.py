"""A bleak backend implemented over the Bumble Bluetooth host stack (see
:mod:`gateway.ble.transport` for how the gateway picks a transport)."""

from gateway.ble.bumble.adapter import BleakBackends, BumbleAdapter, HciTransport
from gateway.ble.bumble.client import BleakClientBumble
from gateway.ble.bumble.scanner import BleakScannerBumble

__all__ = [
    "BleakBackends",
    "BleakClientBumble",
    "BleakScannerBumble",
    "BumbleAdapter",
    "HciTransport",
]
