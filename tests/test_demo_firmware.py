"""Sensor firmware in `bedside demo`, as the technician does it from the command line: `bedside
firmware list` shows the ECG patch's slots; `bedside firmware upload` of an imgtool-built image
ends with the patch running and confirming the new version while its data keeps flowing; a
corrupted image and an older one are refused (exit 1) and the running version stays; a clinician
is refused; the demo's own repository offers the update to the other sensors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.demo_process import demo_arguments, wait_healthz
from tests.firmware_images import build_image
from tests.processes import BEDSIDE, bedside, free_port

LIMIT_S = 60.0
POLL_S = 0.2


async def sensors(base: str, token: str) -> dict[str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session,
        session.get(f"{base}/api/sensors") as answer,
    ):
        assert answer.status == 200, await answer.text()
        return {row["kind"]: row for row in (await answer.json())["sensors"]}


async def streaming(base: str, token: str, kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The sensor rows once ``kinds`` stream (polling the API, as the page does)."""
    async with asyncio.timeout(LIMIT_S):
        while True:
            rows = await sensors(base, token)
            if all(rows.get(kind, {}).get("state") == "streaming" for kind in kinds):
                return rows
            await asyncio.sleep(POLL_S)


async def test_firmware_update_of_the_ecg_patch_in_the_demo(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    image = build_image(tmp_path, "1.6.0", key="ed25519")
    older = build_image(tmp_path, "1.3.0")
    corrupted = tmp_path / "corrupted.bin"
    raw = bytearray(image.read_bytes())
    raw[0x200 + 100] ^= 0xFF  # a firmware byte: the SHA256 TLV no longer matches
    corrupted.write_bytes(bytes(raw))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen(  # noqa: ASYNC220 - the demo runs beside the test
        [str(BEDSIDE), *demo_arguments(port, data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"BEDSIDE_ASSISTANT__ENABLED": "false", "BEDSIDE_FIRMWARE__CHECK_S": "2"},
    )
    try:
        await wait_healthz(base, demo)
        accounts = json.loads((data_dir / "demo-users.json").read_text(encoding="utf-8"))
        technician, clinician = accounts["technician"]["token"], accounts["clinician"]["token"]
        rows = await streaming(base, technician, ("ecg", "spo2"))
        ecg = rows["ecg"]["address"]
        assert rows["ecg"]["firmware"]["version"] == "1.4.2"
        assert rows["ecg"]["firmware"]["update"] == {"version": "1.5.0", "file": "ecg-1.5.0.bin"}

        listed = await bedside("firmware", "list", "--url", base, token=technician)
        assert listed.returncode == 0, listed.stderr
        patch = next(row for row in json.loads(listed.stdout) if row["address"] == ecg)
        assert patch["kind"] == "ecg"
        assert patch["images"] == [
            {
                "slot": 0,
                "version": "1.4.2",
                "hash": patch["images"][0]["hash"],
                "active": True,
                "confirmed": True,
                "pending": False,
            }
        ]

        refused = await bedside(
            "firmware", "upload", ecg, str(image), "--url", base, token=clinician
        )
        assert refused.returncode == 1
        assert "may not" in refused.stderr

        bad = await bedside(
            "firmware", "upload", ecg, str(corrupted), "--url", base, token=technician
        )
        assert bad.returncode == 1
        assert "does not match its SHA256 TLV" in bad.stderr
        old = await bedside("firmware", "upload", ecg, str(older), "--url", base, token=technician)
        assert old.returncode == 1
        assert "1.3.0 is older than the running 1.4.2; give --force" in old.stderr

        before = (await sensors(base, technician))["ecg"]["counters"]["observations"]
        done = await bedside("firmware", "upload", ecg, str(image), "--url", base, token=technician)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("runs 1.6.0, confirmed")
        for phase in ("uploading:", "restarting:", "verifying:", "confirming:"):
            assert phase in done.stderr

        listed = await bedside("firmware", "list", "--url", base, token=technician)
        patch = next(row for row in json.loads(listed.stdout) if row["address"] == ecg)
        assert [
            (i["slot"], i["version"], i["active"], i["confirmed"]) for i in patch["images"]
        ] == [
            (0, "1.6.0", True, True),
            (1, "1.4.2", False, False),
        ]
        after = await sensors(base, technician)
        assert after["ecg"]["counters"]["observations"] > before  # data still flowing
        assert after["ecg"]["firmware"]["update"] is None  # 1.6.0 is newer than the repository's
        assert after["spo2"]["firmware"]["update"]["version"] == "1.5.0"
    finally:
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 0, stderr
