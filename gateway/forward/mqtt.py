"""MQTT v5 over paho-mqtt 2.x, driven by the asyncio event loop; the MQTT uplink.

paho runs without its own thread: the loop watches the socket (``add_reader`` / ``add_writer``
from paho's socket callbacks) and calls ``loop_read`` / ``loop_write``, and a 1 s timer calls
``loop_misc`` for keepalive, the approach of Home Assistant's MQTT client. Only the blocking part of
connecting (DNS, TCP connect, TLS handshake inside ``Client.reconnect``) runs in a dedicated
one-thread executor; the socket callbacks it triggers are handed to the loop.

Sessions are persistent (``clean_start`` false, Session Expiry Interval from the settings). After
a connection drops, paho's own copies of unacknowledged messages are dropped and the pump resends
them from the outbox, so there is exactly one source of retransmission, the same after a reconnect
as after a restart.

Topics (``docs/contracts.md``, MQTT topics): ``{prefix}/{gateway_id}/observations|devices|drafts``
carry the signed Bundle JSON at QoS 1 with content type ``application/fhir+json`` and user property
``bundle-id``; ``{prefix}/{gateway_id}/status`` holds a retained ``online``, replaced by the last
will ``offline`` (also retained) when the gateway vanishes, or by ``offline`` on an orderly stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.forward.backoff import Backoff
from gateway.forward.errors import (
    ConnectionLostError,
    DeliveryError,
    ErrorClass,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.forward.settings import MqttSettings
from gateway.store.models import OutboxItem, TopicKind

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE: Final = 1
CONTENT_TYPE: Final = "application/fhir+json"
BUNDLE_ID_PROPERTY: Final = "bundle-id"
STATUS_ONLINE: Final = b"online"
STATUS_OFFLINE: Final = b"offline"
MISC_INTERVAL_S: Final = 1.0  # paho: call loop_misc() about once a second
STOP_TIMEOUT_S: Final = 3.0  # orderly stop: wait this long for the offline PUBACK
PAYLOAD_FORMAT_UTF8: Final = 1  # MQTT 5 §3.3.2.3.2

# MQTT 5 reason codes (§2.4) by error class; any other failure code is permanent for a PUBLISH.
_CONNACK_CLASSES: Final[dict[int, ErrorClass]] = {
    0x84: ErrorClass.SERVER,  # unsupported protocol version
    0x86: ErrorClass.AUTH,  # bad user name or password
    0x87: ErrorClass.AUTH,  # not authorized
    0x88: ErrorClass.SERVER,  # server unavailable
    0x89: ErrorClass.RATE_LIMITED,  # server busy
    0x8A: ErrorClass.AUTH,  # banned
    0x8C: ErrorClass.AUTH,  # bad authentication method
    0x97: ErrorClass.RATE_LIMITED,  # quota exceeded
    0x9F: ErrorClass.RATE_LIMITED,  # connection rate exceeded
}
_PUBACK_TRANSIENT: Final[dict[int, ErrorClass]] = {
    0x80: ErrorClass.SERVER,  # unspecified error
    0x83: ErrorClass.SERVER,  # implementation specific error
    0x97: ErrorClass.RATE_LIMITED,  # quota exceeded
}


def topic(prefix: str, gateway_id: str, kind: TopicKind | str) -> str:
    return f"{prefix}/{gateway_id}/{kind}"


def status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/status"


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails.

    paho's ``Client.reconnect`` drops the socket without closing it when ``do_handshake`` raises
    (certificate refused): without this, every failed attempt would leak a file descriptor until
    the garbage collector finds it.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """Server verification against ``ca_file`` (or the system CAs), client cert for mTLS."""
    context = ssl.create_default_context(
        cafile=None if settings.ca_file is None else str(settings.ca_file)
    )
    context.sslsocket_class = _ClosingSSLSocket
    if settings.cert_file is not None:
        context.load_cert_chain(
            str(settings.cert_file), None if settings.key_file is None else str(settings.key_file)
        )
    return context


# MQTT 5 §2.2.2.2 property identifiers and §1.5 data types, for PUBLISH properties we encode once.
_PAYLOAD_FORMAT_INDICATOR = 0x01  # Byte
_CONTENT_TYPE = 0x03  # UTF-8 Encoded String
_USER_PROPERTY = 0x26  # UTF-8 String Pair
_U16 = struct.Struct("!H")  # MQTT 5 §1.5.2: big-endian Two Byte Integer


def _utf8(text: str) -> bytes:
    """MQTT 5 §1.5.4 UTF-8 Encoded String: 2-byte length, then the bytes."""
    data = text.encode("utf-8")
    return _U16.pack(len(data)) + data


def _variable_byte_integer(value: int) -> bytes:
    """MQTT 5 §1.5.5."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


_BUNDLE_PROPERTIES_HEAD: Final = (
    bytes([_PAYLOAD_FORMAT_INDICATOR, PAYLOAD_FORMAT_UTF8, _CONTENT_TYPE])
    + _utf8(CONTENT_TYPE)
    + bytes([_USER_PROPERTY])
    + _utf8(BUNDLE_ID_PROPERTY)
)


class _PackedProperties(Properties):
    """PUBLISH properties already in wire form: paho only calls ``pack()`` on them.

    Building a paho ``Properties`` per message and packing it costs more than the rest of the
    publish; the three properties of a Bundle message differ only in the bundle id.
    """

    def __init__(self, packed: bytes) -> None:  # no super().__init__: that is the slow part
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)

    def pack(self) -> bytes:
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed

    def __str__(self) -> str:
        return f"[packed {len(object.__getattribute__(self, '_packed'))} bytes]"


def bundle_properties(bundle_id: str) -> Properties:
    """Payload format UTF-8, content type application/fhir+json, user property bundle-id."""
    body = _BUNDLE_PROPERTIES_HEAD + _utf8(bundle_id)
    return _PackedProperties(_variable_byte_integer(len(body)) + body)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it unannotated


def _reason_text(reason: ReasonCode) -> str:
    return f"{reason.getName()} (0x{reason.value:02X})"


class MqttConnection:
    """One paho client on the running loop plus a supervisor that keeps it connected.

    Subclasses react in :meth:`_connected` and :meth:`_connection_lost` (both on the loop).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        max_inflight: int | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self._backoff = backoff or Backoff()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self.generation = 0  # connection count: acks of an older connection are void
        self.failed_attempts = 0
        self.changed = asyncio.Event()  # set at every connect, failed attempt and loss
        self._stopping = False
        self.last_error: str | None = None
        self.since: float | None = None  # wall time of the last connect or loss (status page)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"mqtt-connect-{client_id}"
        )
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
        )
        client.connect_timeout = settings.connect_timeout_s
        if max_inflight is not None:
            client.max_inflight_messages_set(max_inflight)  # before connect_async (paho rule)
        if settings.username is not None:
            password = None if settings.password is None else settings.password.get_secret_value()
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set_context(tls_context(settings))
        if will is not None:
            client.will_set(will[0], will[1], qos=QOS_AT_LEAST_ONCE, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = settings.session_expiry_s
        if receive_maximum is not None:
            properties.ReceiveMaximum = receive_maximum
        client.connect_async(
            settings.host,
            settings.port,
            keepalive=settings.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self.client = client

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_connected(self) -> None:
        await self._ready.wait()

    # -- supervisor ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, reconnect with backoff after every loss; on cancellation stop in order."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            while True:
                try:
                    await self._connect_once()
                except TransientDeliveryError as exc:
                    self.last_error = str(exc)
                    self.failed_attempts += 1
                    self.changed.set()
                    delay = self._backoff.failure(exc.error_class)
                    log.warning(
                        "MQTT %s:%s: %s; retrying in %.1f s",
                        self.settings.host,
                        self.settings.port,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                self._backoff.success()
                await self._lost.wait()
                await asyncio.sleep(self._backoff.failure(ErrorClass.NETWORK))
        finally:
            await self._stop()

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._lost.clear()
        self.client.drop_out_messages()  # the pump resends them; see the module text
        self._connack = loop.create_future()
        try:
            await loop.run_in_executor(self._executor, self.client.reconnect)
        except ssl.SSLError as exc:  # incl. ssl.CertificateError (= SSLCertVerificationError)
            raise TransientDeliveryError(ErrorClass.TLS, f"TLS handshake failed: {exc}") from exc
        except (OSError, ValueError) as exc:  # socket.timeout is an OSError
            raise TransientDeliveryError(ErrorClass.NETWORK, f"cannot connect: {exc}") from exc
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                reason, session_present = await self._connack
        except TimeoutError as exc:
            self._close_socket()
            raise TransientDeliveryError(ErrorClass.NETWORK, "no CONNACK in time") from exc
        if reason.is_failure:
            self._close_socket()
            error_class = _CONNACK_CLASSES.get(reason.value, ErrorClass.SERVER)
            raise TransientDeliveryError(
                error_class, f"broker refused the connection: {_reason_text(reason)}"
            )
        self.generation += 1
        self.last_error = None
        log.info(
            "MQTT connected to %s:%s as %s (session present: %s)",
            self.settings.host,
            self.settings.port,
            self.client_id,
            session_present,
        )
        self._ready.set()
        self.since = time.time()
        self.changed.set()
        self._connected(session_present)

    def _close_socket(self) -> None:
        sock = self.client.socket()
        if sock is not None:
            self._on_socket_close(self.client, None, sock)
            with contextlib.suppress(OSError):
                sock.close()

    async def _stop(self) -> None:
        """Orderly stop: subclass farewell, DISCONNECT (no last will), release the executor."""
        self._stopping = True
        try:
            if self.connected:
                with contextlib.suppress(TimeoutError, DeliveryError):
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await self._before_disconnect()
                self.client.disconnect()
                self.client.loop_write()
            self._close_socket()
        finally:
            self._ready.clear()
            if self._misc is not None:
                self._misc.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- hooks for subclasses ----------------------------------------------------------------

    def _connected(self, session_present: bool) -> None:
        """Called on the loop right after a successful CONNACK."""

    def _connection_lost(self, reason: str) -> None:
        """Called on the loop when the connection is gone (before reconnecting)."""

    async def _before_disconnect(self) -> None:
        """Called on an orderly stop while still connected."""

    # -- paho callbacks (on the loop thread, except socket ones during connect) --------------------

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._call_on_loop(self._watch, sock)

    def _watch(self, sock: socket.socket) -> None:
        if self._loop is None or self.client.socket() is not sock or sock.fileno() < 0:
            return  # closed again before the loop got to it
        self._loop.add_reader(sock, self._readable)
        if self._misc is None:
            self._misc = self._loop.call_later(MISC_INTERVAL_S, self._misc_tick)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._call_on_loop(self._unwatch, sock)

    def _unwatch(self, sock: socket.socket) -> None:
        if self._loop is None or sock.fileno() < 0:
            return
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._call_on_loop(self._watch_write, sock)

    def _watch_write(self, sock: socket.socket) -> None:
        if self._loop is None or self.client.socket() is not sock or sock.fileno() < 0:
            return
        self._loop.add_writer(sock, self._writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._call_on_loop(self._unwatch_write, sock)

    def _unwatch_write(self, sock: socket.socket) -> None:
        if self._loop is None or sock.fileno() < 0:
            return
        self._loop.remove_writer(sock)

    def _readable(self) -> None:
        self.client.loop_read()

    def _writable(self) -> None:
        self.client.loop_write()

    def _misc_tick(self) -> None:
        self._misc = None
        if self.client.socket() is None or self._loop is None:
            return
        self.client.loop_misc()
        if self.client.socket() is not None:
            self._misc = self._loop.call_later(MISC_INTERVAL_S, self._misc_tick)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((reason, flags.session_present))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        text = _reason_text(reason)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(
                TransientDeliveryError(ErrorClass.NETWORK, f"connection closed: {text}")
            )
        was_ready = self._ready.is_set()
        if was_ready:
            self.since = time.time()
        self._ready.clear()
        self._lost.set()
        self.changed.set()
        if was_ready:
            log.log(
                logging.INFO if self._stopping else logging.WARNING,
                "MQTT connection to %s closed: %s",
                self.settings.host,
                text,
            )
            self.last_error = f"connection lost: {text}"
            self._connection_lost(text)


class MqttUplink(MqttConnection):
    """Publishes outbox items; :meth:`send` returns on PUBACK (see the module text)."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        *,
        name: str = "mqtt",
        backoff: Backoff | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.gateway_id = gateway_id
        self._name = name
        self._status_topic = status_topic(settings.topic_prefix, gateway_id)
        super().__init__(
            settings,
            client_id=settings.client_id or f"bedside-{gateway_id}",
            will=(self._status_topic, STATUS_OFFLINE),
            max_inflight=settings.inflight_window + 1,  # + the status message
            backoff=backoff,
            manual_ack=manual_ack,
        )
        self.client.on_publish = self._on_publish
        self._acks: dict[int, asyncio.Future[None]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def window(self) -> int:
        return self.settings.inflight_window

    async def wait_ready(self) -> None:
        await self.wait_connected()

    def _publish(
        self,
        topic_name: str,
        payload: bytes,
        properties: Properties | None,
        *,
        retain: bool = False,
    ) -> int:
        info = self.client.publish(
            topic_name, payload, qos=QOS_AT_LEAST_ONCE, retain=retain, properties=properties
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            raise ConnectionLostError("not connected to the broker")
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransientDeliveryError(
                ErrorClass.NETWORK, f"publish failed: {paho.error_string(info.rc)}"
            )
        return info.mid

    async def send(self, item: OutboxItem) -> None:
        if not self.connected:
            raise ConnectionLostError("not connected to the broker")
        mid = self._publish(
            topic(self.settings.topic_prefix, self.gateway_id, item.kind),
            item.payload.encode("utf-8"),
            bundle_properties(item.id),
        )
        future = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        try:
            await future
        finally:
            self._acks.pop(mid, None)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is None or future.done():
            return
        if not reason.is_failure:
            future.set_result(None)
            return
        text = f"broker refused the message: {_reason_text(reason)}"
        error_class = _PUBACK_TRANSIENT.get(reason.value)
        if error_class is None:
            future.set_exception(PermanentDeliveryError(text))
        else:
            future.set_exception(TransientDeliveryError(error_class, text))

    def _connected(self, session_present: bool) -> None:
        # Retained, so that a subscriber arriving later sees the current state; not awaited.
        self.client.publish(self._status_topic, STATUS_ONLINE, qos=QOS_AT_LEAST_ONCE, retain=True)

    def _connection_lost(self, reason: str) -> None:
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(ConnectionLostError(f"connection lost: {reason}"))

    async def _before_disconnect(self) -> None:
        mid = self._publish(self._status_topic, STATUS_OFFLINE, None, retain=True)
        future = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        await future
