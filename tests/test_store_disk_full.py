"""A full disk is survivable: the gateway's data directory on a small tmpfs this test mounts, the
disk filled while sensors stream → no crash, readings refused and counted, the storage alarm
raised; the filler removed → readings are stored again without a restart, the alarm clears, and
``PRAGMA integrity_check`` passes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from pathlib import Path

from gateway.store import AsyncStore
from tests.harness import running_gateway, wait_until
from tests.sim_central import FAST

LIMIT_S = 60.0


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; the bytes written."""
    written = 0
    block = b"\0" * 65536
    with path.open("wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                with contextlib.suppress(OSError):
                    while filler.write(b"\0" * 512):
                        written += 512
                return written


async def total(store: AsyncStore) -> int:
    return sum((await store.observation_counts()).values())


async def test_the_gateway_survives_a_full_disk_and_recovers_without_a_restart(
    small_disk: Path,
) -> None:
    data_dir = small_disk / "data"
    async with running_gateway(
        data_dir, ("ecg", "spo2"), overrides=FAST, store={"maintain_every_s": 1}
    ) as run:
        await wait_until(lambda: run.status("ecg").observations > 5, LIMIT_S, "ECG readings")
        keeper, store = run.gateway.keeper, run.gateway.store
        assert keeper is not None
        assert store is not None

        filler = small_disk / "filler"
        fill(filler)
        await wait_until(lambda: keeper.refused_readings > 0, LIMIT_S, "a refused reading")
        await wait_until(lambda: keeper.state == "full", LIMIT_S, "the storage alarm")
        assert "is full" in str(keeper.as_json()["reason"])
        assert run.states() == {"ecg": "streaming", "spo2": "streaming"}  # no crash

        filler.unlink()
        stored = await total(store)
        async with asyncio.timeout(LIMIT_S):
            while await total(store) <= stored:  # noqa: ASYNC110 - the store has no event for it
                await asyncio.sleep(0.2)
        await wait_until(lambda: keeper.state == "ok", LIMIT_S, "the alarm cleared")
        (check,) = await store.read(
            lambda s: [row[0] for row in s.conn.execute("PRAGMA integrity_check")]
        )
        assert check == "ok"
        assert run.status("ecg").ingest_errors == 0
