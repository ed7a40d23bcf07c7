"""Helpers for tests that run the project's commands as processes: free ports, ``bedside-sim``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
BEDSIDE_SIM = Path(sys.executable).with_name("bedside-sim")
BEDSIDE = Path(sys.executable).with_name("bedside")
LINE_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


async def read_line(stream: asyncio.StreamReader, what: str = "bedside-sim") -> str:
    """The next line of a child's output; fails when it ends or stays silent too long."""
    async with asyncio.timeout(LINE_TIMEOUT_S):
        line = await stream.readline()
    assert line, f"{what} ended early"
    return line.decode().rstrip("\n")


@contextlib.contextmanager
def bedside_sim(port: int, devices: str, *, stop: signal.Signals = signal.SIGINT) -> Iterator[None]:
    """``bedside-sim`` serving HCI on ``127.0.0.1:port`` with ``devices`` until the block ends;
    then ``stop`` is sent (SIGINT: a clean stop, checked; SIGKILL: a radio that vanishes)."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "firmware_sim.cli"),
            *("--hci", f"tcp-server:{LOOPBACK}:{port}", "--devices", devices),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        for _ in devices.split(","):  # one line per sensor once the radio is up
            if not process.stdout.readline():
                raise AssertionError(f"bedside-sim exited early: {process.communicate()[1]}")
        yield
    finally:
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=10)
        if stop is signal.SIGINT:
            assert process.returncode == 0, stderr


def run_bedside(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """``bedside ARGS`` to its end; ``token`` as ``BEDSIDE_TOKEN`` (none: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "BEDSIDE_TOKEN"}
    if token is not None:
        env["BEDSIDE_TOKEN"] = token
    return subprocess.run(
        [str(BEDSIDE), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


async def bedside(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """:func:`run_bedside` in a thread (the test's event loop keeps serving)."""
    return await asyncio.to_thread(run_bedside, *args, token=token)
