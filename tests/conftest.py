"""Session fixtures shared by the test modules: the data directory where the embedded model is
assembled once, the engine the consultation tests share, and a small filesystem to fill."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.assistant import AssistantSettings, Engine

# One thread: on the shared 2-core test machine llama.cpp's spinning threads slow down by an
# order of magnitude when another process takes a core.
CONSULTATION_SETTINGS = AssistantSettings(n_ctx=4096, n_threads=1, seed=7)


@pytest.fixture(scope="session")
def model_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway data directory of this session: the embedded model is assembled there once
    and every engine of the session loads it from there."""
    path = tmp_path_factory.getbasetemp() / "bedside-data"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def consultation_engine(model_data_dir: Path) -> Iterator[Engine]:
    """The real engine with the embedded Gemma 3 270M, loaded once for the consultation tests."""
    llm = Engine(CONSULTATION_SETTINGS, data_dir=model_data_dir, progress=False)
    asyncio.run(llm.start())
    yield llm
    asyncio.run(llm.close())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
