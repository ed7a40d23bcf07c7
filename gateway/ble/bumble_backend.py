"""BLE transport selection: bleak's default backend, or bleak over a Bumble host on HCI.

The gateway's BLE code is identical on every transport: it uses only bleak's public API and passes
the two classes this module hands out as ``backend=``. With transport ``"bluez"`` they are None
(bleak's default backend, BlueZ over D-Bus); with ``"hci:<Bumble transport spec>"`` they are
backends bound to a :class:`BumbleAdapter` that runs a Bumble host stack on that HCI transport::

    from bleak import BleakClient, BleakScanner
    from bleak_retry_connector import establish_connection

    from gateway.ble.bumble_backend import ble_backends

    async with ble_backends("hci:tcp-client:127.0.0.1:9411") as backends:
        async with BleakScanner(on_adv, ["0000180d-0000-1000-8000-00805f9b34fb"],
                                backend=backends.scanner):
            ...
        client = await establish_connection(
            BleakClient, device, "ECG", disconnected_callback=on_lost, backend=backends.client
        )

Transport strings: ``"bluez"``; ``"hci:tcp-client:HOST:PORT"`` (the firmware simulator or any HCI
over TCP); ``"hci:usb:0"`` (a USB controller without BlueZ); ``"hci:serial:/dev/ttyACM0,1000000"``;
any other Bumble transport spec after ``hci:``. An already open HCI transport object (for example
the simulator's in-process ``await sim.attach_host()``) goes straight to
``BumbleAdapter(transport)``, whose ``.backends`` are the same pair.

One adapter serves every scanner and client on its transport (many simultaneous connections);
``bleak_retry_connector.establish_connection`` forwards ``backend=`` to ``BleakClient`` unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from gateway.ble.bumble.adapter import BleakBackends, BumbleAdapter, HciTransport
from gateway.ble.bumble.client import BleakClientBumble
from gateway.ble.bumble.scanner import BleakScannerBumble
from gateway.errors import ConfigError

__all__ = [
    "BLUEZ",
    "BleakBackends",
    "BleakClientBumble",
    "BleakScannerBumble",
    "BumbleAdapter",
    "HciTransport",
    "ble_backends",
    "hci_transport_spec",
]

BLUEZ_TRANSPORT: Final = "bluez"
HCI_PREFIX: Final = "hci:"
BLUEZ: Final = BleakBackends(scanner=None, client=None)


def hci_transport_spec(transport: str) -> str | None:
    """The Bumble transport spec in a BLE transport string, or None for ``"bluez"``.

    Raises ConfigError for anything else.
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


@asynccontextmanager
async def ble_backends(transport: str) -> AsyncIterator[BleakBackends]:
    """The bleak backends for a BLE transport string, open for the duration of the block.

    ``"bluez"`` yields :data:`BLUEZ` (both None: bleak's default); ``"hci:..."`` opens a
    :class:`BumbleAdapter` on the transport and closes it (disconnecting its clients) on exit.
    Raises ConfigError for a malformed string and BleakBluetoothNotAvailableError when the HCI
    transport cannot be opened or the controller does not power on.
    """
    spec = hci_transport_spec(transport)
    if spec is None:
        yield BLUEZ
        return
    async with BumbleAdapter(spec) as adapter:
        yield adapter.backends
