"""BLE transport selection: bleak's default backend, or bleak over a Bumble host on HCI.

The gateway's BLE code is identical on every transport: it uses only bleak's public API and passes
the two classes this module hands out as ``backend=``. With transport ``"bluez"`` they are None
(bleak's default backend, BlueZ over D-Bus); with ``"hci:<Bumble transport spec>"`` they are
backends bound to a :class:`~gateway.ble.bumble.BumbleAdapter` that runs a Bumble host stack on
that HCI transport::

    from bleak import BleakClient, BleakScanner
    from bleak_retry_connector import establish_connection

    from gateway.ble.transport import open_link

    async with open_link("hci:tcp-client:127.0.0.1:9411") as link:
        async with BleakScanner(on_adv, ["0000180d-0000-1000-8000-00805f9b34fb"],
                                backend=link.backends.scanner):
            ...
        client = await establish_connection(
            BleakClient, device, "ECG", disconnected_callback=on_lost,
            backend=link.backends.client,
        )

Transport strings: ``"bluez"``; ``"hci:tcp-client:HOST:PORT"`` (the firmware simulator or any HCI
over TCP); ``"hci:usb:0"`` (a USB controller without BlueZ); ``"hci:serial:/dev/ttyACM0,1000000"``;
any other Bumble transport spec after ``hci:``. An already open HCI transport object (for example
the simulator's in-process ``await sim.attach_host()``) goes straight to
``BumbleAdapter(transport)``, whose ``.backends`` are the same pair (:func:`given_link` wraps them).

One adapter serves every scanner and client on its transport (many simultaneous connections);
``bleak_retry_connector.establish_connection`` forwards ``backend=`` to ``BleakClient`` unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from gateway.ble.bumble import BleakBackends, BumbleAdapter
from gateway.ble.settings import hci_transport_spec

if TYPE_CHECKING:
    from pathlib import Path

    from gateway.ble.bumble.security import PasskeySource

__all__ = ["BLUEZ", "LinkSecurity", "RadioLink", "given_link", "open_link"]

BLUEZ: Final = BleakBackends(scanner=None, client=None)


class LinkSecurity(Protocol):
    """The radio's pairing and bonds (a :class:`BumbleAdapter`; BlueZ keeps its own)."""

    passkeys: PasskeySource | None

    def bonded(self, address: str) -> bool: ...

    async def forget_bond(self, address: str) -> bool: ...


class RadioLink(NamedTuple):
    """An open radio: the bleak backends to use, and a wait that ends when the radio is gone."""

    backends: BleakBackends
    lost: Callable[[], Awaitable[None]]
    """Returns when the transport went away (never, where the stack cannot tell: BlueZ)."""
    security: LinkSecurity | None = None
    """Pairing and bonds, where the gateway keeps them (None on BlueZ: bluetoothd does)."""


async def _never() -> None:
    await asyncio.Event().wait()


@asynccontextmanager
async def open_link(transport: str, *, bonds: Path | None = None) -> AsyncIterator[RadioLink]:
    """The radio for a BLE transport string, open for the duration of the block.

    ``"bluez"`` gives :data:`BLUEZ` (both None: bleak's default); ``"hci:..."`` opens a
    :class:`BumbleAdapter` on the transport, its bonds kept in ``bonds``, and closes it
    (disconnecting its clients) on exit.
    Raises ConfigError for a malformed string and BleakBluetoothNotAvailableError when the HCI
    transport cannot be opened or the controller does not power on.
    """
    spec = hci_transport_spec(transport)
    if spec is None:
        yield RadioLink(BLUEZ, _never)
        return
    async with BumbleAdapter(spec, bonds=bonds) as adapter:
        yield RadioLink(adapter.backends, adapter.wait_lost, adapter)


def given_link(
    backends: BleakBackends, security: LinkSecurity | None = None
) -> Callable[[], AbstractAsyncContextManager[RadioLink]]:
    """An opener for backends the caller already holds open (tests, the in-process demo)."""

    @asynccontextmanager
    async def opener() -> AsyncIterator[RadioLink]:
        yield RadioLink(backends, _never, security)

    return opener
