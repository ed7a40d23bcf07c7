"""``GET /metrics``: the gateway in the Prometheus text format (prometheus-client), for the
service token and admins (docs/contracts.md, "Users and roles"; the metric list is in
"Metrics").

The sensors, uplinks, outbox and live-page clients are read when scraped (a collector over the
running parts); the notification → stored latency, the HTTP requests and the assistant's tokens
and time to first token are counted as they happen. The registry is the gateway's own, not
prometheus-client's global one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.assistant.stream import Finished
    from gateway.ble.manager import SensorManager
    from gateway.firmware.update import UpdateJob
    from gateway.forward.service import Forwarding
    from gateway.store.models import OutboxStats
    from gateway.web.live import LiveHub

Handler = Callable[[web.Request], Any]
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TTFT_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SENSOR_LABELS: Final = ("address", "kind", "name")


class GatewayMetrics:
    """The gateway's registry: counters fed as things happen, and the running parts it reads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.manager: SensorManager | None = None
        self.forwarding: Forwarding | None = None
        self.live: LiveHub | None = None
        self.queued: Callable[[], int] | None = None  # the assistant's waiting requests
        self.storage: Callable[[], Mapping[str, Any]] | None = None  # the store keeper's state
        self.outbox: OutboxStats | None = None  # refreshed before each scrape
        self.latency = Histogram(
            "bedside_notification_to_stored_seconds",
            "Time from a sensor's notification to its Observations stored and queued.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "bedside_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.firmware_updates = Counter(
            "bedside_firmware_updates",
            "Sensor firmware updates finished, by sensor kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.assistant_requests = Counter(
            "bedside_assistant_requests",
            "Completions the assistant finished, by finish reason.",
            ["finish_reason"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "bedside_assistant_prompt_tokens",
            "Prompt tokens of finished requests (evaluated or reused from the KV cache).",
            registry=self.registry,
        )
        self.tokens_evaluated = Counter(
            "bedside_assistant_prompt_tokens_evaluated",
            "Prompt tokens that had to be evaluated (the rest were reused).",
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "bedside_assistant_completion_tokens",
            "Tokens generated.",
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "bedside_assistant_time_to_first_token_seconds",
            "Queue plus prompt time of a finished request.",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Running(self))

    def firmware_done(self, kind: str, job: UpdateJob) -> None:
        """Count a finished firmware update."""
        self.firmware_updates.labels(kind, str(job.outcome)).inc()

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.latency.labels(kind).observe(seconds)

    def observe_finished(self, finished: Finished) -> None:
        """An assistant request ended (called on the engine's thread; the counters are safe)."""
        usage = finished.usage
        self.assistant_requests.labels(finished.finish_reason).inc()
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.tokens_evaluated.inc(usage.tokens_evaluated)
        self.completion_tokens.inc(usage.completion_tokens)
        if usage.completion_tokens:
            self.time_to_first_token.observe(finished.queued_s + finished.prompt_s)

    def middleware(self) -> Middleware:
        """Counts every answer by its route's pattern (not the raw path: bounded labels)."""

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            status = 500
            try:
                response: web.StreamResponse = await handler(request)
            except web.HTTPException as exc:
                status = exc.status
                raise
            else:
                status = response.status
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                self.http_requests.labels(request.method, route, str(status)).inc()
            return response

        return count


class _Running(Collector):
    """The state of the running parts, read at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._sensors()
        yield from self._uplinks()
        yield from self._outbox()
        if self._metrics.queued is not None:
            queue = GaugeMetricFamily(
                "bedside_assistant_queue_depth", "Requests waiting for the assistant's engine."
            )
            queue.add_metric([], self._metrics.queued())
            yield queue
        if self._metrics.storage is not None:
            yield from self._storage(self._metrics.storage())
        if self._metrics.live is not None:
            clients = GaugeMetricFamily(
                "bedside_live_clients", "Pages connected to the live stream."
            )
            clients.add_metric([], self._metrics.live.clients)
            yield clients

    @staticmethod
    def _storage(storage: Mapping[str, Any]) -> Iterator[Metric]:
        for name, key, text in (
            ("bedside_store_used_bytes", "used_bytes", "Bytes of the database holding data."),
            ("bedside_store_budget_bytes", "budget_bytes", "The database's budget (max_bytes)."),
        ):
            if storage.get(key) is not None:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], storage[key])
                yield gauge
        alarm = GaugeMetricFamily(
            "bedside_store_alarm", "1 while the storage alarm is raised (alarm or full)."
        )
        alarm.add_metric([], 0 if storage.get("state") == "ok" else 1)
        yield alarm
        pruned = CounterMetricFamily(
            "bedside_store_pruned_observations", "Observations let go by retention or budget."
        )
        pruned.add_metric([], storage.get("pruned_observations", 0))
        yield pruned
        refused = CounterMetricFamily(
            "bedside_store_refused_readings", "Readings refused while the store was full."
        )
        refused.add_metric([], storage.get("refused_readings", 0))
        yield refused

    def _sensors(self) -> Iterator[Metric]:
        manager = self._metrics.manager
        if manager is None:
            return
        up = GaugeMetricFamily(
            "bedside_sensor_up", "1 while the sensor streams, else 0.", labels=SENSOR_LABELS
        )
        state = GaugeMetricFamily(
            "bedside_sensor_state",
            "The session state (1 for the current one).",
            labels=(*SENSOR_LABELS, "state"),
        )
        battery = GaugeMetricFamily(
            "bedside_sensor_battery_percent", "Battery level.", labels=SENSOR_LABELS
        )
        rssi = GaugeMetricFamily(
            "bedside_sensor_rssi_dbm", "Signal of the last advertisement.", labels=SENSOR_LABELS
        )
        counters = {
            name: CounterMetricFamily(f"bedside_sensor_{name}", text, labels=SENSOR_LABELS)
            for name, text in (
                ("notifications", "Notifications received."),
                ("observations", "Measurements decoded."),
                ("decode_errors", "Malformed values."),
                ("reconnects", "Reconnections."),
                ("undated", "Readings kept but not sent: no true date."),
            )
        }
        for status in manager.statuses():
            labels = [status.address, status.kind, status.name]
            up.add_metric(labels, 1.0 if str(status.state) == "streaming" else 0.0)
            state.add_metric([*labels, str(status.state)], 1.0)
            if status.battery is not None:
                battery.add_metric(labels, status.battery)
            seen = manager.rssi(status.address)
            if seen is not None:
                rssi.add_metric(labels, seen)
            for name, family in counters.items():
                family.add_metric(labels, getattr(status, name))
        yield from (up, state, battery, rssi, *counters.values())

    def _uplinks(self) -> Iterator[Metric]:
        forwarding = self._metrics.forwarding
        if forwarding is None:
            return
        connected = GaugeMetricFamily(
            "bedside_uplink_connected", "1 while the uplink is connected.", labels=["uplink"]
        )
        counted = {
            name: CounterMetricFamily(f"bedside_uplink_{name}", text, labels=["uplink"])
            for name, text in (
                ("sent", "Bundles sent."),
                ("delivered", "Bundles acknowledged."),
                ("retried", "Sends retried."),
                ("dead", "Bundles refused for good."),
            )
        }
        status: Mapping[str, Mapping[str, Any]] = forwarding.status()
        for uplink in forwarding.uplinks:
            is_up = getattr(uplink, "connected", None)
            if is_up is not None:
                connected.add_metric([uplink.name], 1.0 if is_up else 0.0)
            for name, family in counted.items():
                family.add_metric([uplink.name], status[uplink.name][name])
        yield from (connected, *counted.values())

    def _outbox(self) -> Iterator[Metric]:
        stats = self._metrics.outbox
        if stats is None:
            return
        items = GaugeMetricFamily(
            "bedside_outbox_items", "Outbox items by state.", labels=["state"]
        )
        for name in ("pending", "delivered", "dead", "held"):
            items.add_metric([name], getattr(stats, name))
        yield items


METRICS: Final[web.AppKey[GatewayMetrics]] = web.AppKey("metrics", GatewayMetrics)


async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    forwarding = metrics.forwarding
    if forwarding is not None:
        metrics.outbox = await forwarding.store.outbox_usage()
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE}
    )


def setup_metrics(metrics: GatewayMetrics) -> Callable[[web.Application], None]:
    def setup(app: web.Application) -> None:
        app[METRICS] = metrics
        app.router.add_get("/metrics", metrics_page)

    return setup
