"""`bedside demo` as a child process for the API tests: its arguments, and waiting until its
``/healthz`` answers (and, when asked, until its assistant has loaded)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any, Final

import aiohttp

POLL_S: Final = 0.1
LIMIT_S: Final = 120.0


def demo_arguments(port: int, data_dir: Path, seconds: int = 600) -> list[str]:
    """``demo --headless`` for ``seconds``, serving the API on ``port``, data in ``data_dir``."""
    return [
        *("demo", "--headless", "--for", str(seconds)),
        *("--http-port", str(port), "--data-dir", str(data_dir)),
    ]


async def wait_healthz(
    base: str, process: subprocess.Popen[Any], *, ready: bool = False
) -> dict[str, Any]:
    """The first ``/healthz`` answer (with ``ready``: the first saying the assistant is ready;
    until then it must be loading). Fails when the process ends or after :data:`LIMIT_S`."""
    answered = False
    async with aiohttp.ClientSession() as session:
        for _ in range(int(LIMIT_S / POLL_S)):
            assert process.poll() is None, "the demo exited"
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        answered = True
                        health: dict[str, Any] = await response.json()
                        if not ready or health["assistant"] == "ready":
                            return health
                        assert health["assistant"] == "loading", health
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(POLL_S)
    raise AssertionError(
        "the demo's assistant never became ready" if answered else "the demo's API never answered"
    )
