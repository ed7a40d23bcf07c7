"""Firmware update benchmark: MCUmgr upload throughput, and what a full update costs the ECG stream.

One simulator (``normal`` scenario) holds the gateway's ECG patch and SpO2 sensor and a second
ECG patch for the baseline. The real gateway (``tests/harness.py``: an in-memory controller and
the Bumble-backed bleak backend) accepts only its two sensors and streams them throughout. Images
are signed MCUboot images of exactly ``--size-kib``, random firmware, new versions every round.

1. Upload throughput at ATT MTU 247. Each of ``--rounds`` rounds runs one full update of the ECG
   patch, then ``--uploads-per-round`` slots in which each path uploads the round's image once,
   the order flipping every slot. Both paths run ``SMPClient.upload`` and are timed alike: bytes
   from the first acknowledged offset to the last, over the time between them.
   - ours: the gateway's ``FirmwareLink.upload`` on the ECG session's own bleak client, inside
     ``FirmwareService.start_update`` (timed at ``UpdateJob.progress``) and as the link step
     alone (``SensorLinks.link``); both are pooled in the median.
   - baseline: smpclient's ``SMPBLETransport`` to the second patch, with the ``BleakScanner`` and
     ``BleakClient`` of its module bound to the Bumble-backed bleak backend.
   The link has no radio timing: a rate is how fast this process computes both ends.
2. The ECG patch's data during each full update, between two quiet moments (half an HR interval
   after an HR notification): the longest gap between stored ECG observations and the gap across
   the restart; every notification the patch sent (its ``notify``/``indicate`` wrapped) against
   what the gateway received and the heart rates it stored; measurements not sent while the link
   was down (the patch reboots: by design); the SpO2 notifications meanwhile.

Goals: ours ≥ 0.9 × baseline; 0 lost heart rates and notifications; every update confirmed.
Reports, never asserts. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

from bleak import BleakClient, BleakScanner
from bumble import gatt
from bumble.core import UUID
from smpclient import SMPClient
from smpclient.transport import ble as smpclient_ble

from firmware_sim import Simulator
from firmware_sim import characteristics as ch
from firmware_sim.mcuboot import SLOT_SIZE
from firmware_sim.sensor import Sensor
from gateway.ble.bumble import BumbleAdapter
from gateway.ble.bumble.client import REQUESTED_MTU
from gateway.ble.measure import ObservationEvent
from gateway.ble.session import SessionState, SessionStatus
from gateway.firmware.settings import FirmwareSettings
from gateway.firmware.update import Outcome, Phase, SensorLinks
from tests.firmware_images import build_image
from tests.harness import Running, gateway_on

KINDS: Final = ("ecg", "spo2", "ecg")
OURS, SPO2, BASELINE = "ecg", "spo2", "ecg-2"  # the simulator's names for them
SCENARIO: Final = "normal"
GOAL_RATIO: Final = 0.9
HEART_RATE_LOINC: Final = "8867-4"
HR_UUID: Final = UUID.from_16_bits(ch.HR_MEASUREMENT)
STREAMING_TIMEOUT_S: Final = 60.0
UPDATE_TIMEOUT_S: Final = 180.0
UPLOAD_TIMEOUT_S: Final = 120.0
CONNECT_TIMEOUT_S: Final = 30.0
SETTLE_S: Final = 1.0  # after the sessions stream again, before a timed upload
PAUSE_S: Final = 0.2  # between two timed uploads

Send = Callable[[gatt.Characteristic[bytes], bytes], Coroutine[Any, Any, bool]]


class BenchError(Exception):
    """The benchmark could not run a step (the message says which)."""


async def until(condition: Callable[[], object], limit_s: float, what: str) -> float:
    """Seconds until ``condition()`` held; BenchError after ``limit_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit_s:
            raise BenchError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_images(directory: Path, size: int, versions: list[str]) -> dict[str, bytes]:
    """Ed25519-signed MCUboot images of exactly ``size`` bytes of random firmware."""
    with contextlib.redirect_stdout(io.StringIO()):  # imgtool prints; stdout carries the JSON
        probe = build_image(directory, "0.0.1", firmware=bytes(1024), key="ed25519")
        overhead = len(probe.read_bytes()) - 1024  # header and TLVs: fixed for a key
        images = {
            version: build_image(
                directory, version, firmware=os.urandom(size - overhead), key="ed25519"
            ).read_bytes()
            for version in versions
        }
    if any(len(data) != size for data in images.values()):
        raise BenchError(f"the images are not all {size} bytes")
    return images


class Stopwatch:
    """Told every offset the sensor acknowledges; every path is timed by one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.marks: list[tuple[float, float, int]] = []  # time, CPU seconds, offset

    def __call__(self, offset: int) -> None:
        self.marks.append((time.perf_counter(), cpu_seconds(), offset))

    def figures(self, via: str | None = None) -> dict[str, Any]:
        if len(self.marks) < 2 or self.marks[-1][2] != self.size:
            raise BenchError(f"an upload did not end at {self.size} bytes: {self.marks[-3:]}")
        (t0, c0, o0), (t1, c1, o1) = self.marks[0], self.marks[-1]
        if o0 > 2 * 1024:
            raise BenchError(f"an upload began at offset {o0}: the sensor resumed an earlier one")
        return {
            **({"via": via} if via else {}),
            "bytes_per_s": round((o1 - o0) / (t1 - t0)),
            "seconds": round(t1 - t0, 4),
            "requests": len(self.marks),
            "cpu_s": round(c1 - c0, 4),
        }


class SentLog:
    """Each notification a simulated sensor sent and each indication it had confirmed, with time
    and characteristic: its ``notify`` and ``indicate`` wrapped on the instance."""

    def __init__(self, sensor: Sensor) -> None:
        self.sent: list[tuple[float, UUID]] = []
        self.hr_sent = asyncio.Event()
        for name in ("notify", "indicate"):
            setattr(sensor, name, self._logged(getattr(sensor, name)))

    def _logged(self, send: Send) -> Send:
        async def logged(characteristic: gatt.Characteristic[bytes], value: bytes) -> bool:
            delivered = await send(characteristic, value)
            if delivered:
                self.sent.append((time.monotonic(), characteristic.uuid))
                if characteristic.uuid == HR_UUID:
                    self.hr_sent.set()
            return delivered

        return logged

    def count(
        self, start: float, end: float, which: Callable[[UUID], bool] = lambda _: True
    ) -> int:
        return sum(1 for at, uuid in self.sent if start <= at <= end and which(uuid))


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float] | None:
    """The longest interval between consecutive times that overlaps [start, end] (with start ==
    end: the interval around that moment)."""
    pairs = [(a, b) for a, b in itertools.pairwise(times) if b > start and a < end]
    return max(pairs, key=lambda p: p[1] - p[0], default=None)


def span(pair: tuple[float, float] | None) -> float | None:
    return None if pair is None else round(pair[1] - pair[0], 2)


class Gateway:
    """The running gateway with its ECG patch and SpO2 sensor, what they sent and it stored."""

    def __init__(self, run: Running, ecg: Sensor, spo2: Sensor) -> None:
        ingest, firmware = run.gateway.ingest, run.gateway.firmware
        if ingest is None or ingest.on_observation is None or firmware is None:
            raise BenchError("the gateway has no ingest pipeline or no firmware service")
        self.run, self.ecg, self.spo2, self.firmware = run, ecg, spo2, firmware
        self.ecg_sent, self.spo2_sent = SentLog(ecg), SentLog(spo2)
        self.stored: list[tuple[float, str, bool]] = []  # announced at, address, is a heart rate
        downstream = ingest.on_observation

        def on_observation(event: ObservationEvent) -> None:
            if not event.stored:  # a reading taken now, not a record downloaded from the sensor
                heart_rate = HEART_RATE_LOINC in event.codes
                self.stored.append((time.monotonic(), event.address, heart_rate))
            downstream(event)

        ingest.on_observation = on_observation

    def times(self, sensor: Sensor, *, heart_rate: bool = False) -> list[float]:
        return [at for at, a, hr in self.stored if a == sensor.address and (hr or not heart_rate)]

    def status(self, sensor: Sensor) -> SessionStatus:
        found = next((s for s in self.run.manager.statuses() if s.address == sensor.address), None)
        if found is None:
            raise BenchError(f"the gateway has no session for {sensor.address}")
        return found

    def streaming(self) -> bool:
        states = {s.address: s.state for s in self.run.manager.statuses()}
        return all(states.get(s.address) is SessionState.STREAMING for s in (self.ecg, self.spo2))

    async def settle(self) -> None:
        await until(self.streaming, STREAMING_TIMEOUT_S, "the gateway's sensors to stream")
        await asyncio.sleep(SETTLE_S)

    async def quiet_moment(self) -> float:
        """Half an HR interval after the patch's next HR notification: nothing in flight."""
        self.ecg_sent.hr_sent.clear()
        async with asyncio.timeout(STREAMING_TIMEOUT_S):
            await self.ecg_sent.hr_sent.wait()
        await asyncio.sleep(self.ecg.scenario.ecg.interval_s / 2)
        return time.monotonic()

    def counters(self) -> dict[str, int]:
        ecg, spo2 = self.status(self.ecg), self.status(self.spo2)
        return {
            "ecg_received": ecg.notifications,
            "ecg_reconnects": ecg.reconnects,
            "spo2_received": spo2.notifications,
            "sim_ecg_sent": self.ecg.stats.notifications + self.ecg.stats.indications,
            "sim_ecg_measurements": self.ecg.stats.measurements,
        }

    async def upload(self, image: bytes) -> Stopwatch:
        """The update flow's upload step alone, on a link opened as the update opens it."""
        session = self.run.manager.session(self.ecg.address)
        if session is None:
            raise BenchError("the gateway has no ECG session")
        stopwatch = Stopwatch(len(image))
        async with (
            asyncio.timeout(UPLOAD_TIMEOUT_S),
            SensorLinks(session, self.firmware.settings).link() as device,
        ):
            await device.upload(image, stopwatch)
        return stopwatch

    async def update(self, image: bytes) -> tuple[Stopwatch, dict[str, Any], dict[str, Any]]:
        """One full update of the ECG patch: its upload, the MTU during it, its data figures."""
        opened = await self.quiet_moment()
        before = self.counters()
        stopwatch, mtu = Stopwatch(len(image)), dict[str, Any]()
        entered: dict[str, float] = {}  # phase: when first entered
        started = time.monotonic()
        job = self.firmware.start_update(self.ecg.address, image, by="bench")
        progress, step = job.progress, job.step  # wrapped before the job's task first runs

        def on_progress(offset: int) -> None:
            stopwatch(offset)
            if not mtu:
                client = getattr(self.run.manager.session(self.ecg.address), "client", None)
                mtu.update(central=getattr(client, "mtu_size", None), sensor=self.ecg.att_mtu)
            progress(offset)

        def on_step(phase: Phase, text: str) -> None:
            entered.setdefault(str(phase), time.monotonic())
            step(phase, text)

        job.progress, job.step = on_progress, on_step  # type: ignore[method-assign]
        try:
            async with asyncio.timeout(UPDATE_TIMEOUT_S):
                while not job.done:
                    await job.changed(job.revision)
        except TimeoutError:
            raise BenchError(f"the update did not end in {UPDATE_TIMEOUT_S:g} s") from None
        ended = time.monotonic()
        closed = await self.quiet_moment()
        delta = {key: value - before[key] for key, value in self.counters().items()}
        bounds = [*list(entered.values())[1:], ended]
        figures = {
            "version": job.version,
            "outcome": str(job.outcome),
            "message": job.message,
            "total_s": round(ended - started, 2),
            "phases_s": {  # from entering each phase to entering the next
                phase: round(end - at, 3)
                for (phase, at), end in zip(entered.items(), bounds, strict=True)
                if phase != str(Phase.DONE)
            },
            **self.data_figures(entered, (opened, started, ended, closed), delta),
        }
        return stopwatch, mtu, figures

    def data_figures(
        self, entered: dict[str, float], moments: tuple[float, ...], delta: dict[str, int]
    ) -> dict[str, Any]:
        """The patches' data during an update: gaps, and what was sent against what arrived."""
        opened, started, ended, closed = moments
        restarting = entered.get(str(Phase.RESTARTING))
        verifying = entered.get(str(Phase.VERIFYING))
        ecg_times = self.times(self.ecg)
        longest = longest_gap(ecg_times, started, ended)
        # What the patch sent its session (not the SMP replies), against what the gateway got.
        smp = self.ecg.management.characteristic.uuid
        hr_sent = self.ecg_sent.count(opened, closed, lambda uuid: uuid == HR_UUID)
        hr_stored = sum(opened <= at <= closed for at in self.times(self.ecg, heart_rate=True))
        ecg_sent = self.ecg_sent.count(opened, closed, lambda uuid: uuid != smp)
        smp_sent = self.ecg_sent.count(opened, closed, lambda uuid: uuid == smp)
        spo2_sent = self.spo2_sent.count(opened, closed)
        return {
            "ecg": {
                "longest_gap_s": span(longest),
                "longest_gap_spans_restart": (
                    longest is not None
                    and restarting is not None
                    and longest[0] <= restarting < longest[1]
                ),
                "restart_gap_s": None
                if restarting is None
                else span(longest_gap(ecg_times, restarting, restarting)),
                "restart_to_streaming_s": None
                if restarting is None or verifying is None
                else round(verifying - restarting, 2),
                "window_s": round(closed - opened, 2),
                "heart_rates_sent": hr_sent,
                "heart_rates_stored": hr_stored,
                "heart_rates_lost": hr_sent - hr_stored,
                "notifications_sent": ecg_sent,
                "notifications_received": delta["ecg_received"],
                "notifications_lost": ecg_sent - delta["ecg_received"],
                "sim_stats_match_log": delta["sim_ecg_sent"] == ecg_sent + smp_sent,
                "measurements_taken": delta["sim_ecg_measurements"],
                "measurements_not_sent_link_down": delta["sim_ecg_measurements"] - hr_sent,
                "reconnects": delta["ecg_reconnects"],
            },
            "spo2": {
                "notifications_sent": spo2_sent,
                "notifications_received": delta["spo2_received"],
                "notifications_lost": spo2_sent - delta["spo2_received"],
                "longest_gap_s": span(longest_gap(self.times(self.spo2), started, ended)),
            },
        }


async def open_baseline(
    sim: Simulator, stack: contextlib.AsyncExitStack
) -> tuple[Callable[[bytes], Awaitable[Stopwatch]], dict[str, Any]]:
    """smpclient's BLE transport connected to the second patch. It takes no bleak backend (it
    builds ``BleakScanner`` and ``BleakClient`` itself), so the names its module uses are bound
    to subclasses that pass the Bumble-backed one; smpclient's own code runs unchanged."""
    adapter = await stack.enter_async_context(BumbleAdapter(await sim.attach_host()))
    backends = adapter.backends

    class Scanner(BleakScanner):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{"backend": backends.scanner, **kwargs})

    class Client(BleakClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{"backend": backends.client, **kwargs})

    stack.enter_context(
        mock.patch.multiple(smpclient_ble, BleakScanner=Scanner, BleakClient=Client)
    )
    transport = smpclient_ble.SMPBLETransport()
    smp = SMPClient(transport, sim.sensors[BASELINE].address, timeout_s=CONNECT_TIMEOUT_S)
    await smp.connect(CONNECT_TIMEOUT_S)
    stack.push_async_callback(smp.disconnect)

    async def upload(image: bytes) -> Stopwatch:
        stopwatch = Stopwatch(len(image))
        async with asyncio.timeout(UPLOAD_TIMEOUT_S):
            async for offset in smp.upload(image):
                stopwatch(offset)
        return stopwatch

    return upload, {
        "central": transport.mtu + 3,  # smpclient's write size + the ATT header
        "sensor": sim.sensors[BASELINE].att_mtu,
        "max_request": transport.max_unencoded_size,
    }


@dataclass
class Results:
    """What the rounds measured so far (a failed run still reports it)."""

    uploads: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"ours": [], "baseline": []}
    )
    mtu: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


async def measure(args: argparse.Namespace, tmp: Path, results: Results) -> None:
    versions = [f"2.0.{n + 1}{build}" for n in range(args.rounds) for build in ("", "+1")]
    images = build_images(tmp, args.size_kib * 1024, versions)
    firmware = {"check_s": args.check_s} if args.check_s is not None else {}
    settings = FirmwareSettings(**firmware)
    results.facts["firmware_settings"] = {
        "check_s": settings.check_s,
        "request_timeout_s": settings.request_timeout_s,
    }
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(Simulator(list(KINDS), SCENARIO, seed=1))
        ecg, spo2 = sim.sensors[OURS], sim.sensors[SPO2]
        results.facts["ecg_interval_s"] = sim.scenario.ecg.interval_s
        results.facts["spo2_interval_s"] = sim.scenario.spo2.interval_s
        ble = {"auto_accept": False, "allow": [ecg.address, spo2.address]}
        run = await stack.enter_async_context(
            gateway_on(sim, tmp / "gateway", ble=ble, firmware=firmware)
        )
        gateway = Gateway(run, ecg, spo2)
        waited = await until(gateway.streaming, STREAMING_TIMEOUT_S, "the sensors to stream")
        results.facts["time_to_streaming_s"] = round(waited, 1)
        baseline, results.mtu["baseline"] = await open_baseline(sim, stack)
        paths = [("ours", gateway.upload), ("baseline", baseline)]
        for n in range(args.rounds):
            await gateway.settle()
            stopwatch, mtu, figures = await gateway.update(images[f"2.0.{n + 1}"])
            results.mtu.setdefault("ours", mtu)
            results.uploads["ours"].append(stopwatch.figures("update"))
            results.updates.append(figures)
            await gateway.settle()
            for k in range(args.uploads_per_round):
                flip = (n * args.uploads_per_round + k) % 2
                for name, upload in paths[::-1] if flip else paths:
                    stopwatch = await upload(images[f"2.0.{n + 1}+1"])
                    results.uploads[name].append(
                        stopwatch.figures("link" if name == "ours" else None)
                    )
                    await asyncio.sleep(PAUSE_S)


def rates(samples: list[dict[str, Any]]) -> dict[str, Any]:
    values = [u["bytes_per_s"] for u in samples]
    return {
        "median": round(statistics.median(values)) if values else None,
        "best": max(values, default=None),
        "worst": min(values, default=None),
        "samples": len(values),
    }


def summary(results: Results, args: argparse.Namespace, why: str | None) -> dict[str, Any]:
    uploads, updates = results.uploads, results.updates
    rate = {name: rates(samples) for name, samples in uploads.items()}
    rate["ours_update_flow_only"] = rates([u for u in uploads["ours"] if u["via"] == "update"])
    base = rate["baseline"]["median"]

    def ratio(name: str) -> float | None:
        ours = rate[name]["median"]
        return round(ours / base, 3) if ours and base else None

    def total(path: str, key: str) -> int:
        return sum(u[path][key] for u in updates)

    def most(path: str, key: str) -> float | None:
        return max((u[path][key] for u in updates if u[path][key] is not None), default=None)

    lost = total("ecg", "notifications_lost") + total("spo2", "notifications_lost")
    goals_met = {
        "ratio": (ratio("ours") or 0) >= GOAL_RATIO,
        "heart_rates_lost": bool(updates) and total("ecg", "heart_rates_lost") == 0,
        "notifications_lost": bool(updates) and lost == 0,
        "updates_confirmed": bool(updates)
        and all(u["outcome"] == str(Outcome.CONFIRMED) for u in updates),
    }
    out: dict[str, Any] = {
        "bench": "firmware",
        "parameters": {
            "size_kib": args.size_kib,
            "image_bytes": args.size_kib * 1024,
            "rounds": args.rounds,
            "uploads_per_round": args.uploads_per_round,
            "att_mtu_requested": REQUESTED_MTU,
            "sensors": dict(zip((OURS, SPO2, BASELINE), KINDS, strict=True)),
            "scenario": SCENARIO,
            **results.facts,
        },
        "att_mtu": results.mtu,
        "att_mtu_247_everywhere": len(results.mtu) == 2
        and all(
            m.get("central") == REQUESTED_MTU and m.get("sensor") == REQUESTED_MTU
            for m in results.mtu.values()
        ),
        "upload_bytes_per_s": rate,
        "ratio": ratio("ours"),
        "ratio_update_flow_only": ratio("ours_update_flow_only"),
        "uploads": uploads,
        "method": {
            "ours": "the gateway's FirmwareLink.upload (SMPClient.upload over SessionTransport on "
            "the ECG session's own bleak client): via 'update' = inside FirmwareService."
            "start_update's full update, timed at UpdateJob.progress; via 'link' = the same "
            "upload step alone (SensorLinks.link as the update opens it)",
            "baseline": "SMPClient.upload over smpclient's SMPBLETransport to a second ECG patch, "
            "its module's BleakScanner/BleakClient bound to the Bumble-backed bleak backend "
            "(it takes no backend=)",
            "timing": "first to last acknowledged offset, alternating order, pooled medians",
            "link": "simulated, no radio timing: a rate is how fast this process runs both ends",
            "background": "the gateway streams its ECG patch and SpO2 sensor during every path",
        },
        "updates": updates,
        "update_worst": {
            "outcomes": [u["outcome"] for u in updates],
            "total_s_max": max((u["total_s"] for u in updates), default=None),
            "ecg_longest_gap_s": most("ecg", "longest_gap_s"),
            "ecg_restart_gap_s": most("ecg", "restart_gap_s"),
            "ecg_restart_to_streaming_s": most("ecg", "restart_to_streaming_s"),
            "heart_rates_sent": total("ecg", "heart_rates_sent"),
            "heart_rates_lost": total("ecg", "heart_rates_lost"),
            "ecg_notifications_lost": total("ecg", "notifications_lost"),
            "ecg_measurements_not_sent_link_down": total("ecg", "measurements_not_sent_link_down"),
            "spo2_notifications_sent": total("spo2", "notifications_sent"),
            "spo2_notifications_lost": total("spo2", "notifications_lost"),
            "spo2_longest_gap_s": most("spo2", "longest_gap_s"),
        },
        "goal_ratio": GOAL_RATIO,
        "goal_lost": 0,
        "goals_met": goals_met,
        "goal_met": why is None and all(goals_met.values()),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            name: metadata.version(name) for name in ("smpclient", "bleak", "bumble", "imgtool")
        },
    }
    return out if why is None else out | {"why": why}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began, cpu = time.monotonic(), cpu_seconds()
    results, why = Results(), None
    with tempfile.TemporaryDirectory(prefix="bench-firmware-") as tmp:
        try:
            await measure(args, Path(tmp), results)
        except (BenchError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
    return summary(results, args, why) | {
        "cpu_s": round(cpu_seconds() - cpu, 1),
        "elapsed_s": round(time.monotonic() - began, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-kib", type=int, default=128, help="image size (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--uploads-per-round",
        type=int,
        default=3,
        help="timed uploads per path per round besides the full update (default 3)",
    )
    parser.add_argument(
        "--check-s", type=float, help="the gateway's firmware.check_s (default: its own)"
    )
    args = parser.parse_args()
    if not 4 <= args.size_kib < SLOT_SIZE // 1024:
        parser.error(f"--size-kib must be between 4 and {SLOT_SIZE // 1024 - 1} (the slot)")
    if args.rounds < 1 or args.uploads_per_round < 1:
        parser.error("--rounds and --uploads-per-round must be at least 1")
    report = asyncio.run(bench(args))
    print(json.dumps(report))
    if "why" in report:
        sys.exit(1)


if __name__ == "__main__":
    main()
