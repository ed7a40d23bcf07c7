"""Hospital-side benchmark: how many signed Bundles a `bedside receive` process verifies and
stores per second, and whether a second process in the same shared-subscription group adds to it.

Load: ``GATEWAYS`` simulated gateways, each with its own Ed25519 key, ``BUNDLES`` signed Bundles in
all as a gateway sends them (four in five a vital sign: heart rate and SpO2 Observations; one in
five a 1 s ECG lead II strip, 250 samples), published to a private mosquitto on 127.0.0.1 from this
process at QoS 1 with the ``bundle-id`` property and the send time in a ``sent-at`` property.

For 1 and for 2 receiver processes (the installed console script, ``--group bench``, each its
own ``--client-id``, one output directory and dedup store), twice: *live*, the Bundles published
while the receivers run (the time from the first publish to the last file written gives the
throughput, the files' modification times minus the send times the end-to-end latency, p50 and
p99); and *drain*, the Bundles published while the receivers are stopped (SIGSTOP), then taken
at once (SIGCONT): the receivers' own throughput with the publisher out of the way, on which the
goals are judged. Then, in this process, the cost of verifying one
Bundle (parse, canonicalise, JWS check) against a bare Ed25519 verify of the same bytes.

Goals: one receiver ≥ 2,000 Bundles/s; two ≥ 1.7× one. On this 2-core machine the publisher,
the broker and the receivers share the two cores. Reports, never asserts. Prints ONE JSON object.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

from paho.mqtt import publish
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.fhir import jsonio
from gateway.forward.signing import SigningKey, b64url_decode, verify_bundle
from tests.fixtures_mqtt import heart_rate, make_signer, transaction_bundle
from tests.mosquitto import Mosquitto

BEDSIDE: Final = Path(sys.executable).with_name("bedside")
GATEWAYS: Final = 40
BUNDLES: Final = 4000
BATCH: Final = 200
GOAL_RATE: Final = 2000.0
GOAL_SCALING: Final = 1.7
STEP_TIMEOUT_S: Final = 300.0
INFLIGHT: Final = 1000  # the broker lets a receiver hold this many unacknowledged (its setting)
EFFECTIVE: Final = dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.UTC)


def ecg_bundle(identifier: str) -> dict[str, Any]:
    data = " ".join(str(1200 if i % 250 == 25 else (i * 7) % 300) for i in range(250))
    observation = heart_rate(identifier, "0")
    observation.pop("valueQuantity")
    observation["code"] = {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "131330"}]}
    observation["valueSampledData"] = {
        "origin": {"value": 0, "unit": "mV", "code": "mV"},
        "period": 4,
        "factor": Decimal("0.001"),
        "dimensions": 1,
        "data": data,
    }
    return transaction_bundle([observation])


def make_load() -> tuple[list[tuple[str, str, bytes]], dict[str, Any]]:
    """(topic, bundle id, payload) per message, and the gateways' public JWKs by name."""
    signers = [make_signer(SigningKey.generate()) for _ in range(GATEWAYS)]
    messages = []
    for n in range(BUNDLES):
        gateway = n % GATEWAYS
        identifier = f"gw{gateway}-{n}"
        if n % 5 == 4:
            bundle = ecg_bundle(identifier)
        else:
            spo2 = heart_rate(f"{identifier}-spo2", "97")
            spo2["code"] = {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]}
            bundle = transaction_bundle([heart_rate(identifier, "72"), spo2])
        bundle["id"] = f"b-{identifier}"
        signed = signers[gateway].sign_bundle(bundle)
        messages.append(
            (f"bedside/gw-{gateway}/observations", bundle["id"], jsonio.dumps(signed).encode())
        )
    keys = {f"gw-{i}.jwk": s.key.public_jwk for i, s in enumerate(signers)}
    return messages, keys


def publish_all(broker: Mosquitto, messages: list[tuple[str, str, bytes]]) -> dict[str, float]:
    """Publish in batches; the send time of every Bundle (wall clock, as file mtimes are)."""
    sent: dict[str, float] = {}
    for start in range(0, len(messages), BATCH):
        batch = []
        now = time.time()
        for topic, bundle_id, payload in messages[start : start + BATCH]:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("bundle-id", bundle_id), ("sent-at", repr(now))]
            batch.append({"topic": topic, "payload": payload, "qos": 1, "properties": properties})
            sent[bundle_id] = now
        publish.multiple(
            batch, hostname="127.0.0.1", port=broker.port, protocol=MQTTProtocolVersion.MQTTv5
        )
    return sent


def start_receiver(broker: Mosquitto, name: str, out: Path, keys: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            str(BEDSIDE), "receive", "--mqtt", broker.url, "--group", "bench",
            "--client-id", name, "--out", str(out), "--state", str(out / "seen.sqlite3"),
            "--keys", str(keys),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while "subscribed to" not in process.stderr.readline():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"receiver {name} did not subscribe")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # drain the rest
    return process


def run_receivers(
    broker: Mosquitto,
    count: int,
    root: Path,
    keys: Path,
    messages: list[tuple[str, str, bytes]],
    *,
    drain: bool = False,
) -> dict[str, Any]:
    """``count`` receivers take ``messages``: published while they run (live), or published
    while they are stopped (SIGSTOP) and then drained (SIGCONT), the publisher out of the way."""
    mode = "drain" if drain else "live"
    out = root / f"out-{count}-{mode}"
    out.mkdir()
    processes = [
        start_receiver(broker, f"bench-{mode}-{count}-{i}", out, keys) for i in range(count)
    ]
    try:
        if drain:
            for process in processes:
                process.send_signal(signal.SIGSTOP)
        started = publishing = time.time()
        sent = publish_all(broker, messages)
        published = time.time()
        if drain:
            for process in processes:
                process.send_signal(signal.SIGCONT)
            started = time.time()
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while len(list(out.glob("b-*.json"))) < len(messages):
            if time.monotonic() > deadline:
                return {"receivers": count, "incomplete": True}
            time.sleep(0.05)
        finished = max(p.stat().st_mtime for p in out.glob("b-*.json"))
    finally:
        stats = []
        for process in processes:
            process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=60)
            stats.append(json.loads(stdout.strip().splitlines()[-1]))
    latencies = sorted(
        (path.stat().st_mtime - sent[path.stem]) * 1000 for path in out.glob("b-*.json")
    )
    return {
        "receivers": count,
        "mode": mode,
        "bundles_per_s": round(len(messages) / (finished - started), 1),
        "publish_s": round(published - publishing, 2),
        "latency_p50_ms": round(statistics.median(latencies), 1),
        "latency_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
        "accepted_per_receiver": [s["accepted"] for s in stats],
        "rejected": sum(s["rejected"] for s in stats),
    }


def verification_cost(
    messages: list[tuple[str, str, bytes]], keys: dict[str, Any]
) -> dict[str, Any]:
    """Per Bundle: the receiver's verify (parse + canonicalise + JWS) vs bare Ed25519."""
    from gateway.forward.signing import public_key_from_jwk

    keyring = {
        jwk["kid"]: public_key_from_jwk({k: jwk[k] for k in ("kty", "crv", "x")}, "bench")
        for jwk in keys.values()
    }
    sample = messages[:1000]
    started = time.perf_counter()
    for _, _, payload in sample:
        verify_bundle(jsonio.loads(payload), keyring)
    full = (time.perf_counter() - started) / len(sample)
    bare_inputs = []
    for _, _, payload in sample:
        bundle = jsonio.loads(payload)
        compact = base64.b64decode(bundle["signature"]["data"]).decode()
        header, _, signature = compact.split(".")
        body = {k: v for k, v in bundle.items() if k != "signature"}
        signing_input = (
            f"{header}.{base64.urlsafe_b64encode(jsonio.canonical(body)).decode().rstrip('=')}"
        )
        kid = json.loads(b64url_decode(header))["kid"]
        bare_inputs.append((keyring[kid], b64url_decode(signature), signing_input.encode()))
    started = time.perf_counter()
    for key, signature, data in bare_inputs:
        key.verify(signature, data)
    bare = (time.perf_counter() - started) / len(bare_inputs)
    return {
        "verify_us": round(full * 1e6, 1),
        "bare_ed25519_us": round(bare * 1e6, 1),
        "verify_vs_bare_ratio": round(full / bare, 1),
    }


def main() -> None:
    messages, keys = make_load()
    with tempfile.TemporaryDirectory(prefix="bench-hospital-") as tmp:
        root = Path(tmp)
        key_dir = root / "keys"
        key_dir.mkdir()
        for name, jwk in keys.items():
            (key_dir / name).write_text(json.dumps(jwk))
        with Mosquitto(root / "broker", max_inflight=INFLIGHT) as broker:
            one = run_receivers(broker, 1, root, key_dir, messages)
            two = run_receivers(broker, 2, root, key_dir, messages)
            one_drain = run_receivers(broker, 1, root, key_dir, messages, drain=True)
            two_drain = run_receivers(broker, 2, root, key_dir, messages, drain=True)
    cost = verification_cost(messages, keys)
    scaling = (
        round(two_drain["bundles_per_s"] / one_drain["bundles_per_s"], 2)
        if "bundles_per_s" in one_drain and "bundles_per_s" in two_drain
        else None
    )
    rate = one_drain.get("bundles_per_s", 0.0)
    print(
        json.dumps(
            {
                "bench": "hospital",
                "goal": f"one receiver >= {GOAL_RATE:g} Bundles/s; two >= {GOAL_SCALING:g}x one",
                "goal_met": rate >= GOAL_RATE and scaling is not None and scaling >= GOAL_SCALING,
                "gateways": GATEWAYS,
                "bundles": BUNDLES,
                "cores": os.cpu_count(),
                "one_receiver": one,
                "two_receivers": two,
                "one_receiver_drain": one_drain,
                "two_receivers_drain": two_drain,
                "scaling_ratio": scaling,
                **cost,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
