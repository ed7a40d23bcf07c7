"""`bedside demo` as a clinician's tool uses it: the demo runs (console script, own process) and
serves the API; a consultation with `require` obtains the measurements from the simulated sensors
and the closed consultation comes back as a signed draft Bundle; the `openai` client works against
/v1. Structure only: the embedded model is a 270M one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import openai
import pytest

from gateway.fhir import jsonio
from gateway.forward.signing import KeyStore, verify_bundle
from tests.demo_process import demo_arguments, wait_healthz
from tests.processes import free_port
from tests.sse import sse

BEDSIDE = shutil.which("bedside", path=str(Path(sys.executable).parent)) or "bedside"
# A demo process loading the model, then a consultation: bounded by the test's own limits (the
# API's readiness, a reply's 300 s), not by the suite's 120 s guard against hangs.
pytestmark = pytest.mark.timeout(480)


async def test_consultation_with_require_through_the_demo_api(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen(  # noqa: ASYNC220 - the demo runs beside the test
        [BEDSIDE, *demo_arguments(port, tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    try:
        await wait_healthz(base, demo, ready=True)
        token = (tmp_path / "demo-token").read_text(encoding="utf-8").strip()
        auth = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.post(f"{base}/api/consultations", json={}) as r,
        ):
            assert r.status == 401
        async with aiohttp.ClientSession(headers=auth) as session:
            async with session.post(
                f"{base}/api/consultations", json={"require": ["8867-4", "59408-5"]}
            ) as r:
                assert r.status == 201, await r.text()
                cid = (await r.json())["id"]
            events = []
            async with session.post(
                f"{base}/api/consultations/{cid}/messages",
                json={"content": "How is the patient doing?"},
                timeout=aiohttp.ClientTimeout(total=300),
            ) as r:
                assert r.status == 200, await r.text()
                events = [event async for event in sse(r)]
            names = [name for name, _ in events]
            assert names[-1] == "done", names
            obtained = [data for name, data in events if name == "observation"]
            assert {o["code"] for o in obtained} >= {"8867-4", "59408-5"}
            for o in obtained:  # the FHIR Observation the sensor produced, with that code
                codings = o["observation"]["code"]["coding"]
                assert o["code"] in {c["code"] for c in codings}
            async with session.post(f"{base}/api/consultations/{cid}/close") as r:
                assert r.status == 200, await r.text()
                bundle = jsonio.loads(await r.read())
        types = {e["resource"]["resourceType"] for e in bundle["entry"]}
        assert {"DiagnosticReport", "Observation", "Provenance"} <= types
        verify_bundle(bundle, KeyStore(tmp_path).public_keys())

        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=token)
        models = await client.models.list()
        assert models.data
        reply = await client.chat.completions.create(
            model=models.data[0].id,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.usage is not None
        assert reply.usage.completion_tokens > 0
        await client.close()
    finally:
        demo.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(demo.communicate, None, 30)
    assert demo.returncode == 0, stderr
