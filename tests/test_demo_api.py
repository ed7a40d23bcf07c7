"""`bedside demo` as a clinician's tool uses it: the demo runs (console script, own process) and
serves the API; a consultation with `require` obtains the measurements from the simulated sensors
and the closed consultation comes back as a signed draft Bundle; the `openai` client works against
/v1. Structure only: the embedded model is a 270M one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import openai

from gateway.fhir import jsonio
from gateway.forward.signing import KeyStore, verify_bundle
from tests.test_consultations_api import sse

BEDSIDE = shutil.which("bedside", path=str(Path(sys.executable).parent)) or "bedside"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until_ready(base: str, demo: subprocess.Popen[str]) -> None:
    """Until /healthz answers (at once) and says the assistant has loaded (seconds later)."""
    answered = False
    async with aiohttp.ClientSession() as session:
        for _ in range(1200):
            assert demo.poll() is None, demo.stderr.read() if demo.stderr else "demo exited"
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        answered = True
                        health = await response.json()
                        assert health["assistant"] in {"loading", "ready"}, health
                        if health["assistant"] == "ready":
                            return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(
        "the demo's assistant never became ready" if answered else "the demo's API never answered"
    )


async def test_consultation_with_require_through_the_demo_api(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen(  # noqa: ASYNC220 - the demo runs beside the test
        [
            BEDSIDE,
            "demo",
            "--headless",
            "--for",
            "600",
            "--http-port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    try:
        await _until_ready(base, demo)
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
