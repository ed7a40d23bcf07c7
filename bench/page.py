"""Page benchmark: what the technician's live page costs the gateway, and how fresh it is.

The standard sensor set (ECG with its 250 Hz waveform, SpO2, BP, thermometer) in ``bedside-sim``,
its own process, and the real gateway in this process (HTTP API on a free port; the assistant
off, so that only the page's cost moves). After every sensor streams and a warm-up:

1. baseline window: no page connected; CPU = user+sys of this process / wall time;
2. page window: five clients in another process (so their CPU is not counted) hold
   ``GET /api/live`` open, as five browsers on the page would, and read every event.

The clients time every heart-rate ``vital`` event of the ECG patch: the heart-rate Observation
carries no device time, so its ``effectiveDateTime`` is the gateway's reception time stamp; the
delay is the client's wall clock when the event is read minus that (same machine, same clock).

Goals: the five clients cost under 2 % of one core more than none; the delay's p99 under 250 ms.
Reports, never asserts. Prints ONE JSON object. ``--clients-only`` is the client process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sensors import (
    STREAMING,
    SimProcess,
    Window,
    latency_summary,
)

from gateway.app import Gateway
from gateway.config import load_settings

DEVICES = "ecg,spo2,bp,thermo"
CLIENTS = 5
TOKEN = "bench-page-token-0123456789abcdef"
HEART_RATE = "8867-4"
GOAL_EXTRA_CPU = 2.0
GOAL_P99_MS = 250.0


async def client_process(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` live streams for ``seconds``; delays of heart-rate events of the ECG."""
    delays: list[float] = []
    events = [0] * clients
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def one(index: int, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{url}/api/live", headers=headers) as answer:
            kind = ""
            async for raw in answer.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events[index] += 1
                    if kind == "vital":
                        data = json.loads(line[6:])
                        if HEART_RATE in data["codes"] and data["address"] == ecg_address:
                            at = dt.datetime.fromisoformat(data["at"]).timestamp()
                            delays.append(time.time() - at)

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/sensors", headers=headers) as answer:
            rows = (await answer.json())["sensors"]
        ecg_address = next(r["address"] for r in rows if r["kind"] == "ecg")
        tasks = [asyncio.create_task(one(i, session)) for i in range(clients)]
        print("connected", flush=True)
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
    return {"events_per_client": events, "delay_ms": latency_summary(delays)}


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sim = SimProcess(DEVICES, tmp / "sim.log")
    await sim.start()
    try:
        settings = load_settings(
            data_dir=tmp / "gateway",
            ble={"transport": f"hci:tcp-client:127.0.0.1:{sim.port}", "auto_accept": True},
            http={"port": 0, "token": TOKEN},
            assistant={"enabled": False},
        )
        gateway = Gateway(settings)
        task = asyncio.create_task(gateway.run(), name="bench-gateway")
        try:
            deadline = time.monotonic() + 60
            while not (
                gateway.manager is not None
                and len(gateway.manager.statuses()) == len(sim.sensors)
                and all(s.state == STREAMING for s in gateway.manager.statuses())
            ):
                if time.monotonic() > deadline or task.done():
                    raise RuntimeError("the sensors did not all stream within 60 s")
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.warmup)
            idle = Window()
            idle.start()
            await asyncio.sleep(args.window)
            idle.stop()

            url = f"http://127.0.0.1:{gateway.http_port}"
            clients = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--clients-only",
                url,
                "--seconds",
                str(args.warmup + args.window + 2),
                stdout=asyncio.subprocess.PIPE,
            )
            assert clients.stdout is not None
            await clients.stdout.readline()  # "connected"
            await asyncio.sleep(args.warmup)
            busy = Window()
            busy.start()
            await asyncio.sleep(args.window)
            busy.stop()
            out, _ = await clients.communicate()
            page = json.loads(out.decode().strip().splitlines()[-1])
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await sim.stop()
    extra = busy.cpu_percent - idle.cpu_percent
    p99 = page["delay_ms"].get("p99")
    return {
        "bench": "page",
        "devices": DEVICES,
        "clients": CLIENTS,
        "window_s": args.window,
        "cpu_percent_of_one_core": {
            "no_page": round(idle.cpu_percent, 2),
            "five_pages": round(busy.cpu_percent, 2),
            "extra": round(extra, 2),
        },
        "ratio": round(busy.cpu_percent / idle.cpu_percent, 2) if idle.cpu_percent else None,
        "notification_to_page_ms": page["delay_ms"],
        "events_per_client": page["events_per_client"],
        "conditions": {"no_page": idle.conditions(), "five_pages": busy.conditions()},
        "goals": {"extra_cpu_percent": GOAL_EXTRA_CPU, "p99_ms": GOAL_P99_MS},
        "goals_met": {
            "extra_cpu": extra < GOAL_EXTRA_CPU,
            "p99": p99 is not None and p99 < GOAL_P99_MS,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clients-only", metavar="URL")
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    if args.clients_only:
        result = asyncio.run(client_process(args.clients_only, CLIENTS, args.seconds))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
            result = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
