"""The installed `bedside` console script, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BEDSIDE = shutil.which("bedside", path=str(Path(sys.executable).parent)) or "bedside"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEDSIDE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )


def test_demo_headless_prints_one_json_summary(tmp_path: Path) -> None:
    result = _run(  # any free port for the API: 8080 may be taken on the machine
        "demo", "--headless", "--for", "8", "--data-dir", str(tmp_path), "--http-port", "0"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert sorted(d["kind"] for d in summary["devices"]) == [
        "bp",
        "ecg",
        "glucose",
        "spo2",
        "thermo",
    ]
    for device in summary["devices"]:
        assert set(device) >= {"address", "name", "kind", "state", "observations"}
    assert summary["observations"]["8867-4"] > 0
    assert summary["decode_errors"] == 0
    assert summary["radio"] == {"state": "up", "transport": "in-process"}
    assert set(summary["outbox"]) >= {"pending", "delivered", "dead"}


def test_demo_headless_needs_a_duration(tmp_path: Path) -> None:
    result = _run("demo", "--headless", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --headless needs --for SECONDS"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--char", "2A35", "--hex", "1E8A"], "Blood Pressure Measurement (0x2A35): at byte"),
        (["--char", "2A35", "--hex", "XYZ"], "expected an even number of hex digits"),
        (["--char", "FFFF", "--hex", "00"], "no codec for characteristic 0xFFFF"),
        (["--char", "12345", "--hex", "00"], "expected a 16-bit UUID"),
    ],
)
def test_decode_errors_are_one_line_with_status_2(args: list[str], message: str) -> None:
    result = _run("decode", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_decode_prints_the_measurement() -> None:
    result = _run(
        "decode",
        "--char",
        "0x2a35",
        "--hex",
        "1E 8A 00 58 00 78 00 00 00 04 11 14 29 3B 3C 00 01 27 00",
    )
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert decoded["uuid"] == "2A35"
    assert decoded["value"]["systolic"] == 138
