"""Test harness: the firmware simulator and the gateway wired together in one process.

The gateway attaches to the simulator's virtual radio through an in-memory HCI transport and the
Bumble-backed bleak backend: the same code path as ``bedside demo`` and, apart from the transport,
as a real box on BlueZ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim import Simulator
from gateway.app import Gateway
from gateway.ble.bumble import BumbleAdapter
from gateway.ble.manager import SensorManager
from gateway.ble.session import SessionStatus
from gateway.ble.settings import BONDS_FILE
from gateway.config import load_settings

POLL_S = 0.02


async def wait_until(
    condition: Callable[[], object], limit_s: float, what: str = "condition"
) -> None:
    """Poll ``condition`` until it is truthy; fail after ``limit_s`` seconds saying ``what``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)


@dataclass
class Running:
    sim: Simulator
    gateway: Gateway

    @property
    def manager(self) -> SensorManager:
        assert self.gateway.manager is not None
        return self.gateway.manager

    def status(self, kind: str) -> SessionStatus:
        """The session status of the sensor of ``kind`` (a fresh one before it is found)."""
        found = next((s for s in self.manager.statuses() if s.kind == kind), None)
        return found if found is not None else SessionStatus("", "", kind)

    def states(self) -> dict[str, str]:
        return {s.kind: str(s.state) for s in self.manager.statuses()}


@contextlib.asynccontextmanager
async def running_gateway(
    data_dir: Path,
    kinds: Sequence[str] = ("ecg", "spo2", "bp", "thermo"),
    *,
    scenario: str = "normal",
    overrides: Mapping[str, object] | None = None,
    seed: int = 1,
    **settings: Any,
) -> AsyncIterator[Running]:
    """The simulator with ``kinds`` and a gateway (auto-accepting them) attached to it."""
    async with (
        Simulator(list(kinds), scenario=scenario, seed=seed, overrides=overrides) as sim,
        gateway_on(sim, data_dir, **settings) as running,
    ):
        yield running


@contextlib.asynccontextmanager
async def gateway_on(sim: Simulator, data_dir: Path, **settings: Any) -> AsyncIterator[Running]:
    """A gateway (auto-accepting, bonds in ``data_dir``) on a new host controller of ``sim``'s
    radio, running for the block: one simulator can see a gateway stop and another start."""
    ble = {"auto_accept": True} | settings.pop("ble", {})
    http = {"enabled": False} | settings.pop("http", {})  # the assistant only where a test asks
    config = load_settings(data_dir=data_dir, ble=ble, http=http, **settings)
    hci = await sim.attach_host()
    async with BumbleAdapter(hci, bonds=data_dir / BONDS_FILE) as adapter:
        gateway = Gateway(config)
        task = asyncio.create_task(
            gateway.run(backends=adapter.backends, security=adapter), name="gateway"
        )
        try:
            await asyncio.wait_for(gateway.ready.wait(), 30)
            yield Running(sim, gateway)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
