"""The composition root: builds every service from the validated settings and runs them.

One event loop, one top-level ``asyncio.TaskGroup``, every task named: the sensor manager (scan +
one session per sensor), one task per uplink and one outbox pump per uplink, the systemd
watchdog, the patient watch (``patient-watch``: applies a claim of held readings made by
``bedside patient set --claim-held``), and the assistant loader while the assistant loads. SQLite
work runs in the store's own threads.

The HTTP API is served before anything slow: ``/healthz`` answers at once, with ``"assistant":
"loading"`` while the ``assistant-loader`` task loads the engine (llama.cpp), the retriever and
the embedder in their threads, then ``"ready"`` (or ``"failed"`` with one sentence); the routes
that need the assistant answer 503 until then. With ``assistant.enabled = false`` nothing of the
assistant is imported and those routes answer 503 "disabled". The assistant loads only to be
served: with ``http.enabled = false`` it does not load.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import __version__, sdnotify
from gateway.assistant.archive import ConsultationArchive
from gateway.ble.manager import SensorManager
from gateway.ble.registry import SENSORS_FILE, SensorRegistry
from gateway.ble.settings import BONDS_FILE
from gateway.ble.transport import given_link, open_link
from gateway.errors import BedsideError
from gateway.fhir.device import GatewayInfo, gateway_full_url
from gateway.fhir.observation import PatientRef
from gateway.firmware.service import FirmwareService
from gateway.forward.inbound import ListeningMqttUplink
from gateway.forward.service import Forwarding, build_signer, build_uplinks, open_store
from gateway.forward.settings import ForwardSettings
from gateway.identity import load_identity, prepare_data_dir
from gateway.logbuffer import RecentLog
from gateway.observations import Ingest
from gateway.patients.assignment import PatientAssignment
from gateway.patients.service import PatientService
from gateway.profiles import load_profiles
from gateway.rag.settings import EMBEDDED_MODEL
from gateway.review.audit import AuditForwarder, AuditTrail
from gateway.review.configuration import audit_configuration
from gateway.review.remote import review_handler
from gateway.review.service import ReviewService
from gateway.store.keeper import StoreKeeper
from gateway.users import UserDirectory
from gateway.web.auth import API_TOKEN_FILE
from gateway.web.live import LiveHub
from gateway.web.local import write_api_url
from gateway.web.metrics import GatewayMetrics

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.assistant.backend import LlmEngine
    from gateway.assistant.consultation import ConsultationService, RetrieverLike
    from gateway.ble.bumble import BleakBackends
    from gateway.ble.measure import ObservationEvent
    from gateway.ble.transport import LinkSecurity
    from gateway.config import Settings
    from gateway.forward.pump import Uplink
    from gateway.forward.signing import Signer
    from gateway.profiles import DeviceProfile
    from gateway.store.aio import AsyncStore
    from gateway.web.embeddings import EmbedderLike
    from gateway.web.services import AssistantServices, HealthCheck
    from gateway.web.tls import ServerCertificate

log = logging.getLogger(__name__)

CONSULTATIONS_DIR = "consultations"
GIVEN_RADIO = "in-process"  # the radio's name when the caller hands over open backends (demo)


@dataclass(frozen=True)
class AssistantParts:
    """What loading the assistant yields: the started engine, the retriever consultations search
    (None: none), and the embedding backend of ``/v1/embeddings`` with its model id."""

    engine: LlmEngine
    retriever: RetrieverLike | None = None
    embedder: EmbedderLike | None = None
    embedder_name: str = EMBEDDED_MODEL


AssistantLoader = Callable[[AsyncExitStack], Awaitable[AssistantParts]]
"""Loads the assistant's parts, registering their closing on the given stack (closed after the
HTTP server stopped). :meth:`Gateway.load_models` is the gateway's; tests inject their own."""


class Gateway:
    """The running service. ``await gateway.run()`` until cancelled."""

    def __init__(
        self,
        settings: Settings,
        *,
        profiles: dict[str, DeviceProfile] | None = None,
        assistant_loader: AssistantLoader | None = None,
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
        self.firmware: FirmwareService | None = None
        self.ingest: Ingest | None = None
        self.store: AsyncStore | None = None
        self.keeper: StoreKeeper | None = None  # retention, while the store is open
        self.patients: PatientService | None = None
        self.users: UserDirectory | None = None
        self.audit: AuditTrail | None = None
        self.reviews: ReviewService | None = None
        self.forwarding: Forwarding | None = None
        self.ready = asyncio.Event()
        self.consultations: ConsultationService | None = None
        self.http_port: int | None = None
        self.web_app: web.Application | None = None  # while the API is served
        self.live: LiveHub | None = None  # the page's live stream
        self.metrics = GatewayMetrics()
        self.key_id: str | None = None  # the signing key's thumbprint, once loaded
        self.tls: ServerCertificate | None = None  # while the API is served over TLS
        self.recent_log = RecentLog()
        self.started = time.monotonic()
        self.assistant: AssistantServices | None = None  # while the API is served
        self.assistant_settled = asyncio.Event()  # the assistant is ready, failed or not loading
        self._load_assistant = assistant_loader or self.load_models

    async def run(
        self,
        *,
        backends: BleakBackends | None = None,
        security: LinkSecurity | None = None,
        on_ready: Callable[[Gateway], None] | None = None,
    ) -> None:
        """Run every service until cancelled; ``backends`` (an open adapter's, with its pairing
        and bonds as ``security``) override the configured transport."""
        root = logging.getLogger()
        root.addHandler(self.recent_log)
        try:
            await self._run(backends, security, on_ready)
        finally:
            root.removeHandler(self.recent_log)

    async def _run(
        self,
        backends: BleakBackends | None,
        security: LinkSecurity | None,
        on_ready: Callable[[Gateway], None] | None,
    ) -> None:
        settings = self.settings
        signer = build_signer(self.data_dir, {"reference": gateway_full_url(self.info)})
        self.key_id = signer.kid
        uplinks = build_uplinks(self.forward_settings)
        store = await sdnotify.while_starting(
            open_store(self.data_dir, self.forward_settings, signer, uplinks),
            "opening the database (an upgrade of a large one can take minutes)",
        )
        self.store, self.keeper = store, self._keeper(store)
        try:
            async with AsyncExitStack() as stack:
                await audit_configuration(
                    self._open_reviews(stack, store, signer, uplinks), self.data_dir, settings
                )
                configured = (
                    PatientRef(
                        settings.patient.reference,
                        settings.patient.identifier_system,
                        settings.patient.identifier_value,
                    )
                    if settings.patient is not None
                    else None
                )
                patients = PatientService(
                    PatientAssignment(self.data_dir, configured),
                    store,
                    on_change=self._patient_changed,
                )
                self.patients = patients
                await patients.refresh()  # a claim made while the gateway was stopped
                ingest = Ingest(
                    store,
                    self.info,
                    self.profiles,
                    settings.tz,
                    patients.current,
                    on_held=patients.note_held,
                )
                self.ingest = ingest
                ingest.on_refused = self.keeper.count_refused
                manager = SensorManager(
                    self.profiles,
                    ingest,
                    registry=SensorRegistry.load(
                        self.data_dir / SENSORS_FILE,
                        frozenset(settings.ble.allow),
                        auto_accept=settings.ble.auto_accept,
                    ),
                    forget_lost_after=settings.ble.forget_lost_after,
                    on_latency=self.metrics.observe_latency,
                    radio=(
                        given_link(backends, security)
                        if backends is not None
                        else functools.partial(
                            open_link, settings.ble.transport, bonds=self.data_dir / BONDS_FILE
                        )
                    ),
                    transport=settings.ble.transport if backends is None else GIVEN_RADIO,
                    last_record_time=store.last_record_time,
                    tz=settings.tz,
                )
                self.firmware = self._open_firmware(manager)
                self.live = LiveHub(self.sensor_rows)
                self.metrics.manager, self.metrics.live = manager, self.live
                ingest.on_observation = functools.partial(
                    _to_both, manager.observation_ingested, self.live.publish
                )
                self.manager = manager
                self.forwarding = Forwarding(store, uplinks, self.forward_settings.outbox)
                self.metrics.forwarding = self.forwarding
                models = await self._serve_http(stack) if settings.http.enabled else None
                # stop firmware updates before the API waits for its requests to end
                stack.push_async_callback(self.firmware.close)
                _freeze_heap()
                async with asyncio.TaskGroup() as tasks:
                    self.forwarding.start(tasks)
                    tasks.create_task(manager.run(), name="ble-manager")
                    tasks.create_task(self._watchdog(), name="systemd-watchdog")
                    tasks.create_task(patients.run(), name="patient-watch")
                    tasks.create_task(self.keeper.run(), name="store-keeper")
                    if self.audit is not None:
                        forwarder = AuditForwarder(store, self.audit, self.identity.gateway_id)
                        tasks.create_task(forwarder.run(), name="audit-forwarder")
                    if models is not None and settings.assistant.enabled:
                        loading = self._assistant_task(models, signer, store, ingest, manager)
                        tasks.create_task(loading, name="assistant-loader")
                    else:
                        self.assistant_settled.set()
                    sdnotify.notify("READY=1", f"STATUS=gateway {self.identity.gateway_id} up")
                    log.info(
                        "gateway %s running (transport %s, %d uplink(s))",
                        self.identity.gateway_id,
                        manager.radio.transport,
                        len(uplinks),
                    )
                    self.ready.set()
                    if on_ready is not None:
                        on_ready(self)
        finally:
            sdnotify.notify("STOPPING=1")
            await store.close()

    def _open_reviews(
        self, stack: AsyncExitStack, store: AsyncStore, signer: Signer, uplinks: Sequence[Uplink]
    ) -> AuditTrail:
        """The users (whose keys sign decisions), the audit trail (returned) and the drafts under
        review, decided through the API or over MQTT (the MQTT uplink listens on ``reviews``)."""
        users = UserDirectory(self.data_dir)
        stack.callback(users.close)
        self.users = users
        self.audit = AuditTrail(store)
        self.reviews = ReviewService(
            store,
            gateway_id=self.identity.gateway_id,
            signer=signer,
            keys=users,
            transcripts=ConsultationArchive(self.data_dir / CONSULTATIONS_DIR).load,
            max_age_s=self.settings.review.max_decision_age_s,
            skew_s=self.settings.review.clock_skew_s,
            audit_written=self.audit.written.set,
        )
        for uplink in uplinks:
            if isinstance(uplink, ListeningMqttUplink):
                uplink.on_review = review_handler(self.reviews, self.audit)
        return self.audit

    def _open_firmware(self, manager: SensorManager) -> FirmwareService:
        """Sensor firmware updates (audited, counted)."""
        audit = self.audit.record if self.audit is not None else None
        return FirmwareService(
            manager, self.settings.firmware, audit=audit, on_finished=self.metrics.firmware_done
        )

    def _keeper(self, store: AsyncStore) -> StoreKeeper:
        """Retention and the disk budget of the store, its state in the metrics."""
        keeper = StoreKeeper(store, self.settings.store)
        self.metrics.storage = keeper.as_json
        return keeper

    def sensor_rows(self) -> list[dict[str, Any]]:
        """The sensors as ``/api/sensors`` and the page show them, with their firmware."""
        if self.manager is None:
            return []
        rows = self.manager.sensors()
        return self.firmware.annotate(rows) if self.firmware is not None else rows

    def health_checks(self) -> dict[str, HealthCheck]:
        """The components ``/healthz`` reports besides the assistant: name → a callable returning
        JSON-able data, called on every request (``gateway.web.services.HealthCheck``)."""
        checks: dict[str, HealthCheck] = {}
        if self.manager is not None:
            checks["radio"] = self.manager.radio.as_json
        if self.patients is not None:
            checks["patient"] = self.patients.as_json
        if self.keeper is not None:
            checks["storage"] = self.keeper.as_json
        return checks

    def _patient_changed(self, patient: PatientRef | None) -> None:
        """A consultation's draft report names the patient assigned when it is drafted."""
        if self.consultations is not None:
            self.consultations.patient = patient

    async def _serve_http(self, stack: AsyncExitStack) -> AsyncExitStack:
        """Serve the API now, the assistant ``"loading"`` (or ``"disabled"``); returns the stack
        the assistant's parts close on, closed after the server has stopped."""
        from gateway.hosts import is_loopback
        from gateway.web.app import bound_port, build_app, resolve_token, serve
        from gateway.web.consultations import setup_consultations
        from gateway.web.diagnostics import Diagnostics, setup_diagnostics
        from gateway.web.firmware import setup_firmware
        from gateway.web.metrics import setup_metrics
        from gateway.web.page import setup_page
        from gateway.web.patient import setup_patient
        from gateway.web.reviews import setup_reviews
        from gateway.web.sensors import setup_sensors
        from gateway.web.services import AssistantServices
        from gateway.web.status import setup_status
        from gateway.web.tls import server_certificate

        settings = self.settings
        assert self.patients is not None
        assert self.users is not None
        assert self.store is not None
        assert self.reviews is not None
        if not self.users.users():
            log.warning(
                "no user accounts yet: the service token works; create the first admin with: "
                "bedside users add NAME --role admin"
            )
        models = await stack.enter_async_context(AsyncExitStack())
        self.assistant = AssistantServices("loading" if settings.assistant.enabled else "disabled")
        app = build_app(
            token=resolve_token(settings.http, self.data_dir),
            users=self.users,
            max_body_bytes=settings.http.max_body_bytes,
            assistant=self.assistant,
            health=self.health_checks(),
            setup=[
                setup_consultations(),
                setup_reviews(self.reviews, self.audit, self.store),
                setup_patient(self.patients),
                *([setup_sensors(self.manager, self.sensor_rows)] if self.manager else []),
                *([setup_firmware(self.firmware)] if self.firmware is not None else []),
                *([setup_page(self.live)] if self.live is not None else []),
                setup_metrics(self.metrics),
                setup_status(settings, self.manager, self.state, self._retry_dead),
                setup_diagnostics(
                    Diagnostics(
                        settings,
                        self.recent_log,
                        self.state,
                        self.manager.sensors if self.manager is not None else list,
                        self.metrics,
                        self.manager.radio.as_json if self.manager is not None else None,
                    )
                ),
            ],
            metrics=self.metrics,
            rate_limits=settings.http.rate_limits,
        )
        self.web_app = app
        self.tls = server_certificate(settings.http, self.data_dir)
        runner = await serve(
            app,
            settings.http.host,
            settings.http.port,
            ssl_context=self.tls.context() if self.tls is not None else None,
        )
        stack.push_async_callback(runner.cleanup)
        self.http_port = bound_port(runner)
        write_api_url(self.data_dir, settings.http.host, self.http_port, tls=self.tls is not None)
        if self.tls is not None:
            kind = "self-signed" if self.tls.self_signed else "configured"
            log.info("TLS certificate (%s) SHA-256 %s", kind, self.tls.fingerprint)
        announce = settings.http.zeroconf
        if announce is None:
            announce = not is_loopback(settings.http.host)
        if announce:
            from gateway.web.advertise import announce_on_lan

            await announce_on_lan(
                stack,
                gateway_id=self.identity.gateway_id,
                host=settings.http.host,
                port=self.http_port,
                key_id=self.key_id,
                tls_fingerprint=self.tls.fingerprint if self.tls is not None else None,
            )
        return models

    async def load_models(self, stack: AsyncExitStack) -> AssistantParts:
        """The configured engine, retriever and embedder, loaded (seconds each, in threads)."""
        from gateway.assistant.backend import make_engine
        from gateway.rag.embedder import Embedder, limit_cpu_threads
        from gateway.rag.errors import RagError
        from gateway.rag.retriever import Retriever

        settings = self.settings
        engine = make_engine(settings.assistant, data_dir=self.data_dir, progress=False)
        engine.on_finished = self.metrics.observe_finished
        await engine.start()
        self.metrics.queued = lambda: engine.queued
        stack.push_async_callback(engine.close)
        retriever = await stack.enter_async_context(Retriever(self.data_dir, settings.rag))
        embedder = Embedder.from_settings(settings.rag)
        try:
            await asyncio.to_thread(limit_cpu_threads, settings.rag.service_threads)
            await retriever.warm_up()
            await asyncio.to_thread(embedder.load)
        except RagError as exc:  # consultations answer without retrieval; /v1/embeddings fails
            log.warning("retrieval is not available: %s", exc)
        return AssistantParts(engine, retriever, embedder, settings.rag.model)

    async def _assistant_task(
        self,
        stack: AsyncExitStack,
        signer: Signer,
        store: AsyncStore,
        ingest: Ingest,
        manager: SensorManager,
    ) -> None:
        """Load the assistant behind the served API; it becomes ready, or failed."""
        from gateway.assistant.consultation import ConsultationService, sensor_device_resolver
        from gateway.web.embeddings import EmbeddingService

        assistant = self.assistant
        assert assistant is not None
        try:
            try:
                parts = await self._load_assistant(stack)
            except Exception as exc:  # noqa: BLE001 - the gateway runs on without the assistant
                _report_failure(assistant, exc)
                return
            self.consultations = ConsultationService(
                parts.engine,
                manager,
                gateway=self.info,
                signer=signer,
                store=store,
                retriever=parts.retriever,
                patient=self.patients.current() if self.patients is not None else None,
                settings=self.settings.consultation,
                devices=sensor_device_resolver(manager.statuses, ingest.sensor_info),
                profiles=self.profiles,
                archive_dir=self.data_dir / CONSULTATIONS_DIR,
                drafts=self.reviews,
            )
            embeddings = (
                EmbeddingService(parts.embedder, parts.embedder_name)
                if parts.embedder is not None
                else None
            )
            assistant.ready(parts.engine, embeddings=embeddings, consultations=self.consultations)
            log.info("assistant ready (%s)", parts.engine.model_info.name)
            _freeze_heap()
        finally:
            self.assistant_settled.set()

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

    async def _retry_dead(self) -> int:
        """Re-queue what the uplinks refused; the store wakes their pumps."""
        assert self.store is not None
        return await self.store.retry_dead()

    async def state(self) -> dict[str, Any]:
        """The gateway as the technician's page shows it (``GET /api/gateway``)."""
        usage = await self.store.outbox_usage() if self.store is not None else None
        disk = shutil.disk_usage(self.data_dir)
        uplinks: dict[str, Any] = {}
        if self.forwarding is not None:
            uplinks = self.forwarding.status()
            for uplink in self.forwarding.uplinks:
                uplinks[uplink.name]["connected"] = getattr(uplink, "connected", None)
                uplinks[uplink.name]["since"] = getattr(uplink, "since", None)
        assistant = self.assistant.state if self.assistant is not None else "disabled"
        return {
            "gateway_id": self.identity.gateway_id,
            "version": __version__,
            "key_id": self.key_id,
            "uptime_s": round(time.monotonic() - self.started),
            "timezone": self.settings.timezone,
            "radio": self.manager.radio.as_json() if self.manager is not None else None,
            "patient": self.patients.as_json() if self.patients is not None else None,
            "assistant": assistant,
            "uplinks": uplinks,
            "outbox": None if usage is None else usage.as_dict() | {"held": usage.held},
            "disk": {
                "free_bytes": disk.free,
                "total_bytes": disk.total,
                "quota_bytes": self.settings.outbox.quota_bytes,
            },
            "storage": self.keeper.as_json() if self.keeper is not None else None,
            "live_clients": self.live.clients if self.live is not None else 0,
        }

    async def summary(self) -> dict[str, Any]:
        """The headless demo's JSON summary (devices, counts by code, counters, outbox, storage)."""
        statuses = self.manager.statuses() if self.manager is not None else []
        store = self.store
        counts = await store.observation_counts() if store is not None else {}
        usage = await store.outbox_usage() if store is not None else None
        outbox: dict[str, Any] = {} if usage is None else usage.as_dict() | {"held": usage.held}
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
                    "undated": s.undated,
                    "clock_offset_s": s.clock_offset_s,
                }
                for s in sorted(statuses, key=lambda s: (s.kind, s.address))
            ],
            "observations": dict(sorted(counts.items())),
            "decode_errors": sum(s.decode_errors for s in statuses),
            "reconnects": sum(s.reconnects for s in statuses),
            "patient": self.patients.as_json() if self.patients is not None else None,
            "outbox": {k: outbox.get(k, 0) for k in ("pending", "delivered", "dead", "held")}
            | {"quota_alarm": bool(outbox.get("quota_alarm", False))},
            "storage": self.keeper.as_json() if self.keeper is not None else None,
        }


def _freeze_heap() -> None:
    """Move everything loaded so far out of the collector's reach: it lives as long as the
    process, and a full collection (300 ms with torch and llama.cpp loaded, measured by
    bench/sensors.py) would stall every session's ingest at once."""
    gc.collect()
    gc.freeze()


def _report_failure(assistant: AssistantServices, exc: BaseException) -> None:
    reason = _one_sentence(exc)
    if isinstance(exc, BedsideError | OSError):
        log.error("the assistant could not load: %s", reason)
    else:
        log.error("the assistant could not load: %s", reason, exc_info=exc)
    assistant.fail(reason)


def _one_sentence(exc: BaseException) -> str:
    """Why loading failed, as one line: the project's own message, an OS error's reason, or the
    error's type (the log has the traceback)."""
    if isinstance(exc, BedsideError):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return f"{exc.filename}: {reason}" if exc.filename else reason
    return f"unexpected {type(exc).__name__}; the gateway log has the details"


def _to_both(
    first: Callable[[ObservationEvent], None],
    second: Callable[[ObservationEvent], None],
    event: ObservationEvent,
) -> None:
    """One observation event to measure-on-demand and to the page's live stream."""
    first(event)
    second(event)
