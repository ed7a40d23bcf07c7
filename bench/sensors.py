"""Sensor benchmark: the gateway's CPU, latency and losses with 4 and with 20 simulated sensors.

Two sets: ``standard`` (ECG with its 250 Hz lead II waveform + HR/RR, SpO2, BP, thermometer) and
``stress20`` (five of each kind), on the ``normal`` scenario at the simulator's default timing
except the cuff: a BP cycle every 15 s instead of every 60 s (``SIM_OVERRIDES``), so that blood
pressure indications and cuff-pressure notifications fall inside the measured window. Each set:

1. baseline: ``bedside-sim`` in its own process, and in this process a bare Bumble central (no
   bleak, no decoding, no store) on the simulator's HCI-over-TCP transport that connects to every
   sensor, exchanges the same ATT MTU as the gateway, subscribes to the characteristics the
   gateway's device profiles name, starts the GHS live stream and counts what arrives;
2. gateway: a fresh ``bedside-sim`` and the real gateway (``gateway.app.Gateway``, transport
   ``hci:tcp-client:…``, auto-accept, a temporary data directory) in this process, with what
   ``bedside run`` starts by default (its local HTTP API and the assistant behind it, on a free
   port), or the sensor pipeline alone with ``--sensors-only``.

Each phase waits until every sensor streams, warms up, then measures a window: CPU = user+sys
time of this process (``getrusage(RUSAGE_SELF)``, so the store's threads count) / wall time, in
% of one core; latency = the gateway's own "notification received → stored" samples
(``SessionStatus.latencies_s``) appended during the window. Losses are counted over the whole
phase: the simulator is stopped with SIGINT and prints its final per-sensor statistics
(``bedside-sim --stats``), taken after every sensor stopped sending, and every notification and
confirmed indication it sent is compared with what the central received (the gateway's
``SessionStatus.notifications``), so nothing is in flight when the two are compared (a negative
count would be an indication whose confirmation reached the sensor after it stopped). The baseline
CPU in the same run gives a ratio that survives a noisy machine; each phase also reports the
conditions of its window (garbage-collector pauses by generation, the share of the window this
process's threads waited for a CPU held by other processes, the load average), which explain
latency outliers.

Goals: standard set ≤ 5 % of one core, 20 sensors ≤ 25 %, p99 ≤ 50 ms, 0 lost.
Reports, never asserts. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bumble.core import UUID
from bumble.device import Device, Peer
from bumble.hci import Address
from bumble.transport import open_transport

from firmware_sim import parse_devices, sensor_keys
from gateway.app import Gateway
from gateway.ble.session import SessionState, SessionStatus
from gateway.config import Settings, load_settings
from gateway.profiles import DeviceProfile, Subscription, full_uuid, load_profiles

SETS = {"standard": "ecg,spo2,bp,thermo", "stress20": "ecg:5,spo2:5,bp:5,thermo:5"}
GOAL_CPU_PERCENT = {"standard": 5.0, "stress20": 25.0}
GOAL_P99_MS = 50.0
GOAL_LOST = 0
WINDOW_S = 30.0
BASELINE_WINDOW_S = 15.0
WARMUP_S = 5.0
SEED = 0
# A 10 s cuff cycle every 15 s (default: 30 s every 60 s, which a 30 s window may miss entirely).
SIM_OVERRIDES = ("bp.interval_s=15", "bp.cycle_s=10")
SIM_START_TIMEOUT_S = 30.0
SIM_STOP_TIMEOUT_S = 30.0
KILL_WAIT_S = 5.0
STREAMING_TIMEOUT_S = 90.0
SETTLE_TIMEOUT_S = 15.0
ASSISTANT_TIMEOUT_S = 180.0  # loading the embedded model and MiniLM on a cold page cache
POLL_S = 0.1
REQUESTED_MTU = 247  # what the gateway's Bumble client asks for (gateway/ble/bumble/client.py)
BASELINE_ADDRESS = "F0:B0:0B:00:00:01"
BATTERY_LEVEL = full_uuid("2A19")
POWER_OFF_TIMEOUT_S = 5.0
WARNINGS_KEPT = 10
STREAMING = SessionState.STREAMING
EXIT_BY_SIGNAL = 128  # the shell's convention: 128 + the signal's number
SIM_COMMAND = (
    [str(Path(sys.executable).with_name("bedside-sim"))]
    if Path(sys.executable).with_name("bedside-sim").exists()
    else [sys.executable, "-m", "firmware_sim.cli"]
)


class BenchError(Exception):
    """The benchmark could not run (the simulator did not start, the gateway failed)."""


class BenchInterruptedError(BenchError):
    """SIGINT or SIGTERM: the run was stopped, its simulator processes too."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"interrupted by {signum.name}")
        self.exit_status = EXIT_BY_SIGNAL + signum


# -- the simulator process -----------------------------------------------------------------------


@dataclass
class SimProcess:
    """``bedside-sim --hci tcp-server:127.0.0.1:0 --devices … --stats`` in its own process."""

    devices: str
    log: Path
    process: asyncio.subprocess.Process | None = None
    port: int = 0
    sensors: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → (name, address)
    final: dict[str, Any] | None = None

    async def start(self) -> None:
        expected = len(parse_devices(self.devices))
        with self.log.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                *SIM_COMMAND,
                *("--hci", "tcp-server:127.0.0.1:0", "--devices", self.devices),
                *("--seed", str(SEED), "--stats"),
                *(arg for override in SIM_OVERRIDES for arg in ("--set", override)),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            async with asyncio.timeout(SIM_START_TIMEOUT_S):
                await self._read_listing(expected)
        except TimeoutError:
            await self.stop()
            raise BenchError(
                f"bedside-sim --devices {self.devices} did not list its sensors within "
                f"{SIM_START_TIMEOUT_S:g} s; its stderr ends: {self.log_tail()}"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _read_listing(self, expected: int) -> None:
        """``hci<TAB>tcp-server<TAB>PORT``, then one line per sensor: key, name, address."""
        kind, scheme, port = (await self._line()).split("\t")
        if (kind, scheme) != ("hci", "tcp-server"):
            raise BenchError(f"bedside-sim: unexpected first line {kind!r}")
        self.port = int(port)
        for _ in range(expected):
            key, name, address = (await self._line()).split("\t")
            self.sensors[key] = (name, address)

    async def _line(self) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            code = await self.process.wait()
            raise BenchError(f"bedside-sim exited with status {code} at start: {self.log_tail()}")
        return line.decode().rstrip("\n")

    def log_tail(self, lines: int = 3) -> str:
        """The end of the simulator's stderr (its log file lives in a temporary directory)."""
        try:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            tail = []
        return " | ".join(tail) or "(nothing)"

    async def stop(self) -> dict[str, Any] | None:
        """SIGINT, then the final statistics line; SIGKILL if it does not end in time."""
        process = self.process
        if process is None:
            return self.final
        self.process = None
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(SIM_STOP_TIMEOUT_S):
                assert process.stdout is not None
                async for raw in process.stdout:
                    line = raw.decode().strip()
                    if line.startswith("{"):
                        report = json.loads(line)
                        if report.get("event") == "stats" and report.get("final"):
                            self.final = report
                await process.wait()
        except TimeoutError:
            process.kill()
            async with asyncio.timeout(KILL_WAIT_S):
                await process.wait()
        return self.final

    def sent(self) -> dict[str, int]:
        """Notifications + confirmed indications each sensor sent, by address."""
        if self.final is None:
            raise BenchError(f"bedside-sim gave no final statistics; stderr: {self.log_tail()}")
        return {
            entry["address"]: entry["stats"]["notifications"] + entry["stats"]["indications"]
            for entry in self.final["sensors"].values()
        }


# -- measurements --------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def runqueue_wait_s() -> float | None:
    """Seconds this process's threads spent runnable but waiting for a CPU (Linux schedstat)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


class Window:
    """CPU and wall time over the measurement window, with what explains latency outliers: the
    garbage collector's pauses (they stop every thread) and the time spent waiting for a CPU
    that other processes held (a shared machine)."""

    def __init__(self) -> None:
        self.cpu_s = self.wall_s = 0.0
        self._cpu = self._wall = self._gc_began = 0.0
        self._wait: float | None = None
        self.wait_s: float | None = None
        self.load_average = 0.0
        self.gc_pauses: dict[int, list[float]] = {}

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_began
            self.gc_pauses.setdefault(info["generation"], []).append(pause)

    def start(self) -> None:
        self.gc_pauses.clear()
        gc.callbacks.append(self._on_gc)
        self._wait = runqueue_wait_s()
        self._cpu, self._wall = cpu_seconds(), time.monotonic()

    def stop(self) -> None:
        self.cpu_s = cpu_seconds() - self._cpu
        self.wall_s = time.monotonic() - self._wall
        gc.callbacks.remove(self._on_gc)
        wait = runqueue_wait_s()
        self.wait_s = None if wait is None or self._wait is None else wait - self._wait
        self.load_average = os.getloadavg()[0]

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s else math.nan

    def conditions(self) -> dict[str, Any]:
        """GC pauses by generation and CPU contention during the window."""
        return {
            "gc_pauses": {
                f"gen{generation}": {
                    "count": len(pauses),
                    "max_ms": round(max(pauses) * 1000, 1),
                }
                for generation, pauses in sorted(self.gc_pauses.items())
            },
            "runqueue_wait_percent": (
                None if self.wait_s is None else round(100 * self.wait_s / self.wall_s, 1)
            ),
            "load_average_1m": round(self.load_average, 2),
        }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "samples": len(seconds),
        "p50": ms(percentile(seconds, 50)),
        "p99": ms(percentile(seconds, 99)),
        "max": ms(max(seconds, default=None)),
    }


class WarningLog(logging.Handler):
    """Collects the gateway's WARNING-and-above records instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: list[str] = []
        self.enabled = True

    def emit(self, record: logging.LogRecord) -> None:
        if not self.enabled:
            return
        self.counts[record.levelname] += 1
        if len(self.first) < WARNINGS_KEPT:
            self.first.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def lost_by_sensor(sent: dict[str, int], received: dict[str, int]) -> dict[str, int]:
    return {
        address: sent.get(address, 0) - received.get(address, 0)
        for address in sorted(set(sent) | set(received))
        if sent.get(address, 0) != received.get(address, 0)
    }


# -- baseline: a bare Bumble central -------------------------------------------------------------


def subscriptions(profile: DeviceProfile) -> list[Subscription]:
    """What the gateway's session subscribes to for a profile (gateway/ble/session.py)."""
    wanted = list(profile.subscribe)
    if profile.ghs is not None:
        wanted += [profile.ghs.live_subscription, profile.ghs.control_point_subscription]
    if profile.stored_records is not None:
        wanted.append(profile.stored_records.racp_subscription)
    return wanted


class BareCentral:
    """Connects, subscribes and counts; nothing else."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.received: Counter[str] = Counter()

    async def attach(self, address: str, profile: DeviceProfile) -> None:
        connection = await self.device.connect(Address(address))
        peer = Peer(connection)
        await peer.request_mtu(REQUESTED_MTU)
        await peer.discover_services()
        for service in peer.services:
            await service.discover_characteristics()

        def count(_value: bytes) -> None:
            self.received[address] += 1

        # The session also enables Battery Level notifications when the profile does not.
        wanted = {spec.uuid: spec.mode == "notify" for spec in subscriptions(profile)}
        wanted.setdefault(BATTERY_LEVEL, True)
        for uuid, notify in wanted.items():
            found = peer.get_characteristics_by_uuid(UUID(uuid))
            if found:
                await peer.subscribe(found[0], count, prefer_notify=notify)
        if profile.ghs is not None:
            control = peer.get_characteristics_by_uuid(UUID(profile.ghs.control_point))
            if control:
                await control[0].write_value(bytes.fromhex(profile.ghs.start), with_response=True)


async def baseline(devices: str, window_s: float, warmup_s: float, tmp: Path) -> dict[str, Any]:
    profiles = load_profiles()
    kinds = parse_devices(devices)
    sim = SimProcess(devices, tmp / "sim-baseline.log")
    await sim.start()
    window = Window()
    in_window = 0
    try:
        async with await open_transport(f"tcp-client:127.0.0.1:{sim.port}") as transport:
            device = Device.with_hci(
                "bench baseline", Address(BASELINE_ADDRESS), transport.source, transport.sink
            )
            await device.power_on()
            central = BareCentral(device)
            started = time.monotonic()
            for key, kind in zip(sensor_keys(kinds), kinds, strict=True):
                await central.attach(sim.sensors[key][1], profiles[kind])
            ready_s = time.monotonic() - started
            await asyncio.sleep(warmup_s)
            before = sum(central.received.values())
            window.start()
            await asyncio.sleep(window_s)
            window.stop()
            in_window = sum(central.received.values()) - before
            await sim.stop()  # the sensors end their links: everything sent has arrived
            with contextlib.suppress(Exception):
                async with asyncio.timeout(POWER_OFF_TIMEOUT_S):
                    await device.power_off()
    finally:
        await sim.stop()
    sent = sim.sent()
    received = dict(central.received)
    return {
        "cpu_percent_of_one_core": round(window.cpu_percent, 2),
        "window_s": round(window.wall_s, 1),
        "conditions": window.conditions(),
        "time_to_subscribed_s": round(ready_s, 1),
        "notifications_received": {"window": in_window, "run": sum(received.values())},
        "notifications_sent_run": sum(sent.values()),
        "lost": sum(sent.values()) - sum(received.values()),
        "lost_by_sensor": lost_by_sensor(sent, received),
    }


# -- the gateway ---------------------------------------------------------------------------------


def _statuses(gateway: Gateway) -> list[SessionStatus]:
    return gateway.manager.statuses() if gateway.manager is not None else []


async def _until(
    condition: Callable[[], bool], limit_s: float, task: asyncio.Task[None], what: str
) -> float | None:
    """Seconds until ``condition()`` held, None on timeout; raises when the gateway stopped."""
    started = time.monotonic()
    while not condition():
        if task.done():
            error = task.exception() if not task.cancelled() else None
            raise BenchError(f"the gateway stopped while waiting for {what}: {error!r}")
        if time.monotonic() - started > limit_s:
            return None
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


@dataclass
class Marks:
    """Where each session's counters stood when the window opened."""

    latencies: dict[int, int]
    counts: dict[int, tuple[int, int, int]]  # notifications, observations, reconnects

    @classmethod
    def take(cls, statuses: list[SessionStatus]) -> Marks:
        return cls(
            {id(s): len(s.latencies_s) for s in statuses},
            {id(s): (s.notifications, s.observations, s.reconnects) for s in statuses},
        )

    def window_report(self, statuses: list[SessionStatus]) -> dict[str, Any]:
        """Latency samples and counts appended since the marks were taken."""
        latencies: list[float] = []
        by_kind: dict[str, list[float]] = {}
        overflowed = False
        deltas = [0, 0, 0]
        for s in statuses:
            values = list(s.latencies_s)[self.latencies.get(id(s), 0) :]
            overflowed |= len(s.latencies_s) == s.latencies_s.maxlen
            latencies += values
            by_kind.setdefault(s.kind, []).extend(values)
            now = (s.notifications, s.observations, s.reconnects)
            before = self.counts.get(id(s), (0, 0, 0))
            for i, (count_now, count_before) in enumerate(zip(now, before, strict=True)):
                deltas[i] += count_now - count_before
        report: dict[str, Any] = {
            "latency_ms": latency_summary(latencies),
            "latency_ms_by_kind": {k: latency_summary(v) for k, v in sorted(by_kind.items())},
            "window_notifications": deltas[0],
            "window_observations": deltas[1],
            "reconnects_in_window": deltas[2],
        }
        if overflowed:
            report["latency_window_truncated"] = True  # a status deque filled up
        return report


def gateway_settings(port: int, data_dir: Path, *, sensors_only: bool) -> Settings:
    """``bedside run``'s defaults on the simulator's radio. A local HTTP API (and the assistant
    behind it), where the gateway has one, listens on a free port, or is off (``sensors_only``)."""
    overrides: dict[str, Any] = {}
    if "http" in Settings.model_fields:
        overrides["http"] = {"enabled": False} if sensors_only else {"port": 0}
    return load_settings(
        data_dir=data_dir,
        ble={"transport": f"hci:tcp-client:127.0.0.1:{port}", "auto_accept": True},
        **overrides,
    )


async def gateway_phase(
    devices: str, args: argparse.Namespace, tmp: Path, warnings: WarningLog
) -> dict[str, Any]:
    sim = SimProcess(devices, tmp / "sim-gateway.log")
    await sim.start()
    try:
        data_dir = Path(tempfile.mkdtemp(prefix="gateway-", dir=tmp))
        gateway = Gateway(gateway_settings(sim.port, data_dir, sensors_only=args.sensors_only))
        task = asyncio.create_task(gateway.run(), name="bench-gateway")
        try:
            report = await measure_gateway(gateway, task, sim, args, warnings)
        finally:
            warnings.enabled = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await sim.stop()
    sent = sim.sent()
    received = report.pop("received_by_sensor")
    return report | {
        "notifications_sent_run": sum(sent.values()),
        "lost": sum(sent.values()) - sum(received.values()),
        "lost_by_sensor": lost_by_sensor(sent, received),
    }


async def measure_gateway(
    gateway: Gateway,
    task: asyncio.Task[None],
    sim: SimProcess,
    args: argparse.Namespace,
    warnings: WarningLog,
) -> dict[str, Any]:
    """Streaming, warm-up, the window; then the simulator stops and the links end."""
    expected = len(sim.sensors)

    def all_streaming() -> bool:
        statuses = _statuses(gateway)
        return len(statuses) == expected and all(s.state == STREAMING for s in statuses)

    warnings.enabled = True
    to_streaming = await _until(all_streaming, STREAMING_TIMEOUT_S, task, "streaming")
    # The assistant loads in the background (llama.cpp, MiniLM): measure once it has, as a
    # running `bedside run` would be measured, not while it is loading.
    settled = await _until(
        gateway.assistant_settled.is_set, ASSISTANT_TIMEOUT_S, task, "the assistant"
    )
    report: dict[str, Any] = {
        "time_to_streaming_s": None if to_streaming is None else round(to_streaming, 1),
        "components": {
            "http_api": gateway.http_port is not None,
            "assistant": gateway.consultations is not None,
            "assistant_settled_s": None if settled is None else round(settled, 1),
        },
    }
    if to_streaming is None:
        report["sensors_found"] = len(_statuses(gateway))
        report["not_streaming"] = {
            s.name: f"{s.state} {s.reason}".strip()
            for s in _statuses(gateway)
            if s.state != STREAMING
        }
    await asyncio.sleep(args.warmup)
    marks = Marks.take(_statuses(gateway))
    window = Window()
    window.start()
    await asyncio.sleep(args.window)
    window.stop()
    report |= marks.window_report(_statuses(gateway)) | {
        "cpu_percent_of_one_core": round(window.cpu_percent, 2),
        "window_s": round(window.wall_s, 1),
        "conditions": window.conditions(),
    }
    warnings.enabled = False  # what follows is the teardown (the radio goes away)

    await sim.stop()  # every sensor ends its link after its last packet
    await _until(
        lambda: all(s.state != STREAMING for s in _statuses(gateway)),
        SETTLE_TIMEOUT_S,
        task,
        "the links to end",
    )
    statuses = _statuses(gateway)
    store = gateway.store
    received = {s.address: s.notifications for s in statuses}
    return report | {
        "received_by_sensor": received,
        "notifications_received_run": sum(received.values()),
        "observations_stored_run": (
            sum((await store.observation_counts()).values()) if store is not None else 0
        ),
        "decode_errors": sum(s.decode_errors for s in statuses),
        "ingest_errors": sum(s.ingest_errors for s in statuses),
    }


# -- the run -------------------------------------------------------------------------------------


async def run_set(
    name: str, args: argparse.Namespace, tmp: Path, warnings: WarningLog
) -> dict[str, Any]:
    devices = SETS[name]
    base = await baseline(devices, args.baseline_window, args.warmup, tmp)
    warnings.counts.clear()
    warnings.first.clear()
    gw = await gateway_phase(devices, args, tmp, warnings)
    cpu, base_cpu = gw.pop("cpu_percent_of_one_core"), base["cpu_percent_of_one_core"]
    latency = gw.pop("latency_ms")
    lost = gw.pop("lost")
    return {
        "devices": devices,
        "sensors": len(parse_devices(devices)),
        "cpu_percent_of_one_core": cpu,
        "baseline_cpu_percent": base_cpu,
        "ratio": round(cpu / base_cpu, 2) if base_cpu else None,
        "latency_ms": latency,
        "notifications_received": {
            "window": gw.pop("window_notifications"),
            "run": gw.pop("notifications_received_run"),
        },
        "notifications_sent_run": gw.pop("notifications_sent_run"),
        "lost": lost,
        "observations_stored": gw.pop("observations_stored_run"),
        "goals_met": {
            "cpu": cpu <= GOAL_CPU_PERCENT[name],
            "p99": latency["p99"] is not None and latency["p99"] <= GOAL_P99_MS,
            "lost": lost == GOAL_LOST,
        },
        "gateway": gw | {"warnings": dict(warnings.counts), "first_warnings": list(warnings.first)},
        "baseline": base,
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    warnings = WarningLog()
    gateway_log = logging.getLogger("gateway")
    gateway_log.addHandler(warnings)
    gateway_log.propagate = False  # one JSON object on stdout; warnings are reported in it
    logging.getLogger("bumble").setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sensors-") as tmp:
            results = {name: await run_set(name, args, Path(tmp), warnings) for name in args.sets}
    finally:
        gateway_log.removeHandler(warnings)
        gateway_log.propagate = True
    goals_met = {
        f"{name}_{goal}": met for name, r in results.items() for goal, met in r["goals_met"].items()
    }
    return {
        "bench": "sensors",
        "window_s": args.window,
        "baseline_window_s": args.baseline_window,
        "warmup_s": args.warmup,
        "sim_overrides": list(SIM_OVERRIDES),
        "sensors_only": args.sensors_only,
        "cores": os.cpu_count(),
        **results,
        "goals": {
            "standard_cpu_percent_of_one_core": GOAL_CPU_PERCENT["standard"],
            "stress20_cpu_percent_of_one_core": GOAL_CPU_PERCENT["stress20"],
            "p99_ms": GOAL_P99_MS,
            "lost": GOAL_LOST,
        },
        "goals_met": goals_met,
        "all_goals_met": all(goals_met.values()),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "elapsed_s": round(time.monotonic() - began, 1),
    }


async def interruptible(args: argparse.Namespace) -> dict[str, Any]:
    """The bench, stopped cleanly by SIGINT or SIGTERM: the current phase's ``finally`` blocks
    stop the gateway and the simulator process before the run ends."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if not received:  # a second signal must not cut the clean-up short
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await bench(args)
    except asyncio.CancelledError:
        if received:
            raise BenchInterruptedError(received[0]) from None
        raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=WINDOW_S, help="measured seconds")
    parser.add_argument(
        "--baseline-window", type=float, default=BASELINE_WINDOW_S, help="baseline seconds"
    )
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds before measuring")
    parser.add_argument(
        "--sets", nargs="+", choices=sorted(SETS), default=list(SETS), help="which sets to run"
    )
    parser.add_argument(
        "--sensors-only",
        action="store_true",
        help="run the gateway without its HTTP API and assistant (default: as `bedside run`)",
    )
    args = parser.parse_args()
    try:
        print(json.dumps(asyncio.run(interruptible(args))))
    except BenchInterruptedError as exc:
        print(json.dumps({"bench": "sensors", "goal_met": False, "why": str(exc)}))
        sys.exit(exc.exit_status)
    except BenchError as exc:  # every wait is bounded: a run that cannot finish says why
        print(json.dumps({"bench": "sensors", "goal_met": False, "why": str(exc)}))
        sys.exit(1)


if __name__ == "__main__":
    main()
