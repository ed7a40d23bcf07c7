"""A wheel that works: built from the repository, installed in a fresh virtual environment (not
editable), and run from outside the source tree, it finds its device profiles, code table and
model manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest
from setuptools import find_packages

from gateway.demo import DEMO_KINDS

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"gateway.device_profiles": "device_profiles", "gateway.models": "models"}
BP_VECTOR = "1E8A00580078000000041114293B3C00012700"  # 138/88/120 mmHg, pulse 60, user 1


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_is_listed_for_the_wheel() -> None:
    setuptools_table = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    listed = set(setuptools_table["packages"])
    found = set(find_packages(str(ROOT), include=["gateway*", "firmware_sim*"]))
    assert listed == found | set(MAPPED), "add new packages to [tool.setuptools] packages"
    assert setuptools_table["package-dir"] == MAPPED


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed (the heavy dependencies are borrowed from
    the test environment through a .pth line: no editable install, no source tree)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = dist.glob("bedside_gateway-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    purelib = Path(sysconfig.get_paths(vars={"base": str(env_dir)})["purelib"])
    ours = Path(sysconfig.get_paths()["purelib"])
    (purelib / "borrowed-dependencies.pth").write_text(f"{ours}\n", encoding="utf-8")
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", wheel],
        check=True,
        timeout=600,
    )
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path, timeout: float = 120) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(env_dir / "bin" / args[0]), *args[1:]],
        cwd=cwd,
        env=environment | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_installed_wheel_decodes_and_runs_the_demo(wheel_venv: Path, tmp_path: Path) -> None:
    where = _run(
        wheel_venv,
        "python",
        "-c",
        "import gateway, gateway.profiles as p, gateway.assistant.manifest as m; "
        "print(gateway.__file__); print(p.DEFAULT_DIRECTORY); print(m.default_manifest_path())",
        cwd=tmp_path,
    ).split()
    assert all(str(wheel_venv) in line for line in where), where  # nothing from the source tree

    decode = ("bedside", "decode", "--char", "2A35", "--hex", BP_VECTOR, "--fhir")
    bundle = json.loads(_run(wheel_venv, *decode, cwd=tmp_path))
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    systolic = [
        component["valueQuantity"]["value"]
        for entry in bundle["entry"]
        for component in entry["resource"].get("component", [])
        if component["code"]["coding"][0]["code"] == "150021"
    ]
    assert systolic == [138]

    summary = json.loads(
        _run(
            wheel_venv,
            "bedside",
            "demo",
            "--headless",
            "--for",
            "10",
            "--data-dir",
            str(tmp_path / "data"),
            "--http-port",
            "0",
            cwd=tmp_path,
            timeout=300,
        )
        .strip()
        .splitlines()[-1]
    )
    kinds = sorted(device["kind"] for device in summary["devices"])
    assert kinds == sorted(DEMO_KINDS)  # the profiles came with the wheel
    assert summary["observations"], "observations flowed"
