"""`bedside demo`: the firmware simulator and the gateway in one process, no hardware needed.

The simulator's five sensors sit on a virtual radio; the gateway attaches to it through an
in-memory HCI transport and the Bumble-backed bleak backend, i.e. the same BLE code that runs on
BlueZ. The demo's readings belong to the demo patient (``Patient/demo``, :data:`DEMO_PATIENT`)
unless a patient is configured or assigned, so its forwarded Observations have a subject.
Interactive mode shows a live terminal view; ``--headless --for N`` runs N seconds and
prints one JSON summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from gateway.app import Gateway
from gateway.ble.bumble import BumbleAdapter
from gateway.ble.settings import BONDS_FILE
from gateway.firmware.repository import MANIFEST
from gateway.users import UserDirectory
from gateway.users.demo import DEMO_USERS_FILE, ensure_demo_users

if TYPE_CHECKING:
    from pathlib import Path

    from gateway.ble.session import SessionStatus
    from gateway.config import Settings

DEMO_KINDS = ("ecg", "spo2", "bp", "thermo", "glucose")
# The simulated sensors keep their bonds here across demo runs, as sensors do in flash.
SIMULATOR_BONDS_DIR = "simulator-bonds"
REFRESH_S = 0.5
DEMO_PATIENT = "Patient/demo"
DEMO_FIRMWARE_DIR = "demo-firmware"  # DATA_DIR: the demo's firmware repository
DEMO_UPDATE = "1.5.0"  # the update it offers (the simulated sensors run 1.4.2)
VITALS = (
    ("147842", "Heart rate (ECG)"),
    ("149530", "Pulse rate (oximeter)"),
    ("59408-5", "SpO2"),
    ("85354-9", "Blood pressure"),
    ("8310-5", "Body temperature"),
    ("147240", "RR interval"),
    ("2339-0", "Glucose (capillary blood)"),
)


def demo_firmware(directory: Path) -> Path:
    """A firmware repository with an update (:data:`DEMO_UPDATE`) for every simulated model,
    made like the sensors' factory images, so that the demo's technician page offers updates."""
    from firmware_sim.devices import KINDS
    from firmware_sim.management import factory_image

    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for kind in DEMO_KINDS:
        model = KINDS[kind].MODEL
        name = f"{kind}-{DEMO_UPDATE}.bin"
        image = factory_image(model, DEMO_UPDATE)
        (directory / name).write_bytes(image)
        digest = hashlib.sha256(image).hexdigest()
        entries.append(
            f'[[image]]\nmodel = "{model}"\nversion = "{DEMO_UPDATE}"\nfile = "{name}"\n'
            f'sha256 = "{digest}"\n'
        )
    (directory / MANIFEST).write_text("\n".join(entries), encoding="utf-8")
    return directory


def _clock_text(status: SessionStatus) -> str:
    """The sensor clock as the gateway found it on connecting: its offset, or why none."""
    offset = status.clock_offset_s
    if offset is not None:
        return f"{offset:+.1f} s"
    if status.clock_anchor is not None:
        return "not set"
    return "—"


def live_view(gateway: Gateway, latest: Mapping[str, str], elapsed_s: float) -> Group:
    """Devices and latest vitals as rich tables."""
    devices = Table(title=f"Bedside Gateway {gateway.identity.gateway_id} — {elapsed_s:,.0f} s")
    columns = ("kind", "name", "address", "state", "battery", "obs", "bad", "undated", "clock")
    for column in (*columns, "reconnects"):
        devices.add_column(column)
    statuses = gateway.manager.statuses() if gateway.manager is not None else []
    waiting = gateway.manager.passkeys.waiting() if gateway.manager is not None else frozenset()
    for s in sorted(statuses, key=lambda s: s.kind):
        reason = s.reason
        if s.address in waiting:
            reason = f"enter the passkey it shows: bedside sensors pair {s.address} PASSKEY"
        devices.add_row(
            s.kind,
            s.name,
            s.address,
            str(s.state) + (f" ({reason})" if reason else ""),
            "" if s.battery is None else f"{s.battery} %",
            str(s.observations),
            str(s.decode_errors),
            str(s.undated),
            _clock_text(s),
            str(s.reconnects),
        )
    vitals = Table(title="Latest vitals")
    vitals.add_column("measurement")
    vitals.add_column("code")
    vitals.add_column("value")
    for code, label in VITALS:
        vitals.add_row(label, code, latest.get(code, "—"))
    return Group(devices, vitals)


async def run_demo(
    settings: Settings,
    *,
    scenario: str = "normal",
    seed: int = 0,
    duration_s: float | None = None,
    headless: bool = False,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, Any] | None:
    """Run the simulator and the gateway; return the summary in headless mode."""
    from firmware_sim import Simulator
    from gateway.config import PatientSettings

    if settings.patient is None:
        settings = settings.model_copy(update={"patient": PatientSettings(reference=DEMO_PATIENT)})
    if settings.firmware.repository is None:
        repository = demo_firmware(settings.data_dir / DEMO_FIRMWARE_DIR)
        firmware = settings.firmware.model_copy(update={"repository": repository})
        settings = settings.model_copy(update={"firmware": firmware})
    directory = UserDirectory(settings.data_dir)
    try:
        ensure_demo_users(directory, settings.data_dir)
    finally:
        directory.close()
    gateway = Gateway(settings)
    async with Simulator(
        list(DEMO_KINDS),
        scenario=scenario,
        seed=seed,
        overrides=overrides,
        bonds_dir=settings.data_dir / SIMULATOR_BONDS_DIR,
    ) as sim:
        hci = await sim.attach_host()
        async with BumbleAdapter(hci, bonds=settings.data_dir / BONDS_FILE) as adapter:
            task = asyncio.create_task(
                gateway.run(backends=adapter.backends, security=adapter), name="gateway"
            )
            started = time.monotonic()
            try:
                await _wait_ready(gateway, task)
                if not headless:
                    Console(stderr=True).print(_how_to_log_in(gateway))
                if headless:
                    await _sleep_or_fail(task, duration_s or 0)
                    return await gateway.summary()
                await _show(gateway, task, started, duration_s)
                return None
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _how_to_log_in(gateway: Gateway) -> str:
    """Where the API is and who may use it (the demo's accounts, by role)."""
    if gateway.http_port is None:
        return "The HTTP API is off (http.enabled = false)."
    users = gateway.data_dir / DEMO_USERS_FILE
    base = f"http://{gateway.settings.http.host}:{gateway.http_port}"
    return (
        f"The technician's page: {base}/ — log in as 'technician' (or 'admin'); the clinician's "
        f"(draft reports to review): {base}/review — as 'clinician'. The passwords and API "
        f"tokens of the demo's technician, clinician and admin are in {users}"
    )


async def _wait_ready(gateway: Gateway, task: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(gateway.ready.wait())
    done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what stopped the gateway


async def _sleep_or_fail(task: asyncio.Task[None], seconds: float) -> None:
    """Sleep, but surface the gateway's failure at once if it stops."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()


async def _show(
    gateway: Gateway, task: asyncio.Task[None], started: float, duration_s: float | None
) -> None:
    latest = _latest(gateway)
    with Live(live_view(gateway, latest, 0), refresh_per_second=4, transient=False) as live:
        while duration_s is None or time.monotonic() - started < duration_s:
            await _sleep_or_fail(task, REFRESH_S)
            live.update(live_view(gateway, _latest(gateway), time.monotonic() - started))


def _latest(gateway: Gateway) -> Mapping[str, str]:
    return gateway.ingest.latest if gateway.ingest is not None else {}
