"""``python -m gateway.forward.pump_main``: forward the outbox of a data directory, nothing else.

Runs the MQTT and/or HTTPS uplink and their pumps over an existing data directory until SIGTERM
or SIGINT: the forwarding half of ``bedside run`` without sensors. It drains an outbox left by a
gateway (e.g. on a replacement box), and it is the process the crash tests SIGKILL mid-flush.

Exit status: 0 after a signal, 2 for bad arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from gateway.forward.backoff import POLICIES, fast_policies
from gateway.forward.service import Forwarding, build_signer, build_uplinks, open_store
from gateway.forward.settings import (
    ForwardSettings,
    HttpsSettings,
    MqttSettings,
    OutboxSettings,
    validation_message,
)

USAGE_ERROR = 2
log = logging.getLogger("gateway.forward.pump_main")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.forward.pump_main", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--gateway-id", required=True, help="topic level of this gateway")
    parser.add_argument("--mqtt", help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--topic-prefix", default="bedside")
    parser.add_argument("--ca", type=Path, help="MQTT: CA bundle to verify the broker")
    parser.add_argument("--cert", type=Path, help="MQTT: client certificate (mTLS)")
    parser.add_argument("--key", type=Path, help="MQTT: client key (mTLS)")
    parser.add_argument("--window", type=int, default=100, help="MQTT in-flight window")
    parser.add_argument("--https", help="FHIR base URL")
    parser.add_argument("--https-ca", type=Path, help="HTTPS: CA bundle")
    parser.add_argument(
        "--fast-retry",
        action="store_true",
        help="short backoff for every error class (tests, benchmarks, local demo)",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser


def settings_from_args(args: argparse.Namespace) -> ForwardSettings:
    mqtt = (
        MqttSettings(
            url=args.mqtt,
            topic_prefix=args.topic_prefix,
            ca_file=args.ca,
            cert_file=args.cert,
            key_file=args.key,
            inflight_window=args.window,
        )
        if args.mqtt
        else None
    )
    https = (
        HttpsSettings(
            base_url=args.https,
            ca_file=args.https_ca,
            bearer_token=os.environ.get("BEDSIDE_HTTPS_TOKEN"),
        )
        if args.https
        else None
    )
    return ForwardSettings(
        gateway_id=args.gateway_id, mqtt=mqtt, https=https, outbox=OutboxSettings()
    )


async def forward(data_dir: Path, settings: ForwardSettings, *, fast_retry: bool) -> None:
    """Run the uplinks and pumps until cancelled (SIGTERM/SIGINT cancel it)."""
    policies = fast_policies() if fast_retry else POLICIES
    signer = build_signer(data_dir, {"display": f"Bedside Gateway {settings.gateway_id}"})
    uplinks = build_uplinks(settings, policies=policies)
    store = await open_store(data_dir, settings, signer, uplinks)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
    try:
        async with asyncio.TaskGroup() as tg:
            Forwarding(store, uplinks, settings.outbox, policies=policies).start(tg)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.mqtt and not args.https:
        print("error: give --mqtt and/or --https", file=sys.stderr)
        return USAGE_ERROR
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"error: {validation_message(exc)}", file=sys.stderr)
        return USAGE_ERROR
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(forward(args.data_dir, settings, fast_retry=args.fast_retry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
