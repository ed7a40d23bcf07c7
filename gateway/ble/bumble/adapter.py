"""One Bumble host stack shared by every bleak scanner and client that uses it.

A :class:`BumbleAdapter` owns an HCI transport (opened from a Bumble transport spec such as
``tcp-client:127.0.0.1:9411`` or ``usb:0``, or handed over already open as any object with
``.source`` and ``.sink``), a Bumble :class:`~bumble.device.Device` in the central role with a
random static address, and two pieces of shared radio state:

* scanning: every scanner and every pending connect registers a listener; the controller scans
  while at least one listener is registered (actively if any of them asked for active scanning);
* initiating: a controller runs one LE Create Connection at a time, so connects are serialised.
  A connect first waits for a connectable advertisement from the peer (with the scan above), then
  issues Create Connection while scanning is paused, as the Linux kernel does for BlueZ. So a
  device that does not advertise never holds the initiator (:meth:`BumbleAdapter.find` raises
  BleakDeviceNotFoundError at the caller's deadline), and a device seen advertising holds it for
  about one advertising interval.

Losing the transport (the simulator or the USB dongle goes away) ends every connection (their
disconnected callbacks run) and makes the adapter unusable; open a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, Protocol, Self

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDeviceNotFoundError,
)
from bumble import core, hci
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.transport import open_transport

from gateway.ble.bumble.client import BleakClientBumble
from gateway.ble.bumble.scanner import BleakScannerBumble
from gateway.ble.bumble.security import (
    BondStore,
    BondStoreError,
    PasskeySource,
    forget,
    pairing_config,
)

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

logger = logging.getLogger(__name__)

DEFAULT_NAME: Final = "Bedside Gateway"
# After LE Create Connection Cancel the controller reports the attempt's end with an LE Connection
# Complete event (Core v5.4 Vol 4, Part E §7.8.13); how long to wait for it before giving up.
CANCEL_SETTLE_S: Final = 2.0
DISCONNECT_TIMEOUT_S: Final = 5.0
POWER_ON_TIMEOUT_S: Final = 15.0  # HCI Reset and the controller queries that follow
# Reason given to connections dropped because the HCI transport went away (Core v5.4 Vol 1,
# Part F §2: 0x08 Connection Timeout, as when the radio link is lost).
TRANSPORT_LOST_REASON: Final = hci.HCI_CONNECTION_TIMEOUT_ERROR

AdvertisementListener = Callable[[Advertisement], None]


class HciTransport(Protocol):
    """An open HCI transport: Bumble's ``Transport`` or anything with the same two ends."""

    source: Any
    sink: Any


class BleakBackends(NamedTuple):
    """The scanner and client classes to pass as bleak's ``backend=`` (None: bleak's default)."""

    scanner: type[BaseBleakScanner] | None
    client: type[BaseBleakClient] | None


class BumbleAdapter:
    """A Bumble host stack on one HCI transport, shared by scanners and clients.

    ``transport`` is a Bumble transport spec (``"tcp-client:127.0.0.1:9411"``, ``"usb:0"``,
    ``"serial:/dev/ttyACM0"``, ...) that the adapter opens and closes, or an already open transport
    object (``.source``/``.sink``) that stays the caller's to close. Use as an async context
    manager, or call :meth:`open` and :meth:`close`. :attr:`backends` gives the bleak backend
    classes bound to this adapter.
    """

    def __init__(
        self,
        transport: str | HciTransport,
        *,
        name: str = DEFAULT_NAME,
        address: str | None = None,
        bonds: Path | None = None,
        passkeys: PasskeySource | None = None,
    ) -> None:
        """``bonds``: the file that keeps bonds and the gateway's identity address across
        restarts (None: bonds last while the adapter is open); ``passkeys``: where the passkey
        a sensor shows comes from (None: Just Works pairing only; may be set later)."""
        self._spec = transport if isinstance(transport, str) else None
        self._bonds_path = bonds
        self.passkeys = passkeys
        self.bonds: MemoryKeyStore | None = None
        self._given = None if isinstance(transport, str) else transport
        self._name = name
        self._address = address
        self._transport: HciTransport | None = None
        self._device: Device | None = None
        self._lost = False
        self._lost_event = asyncio.Event()
        self._closing = False
        self._listeners: dict[object, AdvertisementListener] = {}
        self._scan_users: dict[object, bool] = {}  # listener token -> wants active scanning
        self._scan_paused = 0
        self._scanning: bool | None = None  # None: off; True: active; False: passive
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._connecting: hci.Address | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.malformed_advertisements = 0  # AD structures the scanners skipped (debugging)

    # -- identity ------------------------------------------------------------------------------

    @property
    def description(self) -> str:
        """``bumble:<transport spec>``; put in ``BLEDevice.details["source"]``."""
        return f"bumble:{self._spec}" if self._spec else f"bumble:{type(self._given).__name__}"

    @property
    def device(self) -> Device:
        """The Bumble device (raises BleakBluetoothNotAvailableError when not usable)."""
        if self._lost:
            raise BleakBluetoothNotAvailableError(
                f"{self.description}: the HCI transport was lost; open a new adapter",
                BleakBluetoothNotAvailableReason.NO_BLUETOOTH,
            )
        if self._device is None:
            raise BleakBluetoothNotAvailableError(
                f"{self.description}: adapter not open; use 'async with BumbleAdapter(...)'",
                BleakBluetoothNotAvailableReason.POWERED_OFF,
            )
        return self._device

    @property
    def address(self) -> str:
        """This adapter's own (random static) address."""
        return str(self.device.random_address)

    @property
    def backends(self) -> BleakBackends:
        """Scanner and client backend classes bound to this adapter, for bleak's ``backend=``."""
        return BleakBackends(self.scanner_backend, self.client_backend)

    @property
    def scanner_backend(self) -> type[BleakScannerBumble]:
        return self._bound_classes[0]

    @property
    def client_backend(self) -> type[BleakClientBumble]:
        return self._bound_classes[1]

    @functools.cached_property
    def _bound_classes(self) -> tuple[type[BleakScannerBumble], type[BleakClientBumble]]:
        adapter = self

        class BoundScanner(BleakScannerBumble):
            _adapter: ClassVar[BumbleAdapter] = adapter

        class BoundClient(BleakClientBumble):
            _adapter: ClassVar[BumbleAdapter] = adapter

        # bleak reports backend.__name__ as the backend id.
        BoundScanner.__name__ = BoundScanner.__qualname__ = BleakScannerBumble.__name__
        BoundClient.__name__ = BoundClient.__qualname__ = BleakClientBumble.__name__
        return BoundScanner, BoundClient

    # -- bonds ---------------------------------------------------------------------------------

    def bonded(self, address: str) -> bool:
        """True when the adapter holds a bond with the sensor at ``address``."""
        store = self.bonds
        return store is not None and any(
            name.split("/", 1)[0].upper() == address.upper() for name in store.all_keys
        )

    async def forget_bond(self, address: str) -> bool:
        """Delete the bond with ``address``; True when there was one."""
        return self.bonds is not None and await forget(self.bonds, address)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> Self:
        """Open the transport (when given a spec), power the controller on; idempotent."""
        if self._device is not None:
            return self
        try:
            bonds = (
                BondStore(self._bonds_path) if self._bonds_path is not None else MemoryKeyStore()
            )
        except BondStoreError as exc:
            raise BleakBluetoothNotAvailableError(
                str(exc), BleakBluetoothNotAvailableReason.NO_BLUETOOTH
            ) from exc
        transport = self._given
        if transport is None:
            assert self._spec is not None
            try:
                transport = await open_transport(self._spec)
            except (OSError, ValueError, core.BaseBumbleError) as exc:
                raise BleakBluetoothNotAvailableError(
                    f"cannot open Bluetooth HCI transport {self._spec!r}: {exc}",
                    BleakBluetoothNotAvailableReason.NO_BLUETOOTH,
                ) from exc
        address = self._address
        if address is None and isinstance(bonds, BondStore):
            address = bonds.identity.to_string(with_type_qualifier=False)
        device = Device(
            name=self._name,
            address=hci.Address(address) if address else None,
            host=Host(transport.source, transport.sink),
        )
        device.keystore = self.bonds = bonds
        device.pairing_config_factory = lambda connection: pairing_config(connection, self.passkeys)
        try:
            async with asyncio.timeout(POWER_ON_TIMEOUT_S):
                await device.power_on()
        except (core.BaseBumbleError, TimeoutError) as exc:
            if self._given is None:
                await _close_transport(transport)
            raise BleakBluetoothNotAvailableError(
                f"{self.description}: the controller did not power on: {exc!r}",
                BleakBluetoothNotAvailableReason.NO_BLUETOOTH,
            ) from exc
        device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        device.on(device.EVENT_CONNECTION, self._on_connection)
        terminated = getattr(transport.source, "terminated", None)
        if isinstance(terminated, asyncio.Future):
            terminated.add_done_callback(self._on_transport_terminated)
        self._transport, self._device, self._lost, self._closing = transport, device, False, False
        self._lost_event.clear()
        logger.debug("%s: powered on as %s", self.description, device.random_address)
        return self

    async def close(self) -> None:
        """Disconnect every connection, stop scanning and close a transport the adapter opened."""
        device, transport = self._device, self._transport
        if device is None or transport is None:
            return
        self._closing = True
        self._listeners.clear()
        self._scan_users.clear()
        await self._settle_tasks()  # scan updates, cancelled connects: let them finish
        if not self._lost:
            for connection in list(device.connections.values()):
                await _disconnect_quietly(connection)
            if self._scanning is not None:
                with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                    await device.stop_scanning()
        self._scanning = None
        await self._settle_tasks()
        device.remove_listener(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        device.remove_listener(device.EVENT_CONNECTION, self._on_connection)
        terminated = getattr(transport.source, "terminated", None)
        if isinstance(terminated, asyncio.Future):
            terminated.remove_done_callback(self._on_transport_terminated)
        self._device = self._transport = None
        if self._given is None:
            await _close_transport(transport)
        logger.debug("%s: closed", self.description)

    # -- scanning ------------------------------------------------------------------------------

    async def add_scan_listener(
        self, listener: AdvertisementListener, *, active: bool
    ) -> Callable[[], Awaitable[None]]:
        """Call ``listener`` for every advertisement until the returned coroutine function runs."""
        self.device  # noqa: B018 - raises when the adapter is not usable
        token = object()
        self._listeners[token] = listener
        self._scan_users[token] = active

        async def remove() -> None:
            if self._listeners.pop(token, None) is not None:
                self._scan_users.pop(token, None)
                await self._reconcile_scan()

        try:
            await self._reconcile_scan()
        except BaseException:
            await remove()
            raise
        return remove

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(advertisement)
            except Exception:
                logger.exception("%s: advertisement listener failed", self.description)

    async def _reconcile_scan(self) -> None:
        # Runs as its own task so that a caller cancelled mid-way cannot leave the controller in a
        # state nobody asked for; the shield lets the update finish in the background.
        if self._device is None or self._lost:
            return
        await asyncio.shield(self._spawn(self._apply_scan(), "bumble-scan-update"))

    async def _apply_scan(self) -> None:
        async with self._scan_lock:
            device = self._device
            if device is None or self._lost:
                return
            wanted: bool | None = None
            if self._scan_users and not self._scan_paused:
                wanted = any(self._scan_users.values())
            if wanted == self._scanning:
                return
            if self._scanning is not None:
                await device.stop_scanning()
                self._scanning = None
            if wanted is not None:
                await device.start_scanning(active=wanted, filter_duplicates=False)
                self._scanning = wanted

    # -- connecting ----------------------------------------------------------------------------

    async def find(self, address: str, exact: hci.Address | None, deadline: float) -> hci.Address:
        """Wait for a connectable advertisement from ``address`` (of ``exact``'s type when given).

        Raises BleakDeviceNotFoundError when none arrives before ``deadline`` (loop time).
        """
        wanted = address.upper()
        found: asyncio.Future[hci.Address] = asyncio.get_running_loop().create_future()

        def listener(advertisement: Advertisement) -> None:
            peer = advertisement.address
            if found.done() or not advertisement.is_connectable:
                return
            if (peer == exact) if exact is not None else peer.to_string(False) == wanted:
                found.set_result(peer)

        remove = await self.add_scan_listener(listener, active=False)
        try:
            async with asyncio.timeout_at(deadline):
                return await found
        except TimeoutError:
            raise BleakDeviceNotFoundError(
                address,
                f"Device with address {address} was not found: no connectable advertisement "
                f"received on {self.description} before the timeout",
            ) from None
        finally:
            await remove()

    async def connect(self, peer: hci.Address, deadline: float) -> Connection:
        """LE Create Connection to ``peer`` (seen advertising just now) before ``deadline``.

        Raises TimeoutError at the deadline, Bumble errors otherwise (callers map them).
        """
        await self._acquire_initiator(deadline)
        release = True
        self._scan_paused += 1
        try:
            await self._reconcile_scan()
            self._connecting = peer
            attempt = asyncio.create_task(
                self.device.connect(peer, transport=core.PhysicalTransport.LE, timeout=None),
                name=f"bumble-connect-{peer}",
            )
            try:
                async with asyncio.timeout_at(deadline):
                    return await asyncio.shield(attempt)
            except TimeoutError:
                await self._abandon(attempt, peer)
                raise TimeoutError(
                    f"connecting to {peer} timed out on {self.description}"
                ) from None
            except asyncio.CancelledError:
                # The initiator stays busy until the controller confirms the cancel: hand the
                # lock to the task that waits for that.
                release = False
                self._spawn(self._abandon(attempt, peer, release=True), f"bumble-cancel-{peer}")
                raise
        finally:
            self._connecting = None
            self._scan_paused -= 1
            if release:
                self._connect_lock.release()
            await self._reconcile_scan()

    async def _acquire_initiator(self, deadline: float) -> None:
        acquired = False
        try:
            async with asyncio.timeout_at(deadline):
                await self._connect_lock.acquire()
                acquired = True
        except BaseException:
            if acquired:
                self._connect_lock.release()
            raise

    async def _abandon(
        self, attempt: asyncio.Task[Connection], peer: hci.Address, *, release: bool = False
    ) -> None:
        """Cancel a pending LE Create Connection; disconnect it if it completed meanwhile."""
        try:
            await self._cancel_attempt(attempt, peer)
        finally:
            if release:
                self._connect_lock.release()

    async def _cancel_attempt(self, attempt: asyncio.Task[Connection], peer: hci.Address) -> None:
        if not attempt.done() and self._device is not None and not self._lost:
            with contextlib.suppress(core.BaseBumbleError):
                await self._device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
            await asyncio.wait({attempt}, timeout=CANCEL_SETTLE_S)
        if not attempt.done():
            # The controller never reported the cancelled attempt (Bumble's emulated controller
            # does not, and completes it later if the peer advertises again); stop waiting.
            logger.warning(
                "%s: controller did not confirm the cancelled connection to %s",
                self.description,
                peer,
            )
            attempt.cancel()
            await asyncio.wait({attempt})
            if self._device is not None:
                # Bumble's Device needs the own address type of a central connection it did not
                # start or its handler fails; this lets a late one arrive (and be dropped by
                # _on_connection). The next connect sets the attribute itself.
                self._device.connect_own_address_type = hci.OwnAddressType.RANDOM
            return
        if attempt.cancelled():
            return
        if (error := attempt.exception()) is not None:
            logger.debug("%s: cancelled connection to %s ended: %s", self.description, peer, error)
            return
        connection = attempt.result()
        logger.debug("%s: connection to %s completed after its timeout", self.description, peer)
        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await connection.disconnect()

    def _on_connection(self, connection: Connection) -> None:
        # A central connection nobody is waiting for (a cancelled attempt the controller completed
        # anyway) would hold a link slot and keep the sensor from advertising: drop it.
        if connection.role != hci.Role.CENTRAL or connection.peer_address == self._connecting:
            return
        logger.info("%s: dropping unrequested connection to %s", self.description, connection)
        self._spawn(_disconnect_quietly(connection), f"bumble-drop-{connection.peer_address}")

    # -- transport loss ------------------------------------------------------------------------

    def _on_transport_terminated(self, _terminated: asyncio.Future[None]) -> None:
        device = self._device
        if device is None or self._closing:
            return
        self._lost = True
        self._lost_event.set()
        self._scanning = None
        logger.warning("%s: HCI transport lost", self.description)
        for connection in list(device.connections.values()):
            # Bumble's own disconnection path: fails pending GATT requests, notifies listeners.
            device.on_disconnection(connection.handle, TRANSPORT_LOST_REASON)

    async def wait_lost(self) -> None:
        """Return when the HCI transport has gone away (the adapter is then unusable)."""
        await self._lost_event.wait()

    # -- helpers -------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _settle_tasks(self) -> None:
        # Cancelling a task in the middle of an HCI command leaves Bumble's host expecting a
        # response nobody waits for, so wait first and cancel only what hangs.
        if not self._tasks:
            return
        _done, hanging = await asyncio.wait(set(self._tasks), timeout=DISCONNECT_TIMEOUT_S)
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.debug("%s: %s failed: %r", self.description, task.get_name(), error)


async def _disconnect_quietly(connection: Connection) -> None:
    with contextlib.suppress(core.BaseBumbleError, TimeoutError):
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await connection.disconnect()


async def _close_transport(transport: HciTransport) -> None:
    close = getattr(transport, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result
