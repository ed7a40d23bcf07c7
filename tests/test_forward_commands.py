"""``bedside keys|verify|receive|outbox`` through typer's CliRunner on a test app."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import typer
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typer.testing import CliRunner

from gateway.fhir import jsonio
from gateway.forward.commands import register
from gateway.forward.signing import KeyStore, Signer
from gateway.hospital.commands import register as register_hospital
from gateway.store import Store, store_path
from tests import fixtures_mqtt
from tests.fixtures_mqtt import (
    DEVICE,
    GATEWAY_WHO,
    heart_rate,
    record,
    transaction_bundle,
)
from tests.mosquitto import Mosquitto

broker = fixtures_mqtt.broker

runner = CliRunner()


def app() -> typer.Typer:
    made = typer.Typer()
    register(made)
    register_hospital(made)
    return made


def signed_file(
    data_dir: Path, path: Path, change: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any]:
    signer = Signer(KeyStore(data_dir).load_or_create(), GATEWAY_WHO)
    bundle = transaction_bundle([heart_rate("x-1", "98.6")])
    bundle["id"] = "bundle-1"
    signed = signer.sign_bundle(bundle)
    if change is not None:
        change(signed)
    path.write_text(jsonio.dumps(signed))
    return signed


def test_keys_show_and_rotate(tmp_path: Path) -> None:
    shown = runner.invoke(app(), ["keys", "show", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    jwk = json.loads(shown.stdout.splitlines()[-1])
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    key_file = tmp_path / "keys" / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = runner.invoke(app(), ["keys", "show", "--data-dir", str(tmp_path)])
    assert json.loads(again.stdout.splitlines()[-1]) == jwk

    rotated = runner.invoke(app(), ["keys", "rotate", "--data-dir", str(tmp_path)])
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.stdout.splitlines()[-1])
    assert new["kid"] != jwk["kid"]
    assert f"rotated: {jwk['kid']} -> {new['kid']}" in rotated.stdout
    assert "public keys kept for verification: 2" in rotated.stdout


def test_keys_show_reads_the_environment(tmp_path: Path) -> None:
    result = runner.invoke(app(), ["keys", "show"], env={"BEDSIDE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "keys" / "signing-key.pem").exists()


def test_verify(tmp_path: Path) -> None:
    data_dir = tmp_path / "gw"
    shown = runner.invoke(app(), ["keys", "show", "--data-dir", str(data_dir)])
    key_file = tmp_path / "gateway.jwk"
    key_file.write_text(shown.stdout.splitlines()[-1])
    good = tmp_path / "good.json"
    signed_file(data_dir, good)

    ok = runner.invoke(app(), ["verify", str(good), "--key", str(key_file)])
    assert (ok.exit_code, ok.stdout.strip()) == (
        0,
        f"valid: Bundle bundle-1 signed by key {json.loads(key_file.read_text())['kid']}",
    )
    by_dir = runner.invoke(app(), ["verify", str(good), "--key", str(data_dir / "keys" / "public")])
    assert by_dir.exit_code == 0, by_dir.output

    def tamper(b: dict[str, Any]) -> None:
        b["entry"][0]["resource"]["valueQuantity"]["value"] = 99

    bad = tmp_path / "bad.json"
    signed_file(data_dir, bad, tamper)
    result = runner.invoke(app(), ["verify", str(bad), "--key", str(key_file)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad}: invalid: bad-signature: ")

    naked = tmp_path / "unsigned.json"
    signed_file(data_dir, naked, lambda b: b.pop("signature"))
    result = runner.invoke(app(), ["verify", str(naked), "--key", str(key_file)])
    assert result.exit_code == 1
    assert "invalid: unsigned: the Bundle has no signature element" in result.stderr

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{")
    result = runner.invoke(app(), ["verify", str(garbage), "--key", str(key_file)])
    assert (result.exit_code, "invalid: not-json" in result.stderr) == (1, True)
    array = tmp_path / "array.json"
    array.write_text("[1]")
    result = runner.invoke(app(), ["verify", str(array), "--key", str(key_file)])
    assert (result.exit_code, "invalid: not-a-bundle" in result.stderr) == (1, True)

    missing = runner.invoke(app(), ["verify", str(tmp_path / "nope.json"), "--key", str(key_file)])
    assert missing.exit_code == 2
    assert "No such file" in missing.stderr
    no_key = runner.invoke(app(), ["verify", str(good), "--key", str(tmp_path / "nokey")])
    assert no_key.exit_code == 2
    assert "no such key file or directory" in no_key.stderr


def test_outbox_retry_dead_and_show(tmp_path: Path) -> None:
    signer = Signer(KeyStore(tmp_path).load_or_create(), GATEWAY_WHO)
    with Store(store_path(tmp_path), signer=signer, uplinks=["https"]) as store:
        store.add_observations(DEVICE, [record("a")], transaction_bundle)
        store.add_observations(DEVICE, [record("b")], transaction_bundle)
        first, _ = store.pending_items("https", limit=2)
        store.mark_dead(first.seq, "HTTP 422: unknown unit")

    shown = runner.invoke(app(), ["outbox", "show", "--data-dir", str(tmp_path), "--dead"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {
        "pending": 1,
        "delivered": 0,
        "dead": 1,
        "quota_alarm": False,
        "held": 0,
        "dead_items": [
            {"id": first.id, "uplink": "https", "attempts": 1, "error": "HTTP 422: unknown unit"}
        ],
    }
    retried = runner.invoke(app(), ["outbox", "retry-dead", "--data-dir", str(tmp_path)])
    assert (retried.exit_code, retried.stdout.strip()) == (0, "1 dead item(s) queued again")
    with Store(store_path(tmp_path)) as store:
        assert store.outbox_stats().as_dict()["pending"] == 2

    missing = runner.invoke(app(), ["outbox", "retry-dead", "--data-dir", str(tmp_path / "x")])
    assert missing.exit_code == 2
    assert "no store here" in missing.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--mqtt", "http://x", "--keys", "K", "--out", "O"], "expected mqtt://host:port"),
        (["--mqtt", "mqtt://h:1", "--keys", "K"], "give --out DIR and/or --fhir URL"),
        (
            ["--mqtt", "mqtt://h:1", "--keys", "K", "--fhir", "http://fhir.example/r4"],
            "plain http is only allowed to a loopback host",
        ),
        (["--mqtt", "mqtt://h:1", "--keys", "missing.jwk", "--out", "O"], "no such key file"),
    ],
)
def test_receive_argument_errors(
    tmp_path: Path, arguments: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "K").write_text(json.dumps(KeyStore(tmp_path).load_or_create().public_jwk))
    result = runner.invoke(app(), ["receive", *arguments])
    assert result.exit_code == 2
    assert message in result.stderr


def test_receive_writes_bundles_and_prints_counts(tmp_path: Path, broker: Mosquitto) -> None:
    data_dir = tmp_path / "gw"
    keys_dir = data_dir / "keys" / "public"
    signer = Signer(KeyStore(data_dir).load_or_create(), GATEWAY_WHO)

    # The hospital's persistent session exists before the gateway publishes.
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="hospital-cli",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect.SessionExpiryInterval = 600
    client.connect("127.0.0.1", broker.port, clean_start=False, properties=connect)
    client.loop_start()
    client.subscribe("bedside/+/observations", qos=1)
    assert subscribed.wait(10)
    client.disconnect()
    client.loop_stop()

    publisher = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    unsigned = {**transaction_bundle([heart_rate("u", "60")]), "id": "u"}
    for name in ("a", "b"):
        bundle = signer.sign_bundle({**transaction_bundle([heart_rate(name, "60")]), "id": name})
        info = publisher.publish("bedside/gw/observations", jsonio.dumps(bundle), qos=1)
        info.wait_for_publish(10)
    publisher.publish("bedside/gw/observations", jsonio.dumps(unsigned), qos=1).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()

    out = tmp_path / "out"
    result = runner.invoke(
        app(),
        [
            "receive",
            "--mqtt",
            broker.url,
            "--keys",
            str(keys_dir),
            "--out",
            str(out),
            "--client-id",
            "hospital-cli",
            "--max-bundles",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["accepted"] == 2
    assert summary["rejected_by_reason"] in ({}, {"unsigned": 1})  # depends on arrival order
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]
    assert base64.b64decode(
        json.loads((out / "a.json").read_text())["signature"]["data"]
    ).startswith(b"ey")


@pytest.fixture(scope="module")
def bedside() -> Path:
    """The installed ``bedside`` console script, once gateway.cli registers these commands."""
    script = Path(sys.executable).with_name("bedside")
    if not script.exists():
        pytest.skip("no bedside console script in this environment")
    shown = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if " keys " not in shown.stdout or " verify " not in shown.stdout:
        pytest.skip("gateway.cli does not register the forward commands yet")
    return script


def test_console_script_keys_and_verify(tmp_path: Path, bedside: Path) -> None:
    shown = subprocess.run(
        [str(bedside), "keys", "show", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key_file = tmp_path / "key.jwk"
    key_file.write_text(shown.stdout.splitlines()[-1])
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    signed_file(tmp_path, good)
    signed_file(tmp_path, bad, lambda b: b.update(type="batch"))
    ok = subprocess.run(
        [str(bedside), "verify", str(good), "--key", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (ok.returncode, ok.stdout.startswith("valid: Bundle bundle-1")) == (0, True)
    refused = subprocess.run(
        [str(bedside), "verify", str(bad), "--key", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "invalid: bad-signature" in refused.stderr
