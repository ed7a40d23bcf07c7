"""The MQTT uplink that also listens: clinicians' decisions arrive on
``{prefix}/{gateway_id}/reviews`` (docs/contracts.md, "MQTT"), so a gateway behind NAT is reviewed
remotely without any inbound connection.

The subscription is QoS 1 on the uplink's persistent session; a message is acknowledged (manual
PUBACK) only after its handler returned, so a decision that arrived while the gateway crashed is
delivered again. A handler that raises unexpectedly leaves the message unacknowledged (the broker
redelivers it after the next reconnect); the handler itself decides what counts as handled, a
refused decision included. Messages are handled one at a time in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as paho

from gateway.forward.backoff import Backoff
from gateway.forward.mqtt import QOS_AT_LEAST_ONCE, MqttUplink, topic
from gateway.forward.settings import MqttSettings

log = logging.getLogger(__name__)

REVIEWS: Final = "reviews"
InboundHandler = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Inbound:
    generation: int
    mid: int
    qos: int
    payload: bytes


class ListeningMqttUplink(MqttUplink):
    """:class:`MqttUplink` plus the ``reviews`` subscription, handled by ``on_review`` (set it
    before :meth:`run`; None: nothing is subscribed)."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        *,
        name: str = "mqtt",
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(settings, gateway_id, name=name, backoff=backoff, manual_ack=True)
        self.on_review: InboundHandler | None = None
        self.reviews_topic = topic(settings.topic_prefix, gateway_id, REVIEWS)
        self._inbound: asyncio.Queue[_Inbound] = asyncio.Queue()
        self.client.on_message = self._on_message
        self.received = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._work(), name=f"{self.name}-reviews")
            await super().run()

    def _connected(self, session_present: bool) -> None:
        super()._connected(session_present)
        if self.on_review is not None:
            self.client.subscribe(self.reviews_topic, qos=QOS_AT_LEAST_ONCE)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbound.put_nowait(
            _Inbound(self.generation, message.mid, message.qos, bytes(message.payload))
        )

    async def _work(self) -> None:
        while True:
            message = await self._inbound.get()
            handler = self.on_review
            if handler is None:
                continue
            try:
                await handler(message.payload)
            except Exception:
                log.exception(
                    "a message on %s could not be handled; it stays unacknowledged",
                    self.reviews_topic,
                )
                continue
            self.received += 1
            # an ack of an earlier connection's packet id would hit another message
            if message.qos > 0 and message.generation == self.generation and self.connected:
                self.client.ack(message.mid, message.qos)
