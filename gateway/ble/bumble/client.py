"""bleak client backend over a :class:`~gateway.ble.bumble.adapter.BumbleAdapter`.

Use the class from ``adapter.backends.client`` (bound to that adapter) as
``BleakClient(..., backend=...)``, or as ``backend=`` to
``bleak_retry_connector.establish_connection``.

Contract, as bleak's BlueZ backend behaves:

* ``connect`` waits for a connectable advertisement from the peer, connects, exchanges the ATT MTU
  (:data:`REQUESTED_MTU`) and discovers services, characteristics and descriptors, all within the
  timeout. When no advertisement arrives in time it raises BleakDeviceNotFoundError for a client
  made from an address string (bleak's BlueZ backend scans for it first, too) and TimeoutError for
  one made from a scanned BLEDevice (BlueZ's connect times out); later stages raise TimeoutError.
* the disconnected callback runs once per connection that ``connect`` completed, whether the peer,
  the radio or :meth:`disconnect` ended it.
* ATT error responses raise BleakGATTProtocolError; other failures raise BleakError, with
  "Disconnected" in the message when the link dropped during the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Final

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.gatt import GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR

from gateway.ble.bumble.advertising import uuid_from_le_bytes
from gateway.ble.bumble.scanner import DETAILS_ADDRESS

if TYPE_CHECKING:
    from bleak.args import SizedBuffer
    from bleak.assigned_numbers import CharacteristicPropertyName
    from bumble.device import Connection
    from bumble.gatt_client import CharacteristicProxy

    from gateway.ble.bumble.adapter import BumbleAdapter

logger = logging.getLogger(__name__)

# The ATT MTU asked for after connecting: 247 = the 251-octet maximum LL payload (Core v5.4 Vol 6,
# Part B §4.5.10) minus the 4-byte L2CAP header, the largest MTU that fits one link-layer PDU.
# (Bumble's host sets the controller's suggested default data length to 251 octets at power-on.)
REQUESTED_MTU: Final = 247
ATT_WRITE_OVERHEAD: Final = 3  # Core v5.4 Vol 3, Part F §3.4.5.3: opcode + attribute handle
DISCONNECT_TIMEOUT_S: Final = 10.0
# Core v5.4 Vol 3, Part G §3.3.1.1 Table 3.5: characteristic properties bit → bleak's name.
PROPERTY_NAMES: Final[tuple[tuple[int, CharacteristicPropertyName], ...]] = (
    (0x01, "broadcast"),
    (0x02, "read"),
    (0x04, "write-without-response"),
    (0x08, "write"),
    (0x10, "notify"),
    (0x20, "indicate"),
    (0x40, "authenticated-signed-writes"),
    (0x80, "extended-properties"),
)


def property_names(bits: int) -> list[CharacteristicPropertyName]:
    """Characteristic property bits as bleak's property names, in bit order."""
    return [name for bit, name in PROPERTY_NAMES if bits & bit]


def bleak_uuid(uuid: core.UUID) -> str:
    """A Bumble UUID as bleak's lower-case 128-bit string."""
    return uuid_from_le_bytes(uuid.to_bytes(force_128=True))


class BleakClientBumble(BaseBleakClient):
    """Client backend; instantiate through a class bound to an adapter (``adapter.backends``)."""

    _adapter: ClassVar[BumbleAdapter]

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        adapter = getattr(type(self), "_adapter", None)
        if adapter is None:
            raise BleakError(
                "BleakClientBumble must be bound to an adapter: pass "
                "BumbleAdapter(...).backends.client as BleakClient's backend="
            )
        self._bumble: BumbleAdapter = adapter
        self._peer: hci.Address | None = None
        self._display_name: str | None = None
        self._scanned = isinstance(address_or_ble_device, BLEDevice)
        if isinstance(address_or_ble_device, BLEDevice):
            self._display_name = address_or_ble_device.name
            details = address_or_ble_device.details
            if isinstance(details, dict) and isinstance(details.get(DETAILS_ADDRESS), str):
                self._peer = hci.Address(details[DETAILS_ADDRESS])
        self._requested_services = services
        self._connection: Connection | None = None
        self._established = False
        self._callbacks: dict[int, NotifyCallback] = {}  # by characteristic value handle
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    # -- properties ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._display_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        connection = self._connection
        return att.ATT_DEFAULT_MTU if connection is None else connection.att_mtu

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    # -- connectivity --------------------------------------------------------------------------

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Find, connect, exchange the MTU, discover services (``timeout`` kwarg overrides)."""
        if self._connection is not None:
            raise BleakError("Client is already connected")
        timeout = float(kwargs.get("timeout", self._timeout))
        deadline = asyncio.get_running_loop().time() + timeout
        with self._errors("scanning for the device"):
            try:
                peer = await self._bumble.find(self.address, self._peer, deadline)
            except BleakDeviceNotFoundError as exc:
                if not self._scanned:
                    raise
                # A device from a scan that stopped advertising: BlueZ's connect times out too
                # (bleak-retry-connector counts it as a timeout, not as a missing device).
                raise TimeoutError(f"{exc} (waited {timeout:g} s)") from exc
        with self._errors("connecting"):
            connection = await self._bumble.connect(peer, deadline)
        self._peer = peer
        self._connection = connection
        connection.on(
            connection.EVENT_DISCONNECTION,
            lambda reason: self._on_disconnection(connection, reason),
        )
        try:
            async with asyncio.timeout_at(deadline):
                with self._errors("setting up the connection"):
                    if pair:
                        await connection.pair()
                    elif await self._bonded(connection):
                        await self._encrypt_bonded(connection)
                    await self._exchange_mtu(connection)
                    self.services = await self._discover(connection)
        except BaseException:
            await self._drop(connection)
            raise
        self._established = True
        logger.debug("%s: connected, MTU %d", self.address, connection.att_mtu)

    async def _bonded(self, connection: Connection) -> bool:
        keystore = self._bumble.device.keystore
        return keystore is not None and await keystore.get(str(connection.peer_address)) is not None

    async def _encrypt_bonded(self, connection: Connection) -> None:
        """Encrypt with the stored keys, as BlueZ does for a bonded device. A sensor that lost
        its half of the bond (reset, battery change on some models) refuses them: say so."""
        try:
            await connection.encrypt()
        except (core.BaseBumbleError, hci.HCI_Error) as exc:
            raise BleakError(
                f"{self.address} refused the stored bond (the sensor may have been reset): "
                f"forget it and accept it again to pair anew (bedside sensors forget "
                f"{self.address}; bedside sensors accept {self.address})"
            ) from exc

    async def _exchange_mtu(self, connection: Connection) -> None:
        try:
            await connection.gatt_client.request_mtu(REQUESTED_MTU)
        except att.ATT_Error as exc:  # a server may refuse the exchange; 23 still works
            logger.debug("%s: MTU exchange refused: %s", self.address, exc)

    async def _discover(self, connection: Connection) -> BleakGATTServiceCollection:
        client = connection.gatt_client
        wanted = [core.UUID(u) for u in self._requested_services or ()]
        collection = BleakGATTServiceCollection()
        for service in await client.discover_services(wanted):
            await client.discover_characteristics((), service)
            bleak_service = BleakGATTService(service, service.handle, bleak_uuid(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in service.characteristics:
                await client.discover_descriptors(characteristic)
                characteristic.descriptors_discovered = True  # spares subscribe() a re-discovery
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    bleak_uuid(characteristic.uuid),
                    property_names(characteristic.properties),
                    lambda: connection.att_mtu - ATT_WRITE_OVERHEAD,
                    bleak_service,
                )
                collection.add_characteristic(bleak_characteristic)
                for descriptor in characteristic.descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor,
                            descriptor.handle,
                            bleak_uuid(descriptor.type),
                            bleak_characteristic,
                        )
                    )
        return collection

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
        except (core.BaseBumbleError, TimeoutError) as exc:
            logger.debug("%s: disconnect: %s", self.address, exc)
        finally:
            # Normally the disconnection event already ran the teardown; make sure of it.
            self._on_disconnection(connection, hci.HCI_CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    async def _drop(self, connection: Connection) -> None:
        """Tear down a connection whose set-up failed, without the disconnected callback."""
        self._established = False
        with contextlib.suppress(core.BaseBumbleError, TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await asyncio.shield(connection.disconnect())
        self._on_disconnection(connection, hci.HCI_CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    def _on_disconnection(self, connection: Connection, reason: int) -> None:
        if self._connection is not connection:
            return  # an earlier connection, already torn down
        self._connection = None
        self.services = None
        self._callbacks.clear()
        self._subscribers.clear()
        established, self._established = self._established, False
        logger.debug("%s: disconnected (reason 0x%02X)", self.address, reason)
        if established and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair (LE Secure Connections: passkey entry where the sensor shows one and the adapter
        has a passkey source, else Just Works) and bond.

        Bonds live in the adapter's key store (its bond file, or memory): later connections to
        the peer are encrypted with the stored key.
        """
        connection = self._require_connection()
        with self._errors("pairing"):
            await connection.pair()

    async def unpair(self) -> None:
        """Forget the bond with the peer and disconnect."""
        keystore = self._bumble.device.keystore
        if keystore is not None and self._peer is not None:
            with contextlib.suppress(KeyError):
                await keystore.delete(str(self._peer))
        await self.disconnect()

    # -- I/O -----------------------------------------------------------------------------------

    async def read_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        return await self._read(characteristic.handle, use_cached, "reading a characteristic")

    async def read_gatt_descriptor(
        self,
        descriptor: BleakGATTDescriptor,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        return await self._read(descriptor.handle, use_cached, "reading a descriptor")

    async def _read(self, handle: int, use_cached: bool, what: str) -> bytearray:
        client = self._require_connection().gatt_client
        if use_cached and (cached := client.cached_values.get(handle)) is not None:
            return bytearray(cached[1])
        with self._errors(f"{what} (handle 0x{handle:04X})"):
            return bytearray(await client.read_value(handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        client = self._require_connection().gatt_client
        with self._errors(f"writing characteristic handle 0x{characteristic.handle:04X}"):
            await client.write_value(characteristic.handle, bytes(data), with_response=response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        client = self._require_connection().gatt_client
        with self._errors(f"writing descriptor handle 0x{descriptor.handle:04X}"):
            await client.write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(
        self,
        characteristic: BleakGATTCharacteristic,
        callback: NotifyCallback,
        **kwargs: Any,
    ) -> None:
        """Write the CCCD (notifications preferred over indications, as bleak asks)."""
        client = self._require_connection().gatt_client
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        handle = characteristic.handle
        if not {"notify", "indicate"} & set(characteristic.properties):
            raise BleakError(
                f"characteristic {characteristic.uuid} can neither notify nor indicate"
            )
        if proxy.get_descriptor(GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR) is None:
            raise BleakError(
                f"characteristic {characteristic.uuid} has no Client Characteristic "
                "Configuration descriptor (0x2902)"
            )
        self._callbacks[handle] = callback
        if handle in self._subscribers:
            return  # already enabled: only the callback changes

        def on_value(value: bytes) -> None:
            if (current := self._callbacks.get(handle)) is None:
                return
            try:
                current(bytearray(value))
            except Exception:
                logger.exception("%s: notification callback failed", self.address)

        self._subscribers[handle] = on_value
        try:
            with self._errors(f"enabling notifications on handle 0x{handle:04X}"):
                await client.subscribe(proxy, on_value, prefer_notify=True)
        except BaseException:
            self._callbacks.pop(handle, None)
            self._subscribers.pop(handle, None)
            raise

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        client = self._require_connection().gatt_client
        handle = characteristic.handle
        self._callbacks.pop(handle, None)
        subscriber = self._subscribers.pop(handle, None)
        if subscriber is None:
            return
        with self._errors(f"disabling notifications on handle 0x{handle:04X}"):
            await client.unsubscribe(characteristic.obj, subscriber)

    # -- helpers -------------------------------------------------------------------------------

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError("Not connected")
        return self._connection

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Bumble's exceptions as bleak's, naming the peer and the operation."""
        try:
            yield
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # our own cancellation (or a timeout): let it through
            # Bumble cancels a pending ATT request when the link drops.
            raise BleakError(f"Disconnected from {self.address} while {what}") from None
        except core.ConnectionError as exc:
            raise BleakError(f"{self.address}: {what} failed: {exc.error_name}") from exc
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self.address}: {what} failed: {exc}") from exc
        except (struct.error, ValueError, IndexError) as exc:
            # Bumble parses some GATT response payloads without checking their length.
            raise BleakError(
                f"{self.address}: {what} failed: malformed response from the device: {exc}"
            ) from exc
