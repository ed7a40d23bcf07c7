"""Forwarding settings: parsed values and the messages of rejected ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.forward.settings import (
    ForwardSettings,
    HttpsSettings,
    MqttSettings,
    OutboxSettings,
)


def test_mqtt_url_forms(tmp_path: Path) -> None:
    plain = MqttSettings(url="mqtt://broker.example")
    assert (plain.host, plain.port, plain.tls, plain.topic_prefix) == (
        "broker.example",
        1883,
        False,
        "bedside",
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    secure = MqttSettings(url="mqtts://10.0.0.5:8884", ca_file=ca, topic_prefix="site/ward-3")
    assert (secure.host, secure.port, secure.tls) == ("10.0.0.5", 8884, True)
    assert MqttSettings(url="mqtts://b").port == 8883


def test_https_forms() -> None:
    assert HttpsSettings(base_url="https://fhir.example/r4/").base_url == "https://fhir.example/r4"
    assert HttpsSettings(base_url="http://127.0.0.1:8080/fhir").base_url.startswith("http://")
    assert HttpsSettings(base_url="http://localhost/fhir").base_url == "http://localhost/fhir"


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (MqttSettings, {"url": "tcp://b:1883"}, "expected mqtt://host:port or mqtts://host:port"),
        (MqttSettings, {"url": "mqtt://:1883"}, "the URL names no host"),
        (MqttSettings, {"url": "mqtt://b:99999"}, "the port is not a number in 1..65535"),
        (MqttSettings, {"url": "mqtt://b/topic"}, "no path, query or fragment"),
        (MqttSettings, {"url": "mqtt://b", "topic_prefix": "a/+/b"}, "without '+', '#'"),
        (MqttSettings, {"url": "mqtt://b", "topic_prefix": "a//b"}, "empty levels"),
        (MqttSettings, {"url": "mqtts://b", "ca_file": "/nonexistent/ca.pem"}, "ca_file: "),
        (MqttSettings, {"url": "mqtt://b", "ca_file": "CA"}, "need an mqtts:// URL"),
        (MqttSettings, {"url": "mqtts://b", "key_file": "KEY"}, "key_file is set without"),
        (MqttSettings, {"url": "mqtt://b", "password": "pw"}, "password is set without username"),
        (MqttSettings, {"url": "mqtt://b", "inflight_window": 0}, "greater than or equal to 1"),
        (HttpsSettings, {"base_url": "ftp://x"}, "expected an https:// FHIR base URL"),
        (HttpsSettings, {"base_url": "http://fhir.example/r4"}, "only allowed to a loopback"),
        (HttpsSettings, {"base_url": "https://f/r4?x=1"}, "no query or fragment"),
        (HttpsSettings, {"base_url": "http://127.0.0.1/f", "ca_file": "CA"}, "need an https://"),
        (OutboxSettings, {"quota_bytes": 1000}, "greater than or equal to 1048576"),
        (ForwardSettings, {"gateway_id": "ward/3"}, "one MQTT topic level"),
        (ForwardSettings, {"gateway_id": "gw", "smtp": {}}, "Extra inputs are not permitted"),
    ],
)
def test_rejected_settings_say_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: type[BaseModel],
    values: dict[str, Any],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("CA", "KEY"):
        (tmp_path / name).write_text("x")
    with pytest.raises(ValidationError) as caught:
        model.model_validate(values)
    assert message in str(caught.value)
