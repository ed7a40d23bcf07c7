"""The composition root: builds every service from the validated settings and runs them.

One event loop, one top-level ``asyncio.TaskGroup``, every task named: the sensor manager (scan +
one session per sensor), one task per uplink and one outbox pump per uplink, and the systemd
watchdog. SQLite work runs in the store's own threads.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__, sdnotify
from gateway.ble.manager import SensorManager
from gateway.ble.transport import given_link, open_link
from gateway.errors import ConfigError
from gateway.fhir.device import GatewayInfo, gateway_full_url
from gateway.fhir.observation import PatientRef
from gateway.forward.service import Forwarding, build_signer, build_uplinks, open_store
from gateway.forward.settings import ForwardSettings
from gateway.ingest import Ingest
from gateway.profiles import load_profiles
from gateway.web.auth import API_TOKEN_FILE

if TYPE_CHECKING:
    from gateway.assistant.consultation import ConsultationService
    from gateway.ble.bumble import BleakBackends
    from gateway.config import Settings
    from gateway.forward.signing import Signer
    from gateway.profiles import DeviceProfile
    from gateway.store.aio import AsyncStore

log = logging.getLogger(__name__)

IDENTITY_FILE = "gateway.json"
EUI48_BITS = 48


@dataclass(frozen=True)
class Identity:
    """Who this gateway is: its EUI-64 system id and its id in MQTT topics."""

    system_id: str
    gateway_id: str


def eui64_from_mac(mac: int) -> str:
    """EUI-48 → EUI-64 by inserting FFFE in the middle (IEEE "EUI-64 from EUI-48")."""
    octets = mac.to_bytes(EUI48_BITS // 8, "big")
    return (octets[:3] + b"\xff\xfe" + octets[3:]).hex().upper()


def load_identity(data_dir: Path, gateway_id: str | None) -> Identity:
    """The identity stored in the data directory, created on first start."""
    path = data_dir / IDENTITY_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            system_id = str(stored["system_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a gateway identity file ({exc})") from exc
    else:
        system_id = eui64_from_mac(uuid.getnode())
        path.write_text(json.dumps({"system_id": system_id}) + "\n", encoding="utf-8")
    return Identity(system_id, gateway_id or f"gw-{system_id.lower()}")


def prepare_data_dir(data_dir: Path) -> Path:
    """Create the data directory (mode 0700): keys and patient data live there."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"data directory {data_dir}: cannot create it ({exc})") from exc
    if not os.access(data_dir, os.W_OK):
        raise ConfigError(f"data directory {data_dir}: not writable by this user")
    return data_dir


class Gateway:
    """The running service. ``await gateway.run()`` until cancelled."""

    def __init__(
        self, settings: Settings, *, profiles: dict[str, DeviceProfile] | None = None
    ) -> None:
        self.settings = settings
        self.profiles = (
            profiles if profiles is not None else load_profiles(settings.ble.profiles_dir)
        )
        self.data_dir = prepare_data_dir(settings.data_dir)
        self.identity = load_identity(self.data_dir, settings.gateway_id)
        self.info = GatewayInfo(
            system_id=self.identity.system_id,
            manufacturer="Bedside Gateway project",
            model="Bedside Gateway",
            software_revision=__version__,
            name=self.identity.gateway_id,
            specializations=tuple(
                p.specialization for p in self.profiles.values() if p.specialization
            ),
        )
        self.forward_settings = ForwardSettings(
            gateway_id=self.identity.gateway_id,
            mqtt=settings.mqtt,
            https=settings.https,
            outbox=settings.outbox,
        )
        self.manager: SensorManager | None = None
        self.ingest: Ingest | None = None
        self.store: AsyncStore | None = None
        self.forwarding: Forwarding | None = None
        self.ready = asyncio.Event()
        self.consultations: ConsultationService | None = None
        self.http_port: int | None = None

    async def run(
        self,
        *,
        backends: BleakBackends | None = None,
        on_ready: Callable[[Gateway], None] | None = None,
    ) -> None:
        """Run every service until cancelled; ``backends`` overrides the configured transport."""
        settings = self.settings
        signer = build_signer(self.data_dir, {"reference": gateway_full_url(self.info)})
        uplinks = build_uplinks(self.forward_settings)
        store = await open_store(self.data_dir, self.forward_settings, signer, uplinks)
        self.store = store
        try:
            async with AsyncExitStack() as stack:
                patient = (
                    PatientRef(
                        settings.patient.reference,
                        settings.patient.identifier_system,
                        settings.patient.identifier_value,
                    )
                    if settings.patient is not None
                    else None
                )
                ingest = Ingest(store, self.info, self.profiles, settings.tz, patient)
                self.ingest = ingest
                manager = SensorManager(
                    self.profiles,
                    ingest,
                    allow=settings.ble.allow,
                    auto_accept=settings.ble.auto_accept,
                    radio=(
                        given_link(backends)
                        if backends is not None
                        else functools.partial(open_link, settings.ble.transport)
                    ),
                    transport=settings.ble.transport,
                    last_record_time=store.last_record_time,
                    tz=settings.tz,
                )
                ingest.on_observation = manager.observation_ingested
                self.manager = manager
                self.forwarding = Forwarding(store, uplinks, self.forward_settings.outbox)
                if settings.http.enabled:
                    await self._start_http(stack, store, signer, ingest, manager, patient)
                # Everything loaded at start-up lives as long as the process: move it out of the
                # collector's reach, or a full collection (300 ms with torch and llama.cpp
                # loaded, measured by bench/sensors.py) stalls every session's ingest at once.
                gc.collect()
                gc.freeze()
                async with asyncio.TaskGroup() as tasks:
                    self.forwarding.start(tasks)
                    tasks.create_task(manager.run(), name="ble-manager")
                    tasks.create_task(self._watchdog(), name="systemd-watchdog")
                    sdnotify.notify("READY=1", f"STATUS=gateway {self.identity.gateway_id} up")
                    log.info(
                        "gateway %s running (transport %s, %d uplink(s))",
                        self.identity.gateway_id,
                        settings.ble.transport,
                        len(uplinks),
                    )
                    self.ready.set()
                    if on_ready is not None:
                        on_ready(self)
        finally:
            sdnotify.notify("STOPPING=1")
            await store.close()

    async def _start_http(
        self,
        stack: AsyncExitStack,
        store: AsyncStore,
        signer: Signer,
        ingest: Ingest,
        manager: SensorManager,
        patient: PatientRef | None,
    ) -> None:
        """The assistant (llama.cpp worker, retrieval, consultations) behind the HTTP API."""
        from gateway.assistant.consultation import ConsultationService, sensor_device_resolver
        from gateway.assistant.engine import Engine
        from gateway.rag.embedder import Embedder
        from gateway.rag.retriever import Retriever
        from gateway.web.app import bound_port, build_app, resolve_token, serve
        from gateway.web.consultations import setup_consultations

        settings = self.settings
        engine = Engine(settings.assistant, data_dir=self.data_dir, progress=False)
        await engine.start()
        stack.push_async_callback(engine.close)
        retriever = await stack.enter_async_context(Retriever(self.data_dir, settings.rag))
        self.consultations = ConsultationService(
            engine,
            manager,
            gateway=self.info,
            signer=signer,
            store=store,
            retriever=retriever,
            patient=patient,
            settings=settings.consultation,
            devices=sensor_device_resolver(manager.statuses, ingest.sensor_info),
            codes_by_kind={kind: p.loinc for kind, p in self.profiles.items()},
            archive_dir=self.data_dir / "consultations",
        )
        app = build_app(
            token=resolve_token(settings.http, self.data_dir),
            max_body_bytes=settings.http.max_body_bytes,
            engine=engine,
            embedder=Embedder.from_settings(settings.rag),
            setup=[setup_consultations(self.consultations)],
        )
        runner = await serve(app, settings.http.host, settings.http.port)
        stack.push_async_callback(runner.cleanup)
        self.http_port = bound_port(runner)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        while True:
            sdnotify.notify("WATCHDOG=1", f"STATUS={self.status_line()}")
            await asyncio.sleep(interval)

    def status_line(self) -> str:
        """The systemd status line: the radio when it is down, else the sensors streaming."""
        if self.manager is None:
            return "starting"
        radio = self.manager.radio
        if radio.state == "down":
            return f"radio down: {radio.reason}"
        statuses = self.manager.statuses()
        streaming = sum(1 for s in statuses if s.state == "streaming")
        return f"{streaming}/{len(statuses)} sensors streaming"

    async def summary(self) -> dict[str, Any]:
        """The headless demo's JSON summary (devices, counts by code, counters, outbox)."""
        statuses = self.manager.statuses() if self.manager is not None else []
        store = self.store
        counts = await store.observation_counts() if store is not None else {}
        outbox = await store.outbox_stats() if store is not None else {}
        api = (
            {
                "url": f"http://{self.settings.http.host}:{self.http_port}",
                "token_file": str(self.settings.http.token_file or self.data_dir / API_TOKEN_FILE),
            }
            if self.http_port is not None
            else None
        )
        return {
            "gateway_id": self.identity.gateway_id,
            "api": api,
            "radio": self.manager.radio.as_json() if self.manager is not None else None,
            "devices": [
                {
                    "address": s.address,
                    "name": s.name,
                    "kind": s.kind,
                    "state": str(s.state),
                    "observations": s.observations,
                    "battery": s.battery,
                    "decode_errors": s.decode_errors,
                    "reconnects": s.reconnects,
                }
                for s in sorted(statuses, key=lambda s: (s.kind, s.address))
            ],
            "observations": dict(sorted(counts.items())),
            "decode_errors": sum(s.decode_errors for s in statuses),
            "reconnects": sum(s.reconnects for s in statuses),
            "outbox": {k: outbox.get(k, 0) for k in ("pending", "delivered", "dead")}
            | {"quota_alarm": bool(outbox.get("quota_alarm", False))},
        }
