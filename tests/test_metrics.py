"""``GET /metrics`` scraped from a running gateway and parsed with prometheus-client's parser."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.assistant.stream import Finished, Usage
from gateway.web.metrics import GatewayMetrics
from tests.harness import running_gateway, wait_until

TOKEN = "metrics-test-service-token-0123456789"
KINDS = ["ecg", "thermo"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(parsed: dict, metric: str, **labels: str) -> float:
    return parsed[(metric, tuple(sorted(labels.items())))]


async def test_the_metrics_of_a_running_gateway(tmp_path: Path) -> None:
    http = {"enabled": True, "port": 0, "token": TOKEN}
    async with running_gateway(
        tmp_path,
        KINDS,
        seed=31,
        overrides={"thermo.interval_s": 0.5},
        http=http,
        assistant={"enabled": False},
    ) as run:
        await wait_until(
            lambda: all(run.status(k).latencies_s for k in KINDS), 30, "stored observations"
        )
        base = f"http://127.0.0.1:{run.gateway.http_port}"
        async with aiohttp.ClientSession(base) as session:
            async with session.get("/api/sensors", headers={"Authorization": f"Bearer {TOKEN}"}):
                pass
            async with session.get(
                "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as answer:
                assert answer.status == 200
                assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                parsed = samples(await answer.text())
            async with session.get("/metrics") as anonymous:
                assert anonymous.status == 401
    for kind in KINDS:
        status = run.status(kind)
        labels = {"address": status.address, "kind": kind, "name": status.name}
        assert value(parsed, "bedside_sensor_up", **labels) == 1
        assert value(parsed, "bedside_sensor_state", **labels, state="streaming") == 1
        assert value(parsed, "bedside_sensor_notifications_total", **labels) > 0
        assert value(parsed, "bedside_sensor_battery_percent", **labels) == 95
        assert value(parsed, "bedside_sensor_rssi_dbm", **labels) < 0
        assert value(parsed, "bedside_notification_to_stored_seconds_count", kind=kind) > 0
    assert value(parsed, "bedside_outbox_items", state="held") == 0
    assert (
        value(
            parsed, "bedside_http_requests_total", method="GET", route="/api/sensors", status="200"
        )
        == 1
    )


def test_assistant_requests_count_tokens_and_time_to_first_token() -> None:
    metrics = GatewayMetrics()
    metrics.observe_finished(
        Finished("stop", Usage(120, 20, 30), None, "text", queued_s=0.1, prompt_s=0.2, decode_s=1)
    )
    metrics.observe_finished(Finished("cancelled", Usage(0, 0, 0), None, ""))
    metrics.queued = lambda: 2
    parsed = samples(generate_latest(metrics.registry).decode())
    assert value(parsed, "bedside_assistant_requests_total", finish_reason="stop") == 1
    assert value(parsed, "bedside_assistant_requests_total", finish_reason="cancelled") == 1
    assert value(parsed, "bedside_assistant_prompt_tokens_total") == 120
    assert value(parsed, "bedside_assistant_prompt_tokens_evaluated_total") == 20
    assert value(parsed, "bedside_assistant_completion_tokens_total") == 30
    assert value(parsed, "bedside_assistant_time_to_first_token_seconds_count") == 1
    assert value(parsed, "bedside_assistant_queue_depth") == 2
    assert value(parsed, "bedside_assistant_time_to_first_token_seconds_sum") == pytest.approx(0.3)
