"""Soak benchmark: the gateway running for a long time, and what grows while it does.

In this process, as the tests run it (``tests/harness.py``): the firmware simulator
(``firmware_sim.Simulator``; ``--sensors`` of the four kinds in turn, 20 → five each of ECG, SpO2,
BP, thermometer; ``normal`` scenario, default timing) and the real gateway attached to it over
Bumble, with a patient configured (else readings are held, not sent), an MQTT uplink to a private
mosquitto started here (``tests/mosquitto.py``; no subscriber: the outbox fills and drains as in
production), the store keeper every 30 s within ``--max-mib``, ``--retention-days`` and
``--delivered-keep-days``. With ``--consult-every-min M`` also the HTTP API and the assistant
(the embedded model): every M minutes a consultation over the API — opened, asked one
question (its replies may request measurements from the sensors), closed into a draft
DiagnosticReport — timed and counted; use it with the standard set (``--sensors 4``). Without
it: no HTTP API, no assistant.

Every ``--sample-s``: this process's RSS, fds, asyncio tasks, CPU (all threads; the simulator
shares the process), the database on disk (``gateway.sqlite3`` + ``-wal``), the keeper's
``used_bytes`` and state, pending outbox items, observations, the machine's I/O stall (PSI) and
the notification → stored latencies of the window (drained from ``SessionStatus.latencies_s``).
After ``--warmup-minutes``: least-squares slopes per hour; latency p99 at the start and at the end
(median of the per-sample p99s over the first and the last quarter) and their ratio. No time
acceleration: the waveforms stream at their sample rate over the link, stamped by a device clock
the gateway maps to its own, and retention runs on the gateway's wall clock, so a simulated day
is a real day; short ``--retention-days`` and ``--delivered-keep-days`` compress retention
instead (the default timing is already far denser than a ward's: a blood pressure a minute, a
temperature every 5 s). At the end, the gateway stopped:
``PRAGMA integrity_check``. SIGINT/SIGTERM end the run early, still reported.

Goals: RSS < 1 MiB/h; |fds|, |tasks| < 1/h; the database on disk never over ``store.max_bytes``;
latency p99 end/start ≤ 1.5. Slopes of a short run are mostly noise (see their stderr).
Reports, never asserts. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import math
import os
import resource
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

from firmware_sim import DEFAULT_KINDS, Simulator
from gateway.store.settings import MIB
from gateway.store.store import STORE_FILENAME
from tests.harness import Running, gateway_on
from tests.mosquitto import BrokerError, Mosquitto
from tests.sse import sse

GOALS = {  # and the database on disk never over store.max_bytes
    "rss_mib_per_hour_below": 1.0,
    "abs_fds_per_hour_below": 1.0,
    "abs_tasks_per_hour_below": 1.0,
    "latency_p99_end_over_start_at_most": 1.5,
}
MAINTAIN_EVERY_S = 30.0
WARMUP_MINUTES = 3.0
# A 45-minute run with a consultation every 3 minutes: RSS stepped up ~5 MiB at the second
# consultation and ~0.2 MiB over the next three, then stayed flat to the KiB for 30 minutes; a
# 5-minute warm-up put that step in the slope (1.8 MiB/h), a 10-minute one did not (0.14).
WARMUP_CONSULTATIONS = 3
SEED = 1
PATIENT = {"reference": "Patient/soak"}
WARNINGS_KEPT = 10
QUESTION = "How is the patient doing? Check what you need."
CONSULTATION_LIMIT_S = 600.0  # one consultation taking longer counts as failed
ASSISTANT_LOAD_LIMIT_S = 300.0
TIME_ACCELERATION = (
    "none: waveforms stream at their sample rate and retention runs on the gateway's wall clock; "
    "a simulated day is a real day (compress retention with --retention-days instead)"
)


@dataclass(slots=True)
class Sample:
    """One sample (slots: the list of samples must not weigh on the RSS it measures)."""

    t_s: float
    rss_mib: float
    fds: int
    tasks: int
    cpu_s: float
    cpu_percent: float  # since the previous sample, % of one core
    db_bytes: int  # gateway.sqlite3 + gateway.sqlite3-wal on disk
    used_bytes: int | None  # the store keeper's last measure (None before its first pass)
    storage_state: str
    pruned: int  # outbox items and observations the keeper let go so far
    outbox_pending: int
    observations: int  # the sessions' counters: measurements handed to the store so far
    streaming: int
    latencies: int  # values stored since the previous sample
    p50_ms: float | None
    p99_ms: float | None
    io_stall_percent: float | None  # the whole machine's I/O pressure ("full") since the last


def rss_mib() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024  # kB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def io_stall_s() -> float | None:
    """Seconds every non-idle task of the machine stalled on I/O (PSI ``full``); None without
    /proc/pressure. The store commits with fsync: a shared disk shows in the latency."""
    try:
        full = Path("/proc/pressure/io").read_text().splitlines()[1]
    except (OSError, IndexError):
        return None
    return int(full.rsplit("total=", 1)[1]) / 1e6


def db_bytes(data_dir: Path) -> int:
    files = (data_dir / STORE_FILENAME, data_dir / f"{STORE_FILENAME}-wal")
    return sum(path.stat().st_size for path in files if path.exists())


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in ms (None for no values)."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000, 2)


def slope(ts_s: Sequence[float], values: Sequence[float | None]) -> dict[str, float] | None:
    """Least-squares slope per hour, with its standard error (None for fewer than 3 points)."""
    points = [(t / 3600, v) for t, v in zip(ts_s, values, strict=True) if v is not None]
    n = len(points)
    if n < 3:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    b = sum((t - mean_t) * (v - mean_v) for t, v in points) / sxx
    residuals = sum((v - mean_v - b * (t - mean_t)) ** 2 for t, v in points)
    return {"per_hour": round(b, 4), "stderr": round(math.sqrt(residuals / (n - 2) / sxx), 4)}


class WarningLog(logging.Handler):
    """Counts the gateway's WARNING-and-above records and keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        if len(self.first) < WARNINGS_KEPT:
            self.first.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def sensor_kinds(count: int) -> list[str]:
    """``count`` sensors, the four kinds in turn, grouped: 20 → ecg×5, spo2×5, bp×5, thermo×5."""
    per_kind = [count // len(DEFAULT_KINDS) + (i < count % len(DEFAULT_KINDS)) for i in range(4)]
    return [kind for kind, n in zip(DEFAULT_KINDS, per_kind, strict=True) for _ in range(n)]


# -- sampling ------------------------------------------------------------------------------------


class Sampler:
    """Takes the samples of one running gateway; CPU and I/O stall over the last window."""

    def __init__(self, running: Running, data_dir: Path) -> None:
        self.running = running
        self.data_dir = data_dir
        self.began = self._wall = time.monotonic()
        self._cpu, self._io = cpu_seconds(), io_stall_s()

    async def take(self) -> Sample:
        gateway, statuses = self.running.gateway, self.running.manager.statuses()
        assert gateway.store is not None
        assert gateway.keeper is not None
        now, cpu, io = time.monotonic(), cpu_seconds(), io_stall_s()
        window_s, cpu_used = now - self._wall, cpu - self._cpu
        io_stalled = None if io is None or self._io is None else io - self._io
        self._wall, self._cpu, self._io = now, cpu, io
        latencies: list[float] = []  # drained: each counted once, the deques kept empty
        for status in statuses:
            latencies += status.latencies_s
            status.latencies_s.clear()
        storage = gateway.keeper.as_json()
        used = storage["used_bytes"]
        return Sample(
            t_s=round(now - self.began, 1),
            rss_mib=round(rss_mib(), 2),
            fds=len(os.listdir("/proc/self/fd")),
            tasks=len(asyncio.all_tasks()),
            cpu_s=round(cpu, 2),
            cpu_percent=round(100 * cpu_used / window_s, 2),
            db_bytes=db_bytes(self.data_dir),
            used_bytes=used if isinstance(used, int) else None,
            storage_state=str(storage["state"]),
            pruned=gateway.keeper.pruned_delivered + gateway.keeper.pruned_observations,
            outbox_pending=int((await gateway.store.outbox_stats())["pending"]),
            observations=sum(s.observations for s in statuses),
            streaming=sum(1 for s in statuses if s.state == "streaming"),
            latencies=len(latencies),
            p50_ms=percentile_ms(latencies, 50),
            p99_ms=percentile_ms(latencies, 99),
            io_stall_percent=None if io_stalled is None else round(100 * io_stalled / window_s, 1),
        )


async def sample_until(
    sampler: Sampler, args: argparse.Namespace, stop: asyncio.Event
) -> list[Sample]:
    """A sample every ``sample_s`` until the duration is over, ``stop`` is set or the gateway
    stopped (its task, named by the harness, is done: leaving the block raises its error)."""
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "gateway")
    samples: list[Sample] = []
    count = int(args.duration_s // args.sample_s)
    for k in range(1, count + 1):
        wait_s = sampler.began + k * args.sample_s - time.monotonic()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
        if stop.is_set() or task.done():
            break
        samples.append(await sampler.take())
    return samples


# -- consultations ------------------------------------------------------------------------------


@dataclass(slots=True)
class Consultations:
    """A consultation every ``every_s`` through the gateway's own API, as a clinician's client
    would: timed, failures kept with their reason."""

    every_s: float
    token: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def run(self, running: Running, began: float) -> None:
        gateway = running.gateway
        async with asyncio.timeout(ASSISTANT_LOAD_LIMIT_S):
            while gateway.assistant is None or gateway.assistant.state != "ready":  # noqa: ASYNC110 - a state, no event, while it loads
                await asyncio.sleep(1)
        base = f"http://127.0.0.1:{gateway.http_port}/api/consultations"
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            k = 1
            while True:
                await asyncio.sleep(max(0.0, began + k * self.every_s - time.monotonic()))
                k += 1
                started = time.monotonic()
                try:
                    async with asyncio.timeout(CONSULTATION_LIMIT_S):
                        await self.one(http, base)
                except (TimeoutError, aiohttp.ClientError, AssertionError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    self.seconds.append(time.monotonic() - started)

    @staticmethod
    async def one(http: aiohttp.ClientSession, base: str) -> None:
        async with http.post(base, json={}) as response:
            assert response.status == 201, await response.text()
            cid = (await response.json())["id"]
        async with http.post(f"{base}/{cid}/messages", json={"content": QUESTION}) as response:
            assert response.status == 200, await response.text()
            events = [name async for name, _ in sse(response)]
            assert events[-1:] == ["done"], events[-3:]
        async with http.post(f"{base}/{cid}/close") as response:
            assert response.status == 200, await response.text()

    def as_json(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)
        return {
            "every_min": round(self.every_s / 60, 2),
            "done": len(self.seconds),
            "failed": len(self.failures),
            "seconds_p50": round(statistics.median(ordered), 1) if ordered else None,
            "seconds_max": round(ordered[-1], 1) if ordered else None,
            "first_failures": self.failures[:WARNINGS_KEPT],
        }


# -- the report ----------------------------------------------------------------------------------


def summarize(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """Slopes and start/end figures over the samples after the warm-up."""
    post = [s for s in samples if s.t_s >= warmup_s]
    out: dict[str, Any] = {"samples": len(samples), "samples_after_warmup": len(post)}
    if len(post) < 3:
        out["why_no_slopes"] = "fewer than 3 samples after the warm-up"
        return out
    ts = [s.t_s for s in post]
    hours = (post[-1].t_s - post[0].t_s) / 3600
    slopes = {
        f"{name}_per_hour": slope(ts, [getattr(s, name) for s in post])
        for name in ("rss_mib", "fds", "tasks", "db_bytes", "cpu_percent")
    }
    db_slope = slopes["db_bytes_per_hour"]
    cpus = [s.cpu_percent for s in post]
    quarter = max(1, len(post) // 4)
    p99_start, p99_end = start_end(post, "p99_ms", quarter)
    io_start, io_end = start_end(post, "io_stall_percent", quarter)
    observed = post[-1].observations - post[0].observations
    # What a day of readings takes, the budget aside: the keeper's used_bytes while it had let
    # nothing go (warm-up included; the slope after the warm-up flattens once the budget binds).
    kept = [s for s in samples if s.pruned == 0 and s.used_bytes is not None]
    growth = slope([s.t_s for s in kept], [s.used_bytes for s in kept])
    return out | {
        "after_warmup_minutes": round(hours * 60, 1),
        "slopes": slopes
        | {"db_bytes_per_simulated_day": db_slope and round(db_slope["per_hour"] * 24)},
        **{name: first_last_max(post, name) for name in ("rss_mib", "fds", "tasks", "db_bytes")},
        "cpu_percent_of_one_core": {"mean": round(statistics.fmean(cpus), 2), "max": max(cpus)},
        "latency_p99_ms": {
            "start": p99_start,
            "end": p99_end,
            "ratio": round(p99_end / p99_start, 2) if p99_start and p99_end else None,
            "max": max((s.p99_ms for s in post if s.p99_ms is not None), default=None),
            "samples_per_quarter": quarter,
        },
        "machine_io_stall_percent": {"start": io_start, "end": io_end},  # explains latency
        "observations_per_min": round(observed / (hours * 60), 1),
        "db_bytes_per_day_before_pruning": growth and round(growth["per_hour"] * 24),
        "outbox_pending_max": max(s.outbox_pending for s in post),
        "streaming_min": min(s.streaming for s in post),
    }


def first_last_max(post: list[Sample], name: str) -> dict[str, Any]:
    values = [getattr(s, name) for s in post]
    return {"first": values[0], "last": values[-1], "max": max(values)}


def start_end(post: list[Sample], name: str, quarter: int) -> tuple[float | None, float | None]:
    """The median of ``name`` over the first and over the last ``quarter`` samples."""
    medians = []
    for part in (post[:quarter], post[-quarter:]):
        values = [getattr(s, name) for s in part if getattr(s, name) is not None]
        medians.append(round(statistics.median(values), 2) if values else None)
    return medians[0], medians[1]


def goals(summary: dict[str, Any], samples: list[Sample], max_bytes: int) -> dict[str, bool]:
    def per_hour(name: str) -> float:  # no slope (too few samples): not met
        found = summary.get("slopes", {}).get(name)
        return math.inf if found is None else float(found["per_hour"])

    ratio = summary.get("latency_p99_ms", {}).get("ratio")
    return {
        "rss": per_hour("rss_mib_per_hour") < GOALS["rss_mib_per_hour_below"],
        "fds": abs(per_hour("fds_per_hour")) < GOALS["abs_fds_per_hour_below"],
        "tasks": abs(per_hour("tasks_per_hour")) < GOALS["abs_tasks_per_hour_below"],
        "db_bounded": bool(samples) and max(s.db_bytes for s in samples) <= max_bytes,
        "latency": ratio is not None and ratio <= GOALS["latency_p99_end_over_start_at_most"],
    }


def write_csv(samples: list[Sample], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)


def write_plot(samples: list[Sample], path: Path, warmup_s: float, max_bytes: int) -> str | None:
    """RSS, database bytes and p99 over time as a PNG; why not, when matplotlib is missing."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "matplotlib is not installed in this venv: no PNG (--csv FILE writes the samples)"
    minutes = [s.t_s / 60 for s in samples]
    series: list[tuple[str, list[float | None]]] = [
        ("RSS (MiB)", [s.rss_mib for s in samples]),
        ("database on disk (MiB)", [s.db_bytes / MIB for s in samples]),
        ("latency p99 (ms)", [s.p99_ms for s in samples]),
    ]
    figure, axes = plt.subplots(len(series), 1, figsize=(7, 6), sharex=True)
    for axis, (label, values) in zip(axes, series, strict=True):
        axis.plot(minutes, [math.nan if v is None else v for v in values], linewidth=1)
        axis.axvline(warmup_s / 60, color="grey", linestyle=":", linewidth=1)
        axis.set_ylabel(label, fontsize=8)
    axes[1].axhline(max_bytes / MIB, color="red", linestyle="--", linewidth=1)  # store.max_bytes
    axes[-1].set_xlabel("minutes (dotted: end of warm-up; dashed: store.max_bytes)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return None


# -- the run -------------------------------------------------------------------------------------


async def soak(
    args: argparse.Namespace, stop: asyncio.Event, warnings: WarningLog
) -> dict[str, Any]:
    """Broker, simulator and gateway up; the samples; the store checked once it is closed."""
    store = {
        "maintain_every_s": MAINTAIN_EVERY_S,
        "max_bytes": args.max_mib * MIB,
        "retention_days": args.retention_days,
        "delivered_keep_days": args.delivered_keep_days,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp,
        Mosquitto(Path(tmp) / "broker") as broker,
    ):
        data_dir = Path(tmp) / "gateway"
        consultations = (
            Consultations(args.consult_every_min * 60, secrets.token_urlsafe(24))
            if args.consult_every_min
            else None
        )
        served: dict[str, Any] = (
            {"http": {"enabled": True, "port": 0, "token": consultations.token}}
            if consultations is not None
            else {"assistant": {"enabled": False}}
        )
        async with (
            Simulator(sensor_kinds(args.sensors), scenario="normal", seed=SEED) as sim,
            gateway_on(
                sim, data_dir, mqtt={"url": broker.url}, patient=PATIENT, store=store, **served
            ) as running,
            asyncio.TaskGroup() as tasks,
        ):
            sampler = Sampler(running, data_dir)
            consulting = (
                tasks.create_task(consultations.run(running, sampler.began), name="consultations")
                if consultations is not None
                else None
            )
            samples = await sample_until(sampler, args, stop)
            if consulting is not None:
                consulting.cancel()
            end = await state_at_end(running)
        with contextlib.closing(sqlite3.connect(data_dir / STORE_FILENAME)) as conn:  # closed
            checked = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    summary = summarize(samples, args.warmup_s)
    met = goals(summary, samples, store["max_bytes"])
    report: dict[str, Any] = {
        "bench": "soak",
        "sensors": args.sensors,
        "kinds": dict(Counter(sensor_kinds(args.sensors))),
        "minutes": round(args.duration_s / 60, 1),
        "warmup_minutes": round(args.warmup_s / 60, 1),
        "sample_s": args.sample_s,
        "store": store,
        "time_acceleration": TIME_ACCELERATION,
        "process": "simulator, gateway and this bench share the process (RSS and CPU include all)",
        "consultations": None if consultations is None else consultations.as_json(),
        **summary,
        "db_bytes_max": max((s.db_bytes for s in samples), default=None),
        "used_bytes_max": max((s.used_bytes or 0 for s in samples), default=None),
        **end,
        "integrity_check": checked,
        "warnings": dict(warnings.counts),
        "first_warnings": warnings.first,
        "goals": GOALS | {"db_bytes_max_at_most": store["max_bytes"]},
        "goals_met": met,
        "goal_met": all(met.values()),
        "stopped_early": stop.is_set(),
    }
    if args.csv:
        write_csv(samples, args.csv)
        report["csv"] = str(args.csv)
    if args.plot:
        why = write_plot(samples, args.plot, args.warmup_s, store["max_bytes"])
        report["plot"] = why or str(args.plot)
    return report


async def state_at_end(running: Running) -> dict[str, Any]:
    """The store, the outbox and the sessions' counters before the gateway stops."""
    gateway = running.gateway
    assert gateway.store is not None
    assert gateway.keeper is not None
    statuses = running.manager.statuses()
    stored = await gateway.store.observation_counts()
    return {
        "storage_at_end": gateway.keeper.as_json(),
        "outbox_at_end": await gateway.store.outbox_stats(),
        "observations_in_store_at_end": sum(stored.values()),
        "observations_handed_to_store": sum(s.observations for s in statuses),
        "reconnects": sum(s.reconnects for s in statuses),
        "decode_errors": sum(s.decode_errors for s in statuses),
        "ingest_errors": sum(s.ingest_errors for s in statuses),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """The soak, its warnings counted (stdout keeps one JSON object), ended early (and still
    reported) by SIGINT or SIGTERM."""
    began = time.monotonic()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    warnings = WarningLog()
    gateway_log = logging.getLogger("gateway")
    gateway_log.addHandler(warnings)
    gateway_log.propagate = False
    logging.getLogger("bumble").setLevel(logging.ERROR)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        report = await soak(args, stop, warnings)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        gateway_log.removeHandler(warnings)
        gateway_log.propagate = True
    return report | {"elapsed_s": round(time.monotonic() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--minutes", type=float, default=30.0, help="run time (default 30)")
    duration.add_argument("--hours", type=float, help="run time in hours, instead")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        help=f"not in the slopes (default {WARMUP_MINUTES:g}; with consultations, at least "
        f"{WARMUP_CONSULTATIONS} of their intervals: the model's memory reaches its working size "
        "over the first ones)",
    )
    parser.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--sensors", type=int, default=20, help="simulated sensors (1..100)")
    parser.add_argument("--max-mib", type=int, default=64, help="store.max_bytes in MiB")
    parser.add_argument("--retention-days", type=float, default=30.0, help="store.retention_days")
    parser.add_argument(
        "--delivered-keep-days",
        type=float,
        default=1.0,
        help="store.delivered_keep_days (with a short --retention-days, as short: else delivered "
        "outbox items grow the database for a day)",
    )
    parser.add_argument(
        "--consult-every-min",
        type=float,
        default=0.0,
        help="a consultation with the assistant every this many minutes (0: none)",
    )
    parser.add_argument("--csv", type=Path, help="write the samples to this CSV file")
    parser.add_argument("--plot", type=Path, help="a PNG of RSS, database bytes and p99")
    args = parser.parse_args()
    args.duration_s = (args.hours * 60 if args.hours is not None else args.minutes) * 60
    if args.warmup_minutes is None:
        args.warmup_minutes = max(WARMUP_MINUTES, WARMUP_CONSULTATIONS * args.consult_every_min)
    args.warmup_s = args.warmup_minutes * 60
    if not 1 <= args.sensors <= 100 or args.sample_s <= 0 or args.max_mib < 1:
        parser.error("--sensors 1..100, --sample-s > 0, --max-mib ≥ 1")
    if args.consult_every_min < 0:
        parser.error("--consult-every-min ≥ 0 (0: no consultations)")
    try:
        print(json.dumps(asyncio.run(main_async(args))))
    except Exception as exc:  # noqa: BLE001 - no broker, a gateway that failed: say why
        why = str(exc) if isinstance(exc, BrokerError) else f"{type(exc).__name__}: {exc}"
        print(json.dumps({"bench": "soak", "goal_met": False, "why": why}))
        sys.exit(1)


if __name__ == "__main__":
    main()
