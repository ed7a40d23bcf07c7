"""The gateway's safe firmware update (gateway/firmware/update.py, service.py) against simulated
sensors over the Bumble stack, through the running gateway's own sessions: upload, test, restart,
check, confirm of the ECG patch while the SpO2 sensor streams; an older image refused unless
forced; confirm and revert commands; jobs and the sensor rows the page shows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware_sim.faults import SmpFaults
from firmware_sim.mcuboot import CRASH_MARKER
from firmware_sim.sensor import Sensor
from gateway.firmware.device import FirmwareError
from gateway.firmware.image import ImageError
from gateway.firmware.service import (
    FirmwareBusyError,
    FirmwareService,
    NotReadyError,
    UnknownSensorError,
)
from gateway.firmware.update import Outcome, UpdateJob
from tests.firmware_images import build_image
from tests.harness import Running, running_gateway, wait_until
from tests.sim_central import FAST

CHECK = {"check_s": 1.5, "reconnect_timeout_s": 30.0}
LIMIT_S = 120.0


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("images")
    return {
        version: build_image(directory, version, key="ed25519").read_bytes()
        for version in ("1.3.0", "1.6.0")
    }


async def streaming(run: Running, *kinds: str) -> None:
    await wait_until(
        lambda: all(run.states().get(kind) == "streaming" for kind in kinds),
        30,
        f"{', '.join(kinds)} streaming",
    )


@contextlib.asynccontextmanager
async def updating(
    tmp_path: Path,
    kind: str = "ecg",
    *,
    overrides: Mapping[str, object] = FAST,
    firmware: Mapping[str, object] = CHECK,
    **settings: Any,
) -> AsyncIterator[tuple[Running, FirmwareService, Sensor]]:
    """A gateway with the simulated sensor of ``kind`` streaming: the run, its firmware service,
    the sensor."""
    async with running_gateway(
        tmp_path, (kind,), overrides=overrides, firmware=firmware, **settings
    ) as run:
        await streaming(run, kind)
        assert run.gateway.firmware is not None
        yield run, run.gateway.firmware, run.sim.sensors[kind]


async def finished(job: UpdateJob) -> UpdateJob:
    async with asyncio.timeout(LIMIT_S):
        while not job.done:
            await job.changed(job.revision)
    return job


async def test_the_ecg_patch_is_updated_and_confirmed_while_spo2_streams(
    tmp_path: Path, images: dict[str, bytes]
) -> None:
    async with running_gateway(tmp_path, ("ecg", "spo2"), overrides=FAST, firmware=CHECK) as run:
        await streaming(run, "ecg", "spo2")
        firmware = run.gateway.firmware
        assert firmware is not None
        ecg = run.sim.sensors["ecg"]
        row = firmware.sensor_firmware(ecg.address)
        assert row is not None
        assert (row["version"], row["updatable"], row["job"]) == ("1.4.2", True, None)
        spo2_before = run.status("spo2").observations

        job = firmware.start_update(ecg.address, images["1.6.0"], by="tech")
        with pytest.raises(FirmwareBusyError, match=r"an update to 1\.6\.0 is running"):
            firmware.start_update(ecg.address, images["1.6.0"])
        await finished(job)

        assert job.outcome is Outcome.CONFIRMED, job.message
        assert job.from_version == "1.4.2"
        assert job.offset == job.size == len(images["1.6.0"])
        phases = [step["phase"] for step in job.steps]
        for phase in ("checking", "uploading", "testing", "restarting", "verifying", "confirming"):
            assert phase in phases
        assert ecg.management.version == "1.6.0"
        assert ecg.management.bootloader.confirmed
        assert run.status("spo2").observations > spo2_before  # streamed throughout
        listed = {row["address"]: row for row in await firmware.list()}
        assert [
            (i["slot"], i["version"], i["active"], i["confirmed"])
            for i in listed[ecg.address]["images"]
        ] == [
            (0, "1.6.0", True, True),
            (1, "1.4.2", False, False),
        ]
        assert listed[ecg.address]["version"] == "1.6.0"
        assert listed[ecg.address]["job"]["outcome"] == "confirmed"
        await wait_until(
            lambda: run.status("ecg").info.get("Firmware Revision String", "").startswith("1.6.0"),
            30,
            "DIS firmware revision 1.6.0",
        )
        valid_after = run.status("ecg").observations
        await wait_until(
            lambda: run.status("ecg").observations > valid_after, 30, "ECG data after the update"
        )

        # back to the previous image for good, then the one that was there
        slots = await firmware.revert(ecg.address, by="tech")
        assert ecg.management.version == "1.4.2"
        assert (slots[0].version, slots[0].active) == ("1.4.2", True)


async def test_an_older_image_is_refused_unless_forced(
    tmp_path: Path, images: dict[str, bytes]
) -> None:
    async with updating(tmp_path) as (run, firmware, ecg):
        job = await finished(firmware.start_update(ecg.address, images["1.3.0"]))
        assert job.outcome is Outcome.REFUSED
        assert job.message == (
            "image version 1.3.0 is older than the running 1.4.2; give --force to install it anyway"
        )
        assert job.offset == 0
        assert ecg.management.bootloader.secondary is None

        job = await finished(
            firmware.start_update(ecg.address, images["1.3.0"], force=True, confirm=False)
        )
        assert job.outcome is Outcome.TESTING, job.message
        assert ecg.management.version == "1.3.0"
        assert not ecg.management.bootloader.confirmed
        await streaming(run, "ecg")
        slots = await firmware.confirm(ecg.address)
        assert slots[0].version == "1.3.0"
        assert slots[0].confirmed
        assert ecg.management.bootloader.confirmed


async def test_commands_on_sensors_that_cannot_take_them(tmp_path: Path) -> None:
    async with updating(tmp_path) as (run, firmware, ecg):
        with pytest.raises(UnknownSensorError, match="no sensor AA:BB:CC:DD:EE:FF on this"):
            firmware.start_update("aa:bb:cc:dd:ee:ff", b"")
        with pytest.raises(ImageError, match="too short for an MCUboot image header"):
            firmware.start_update(ecg.address, b"\x00" * 8)
        await ecg.disconnect()
        await wait_until(lambda: run.states()["ecg"] != "streaming", 30, "ECG link dropped")
        with pytest.raises(NotReadyError, match="not connected: wait until it streams"):
            await firmware.confirm(ecg.address)
        await streaming(run, "ecg")
        with pytest.raises(FirmwareError, match="has no previous image to go back to"):
            await firmware.revert(ecg.address)


async def test_an_upload_resumes_after_the_link_drops(
    tmp_path: Path, images: dict[str, bytes]
) -> None:
    async with updating(tmp_path) as (_run, firmware, ecg):
        ecg.management.faults = SmpFaults(drop_at_bytes=2000)
        job = await finished(firmware.start_update(ecg.address, images["1.6.0"]))
        assert job.outcome is Outcome.CONFIRMED, job.message
        assert ecg.management.faults.dropped
        assert job.resumes == 1
        dropped = [s["text"] for s in job.steps if s["text"].startswith("the link dropped at")]
        assert len(dropped) == 1
        assert ecg.management.version == "1.6.0"


async def test_a_corrupted_upload_is_refused_by_the_sensor_and_the_old_image_runs_on(
    tmp_path: Path, images: dict[str, bytes]
) -> None:
    async with updating(tmp_path) as (_run, firmware, ecg):
        ecg.management.faults = SmpFaults(corrupt_chunk=2)
        job = await finished(firmware.start_update(ecg.address, images["1.6.0"]))
        assert job.outcome is Outcome.REFUSED
        assert job.message.startswith("the sensor refused to take the image: the image's SHA-256")
        assert job.message.endswith("1.4.2 still runs")
        assert ecg.management.version == "1.4.2"
        assert ecg.management.bootloader.secondary is None
        assert ecg.management.resets == 0


async def test_an_image_that_crashes_is_reverted_and_reported(tmp_path: Path) -> None:
    crashing = build_image(
        tmp_path, "1.7.0", firmware=b"\x00" * 1024 + CRASH_MARKER + b"\x00" * 1024
    ).read_bytes()
    async with updating(tmp_path) as (run, firmware, ecg):
        job = await finished(firmware.start_update(ecg.address, crashing))
        assert job.outcome is Outcome.REVERTED, job.message
        assert job.message.startswith(
            "1.7.0 failed its check: the sensor sent no valid measurement"
        )
        assert job.message.endswith("MCUboot went back to 1.4.2, which runs again")
        assert ecg.management.version == "1.4.2"
        assert ecg.management.bootloader.confirmed
        assert ecg.management.resets == 2  # into the new image, and back
        valid = run.status("ecg").observations
        await wait_until(lambda: run.status("ecg").observations > valid, 30, "valid data again")


async def test_the_api_answers_each_refusal_in_one_sentence(
    tmp_path: Path, images: dict[str, bytes]
) -> None:
    token = "firmware-api-test-token-0123456789"
    http = {"enabled": True, "port": 0, "token": token}
    settings = CHECK | {"max_image_bytes": 8192}
    async with (
        running_gateway(
            tmp_path, ("ecg",), overrides=FAST, firmware=settings, http=http,
            assistant={"enabled": False},
        ) as run,
        aiohttp.ClientSession(
            f"http://127.0.0.1:{run.gateway.http_port}",
            headers={"Authorization": f"Bearer {token}"},
        ) as api,
    ):  # fmt: skip
        await streaming(run, "ecg")
        ecg = run.sim.sensors["ecg"].address

        async def refusal(method: str, path: str, **kwargs: Any) -> tuple[int, str, str]:
            async with api.request(method, path, **kwargs) as answer:
                error = (await answer.json())["error"]
                return answer.status, error["code"], error["message"]

        upload = f"/api/firmware/{ecg}/upload"
        assert await refusal("POST", upload, data=b"\x00" * 9000) == (
            413, "image_too_large",
            "the image is 9000 bytes, more than firmware.max_image_bytes (8192)",
        )  # fmt: skip
        assert (await refusal("POST", upload, data=b""))[:2] == (400, "no_image")
        assert (await refusal("POST", upload, data=b"\x01" * 64))[:2] == (400, "invalid_image")
        assert (await refusal("POST", f"{upload}?force=maybe", data=b"x"))[:2] == (
            400, "invalid_flag",
        )  # fmt: skip
        assert (await refusal("POST", "/api/firmware/AA:BB:CC:DD:EE:FF/upload", data=b"x"))[:2] == (
            404,
            "no_sensor",
        )
        assert (await refusal("GET", f"/api/firmware/{ecg}/job"))[:2] == (404, "no_job")
        assert await refusal("POST", f"/api/firmware/{ecg}/update", json={}) == (
            409, "no_update",
            "no firmware repository to update from: no firmware.repository is configured",
        )  # fmt: skip

        async with api.post(upload, data=images["1.6.0"]) as answer:
            assert answer.status == 202, await answer.text()
            job = (await answer.json())["job"]
        assert (job["version"], job["from_version"], job["outcome"]) == ("1.6.0", "1.4.2", None)
        assert (await refusal("POST", upload, data=images["1.6.0"]))[:2] == (409, "busy")
        while job["outcome"] is None:  # follow it as the CLI does: each answer is a change
            async with api.get(f"/api/firmware/{ecg}/job?after={job['revision']}") as answer:
                later = (await answer.json())["job"]
            assert later["revision"] > job["revision"] or later["outcome"] is not None
            job = later
        assert job["outcome"] == "confirmed", job["message"]
        assert job["percent"] == 100.0
        async with api.get("/api/firmware") as answer:
            listed = await answer.json()
        assert listed["repository"] is None
        (row,) = listed["sensors"]
        assert (row["address"], row["version"], row["images"][0]["version"]) == (
            ecg, "1.6.0", "1.6.0",
        )  # fmt: skip
        async with api.get("/metrics") as answer:
            assert 'bedside_firmware_updates_total{kind="ecg",outcome="confirmed"} 1.0' in (
                await answer.text()
            )
        async with api.get("/api/audit?limit=100") as answer:
            entries = (await answer.json())["entries"]
        audited = [
            (e["user"], e["outcome"], e["detail"])
            for e in entries
            if e.get("what") == "Device" and e.get("what_id") == ecg
        ]
        assert audited == [
            ("service", "success", "firmware 1.4.2 -> 1.6.0: update started"),
            ("service", "success", f"firmware 1.4.2 -> 1.6.0: {job['message']}"),
        ]


async def test_no_blood_pressure_reading_is_lost_across_an_update(
    tmp_path: Path, images: dict[str, bytes]
) -> None:
    cuff = FAST | {"bp.interval_s": 1.5, "bp.cycle_s": 0.5}
    check = CHECK | {"check_s": 5.0}  # long enough for a cuff cycle on the new image
    async with updating(tmp_path, "bp", overrides=cuff, firmware=check) as (run, firmware, bp):
        job = await finished(firmware.start_update(bp.address, images["1.6.0"]))
        assert job.outcome is Outcome.CONFIRMED, job.message
        store = run.gateway.store
        assert store is not None
        taken = len(bp.records)  # every reading the cuff took, before, during and after
        # the ones taken while it restarted come as stored records once it is back
        await wait_until(lambda: len(bp.records) > taken, 30, "a reading after the update")
        taken = len(bp.records)
        async with asyncio.timeout(30):
            while (await store.observation_counts()).get("85354-9", 0) < taken:  # noqa: ASYNC110 - the store has no event for it
                await asyncio.sleep(0.1)
        stored = (await store.observation_counts())["85354-9"]
        assert taken <= stored <= len(bp.records)  # none lost, none twice
