"""The remote inference backend (``assistant.backend = "remote"``) against a real
``llama_cpp.server`` serving the embedded Gemma 3 270M (tests/llama_server.py): the same text as
the local engine, stop strings, the grammar, cancellation, timeouts, every failure as one
sentence, a consultation with ``require`` end to end against the simulator, the server going away
mid-reply and coming back, and ``bedside doctor``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest
from pydantic import ValidationError

from gateway.assistant import Engine, format_gemma3
from gateway.assistant.consultation import (
    ConsultationService,
    ConsultationSettings,
    Done,
    ObservationReceived,
    TokenEvent,
)
from gateway.assistant.errors import (
    EngineTimeoutError,
    ModelLoadError,
    PromptError,
    RemoteEngineError,
)
from gateway.assistant.grammars import tag_completion
from gateway.assistant.manifest import resolve_model
from gateway.assistant.prompts import TAG_PATTERN
from gateway.assistant.remote import RemoteEngine
from gateway.assistant.report import MODEL_ENDPOINT_SYSTEM
from gateway.assistant.settings import DEFAULT_MODEL, AssistantSettings
from gateway.assistant.stream import Finished, TextPiece
from gateway.config import load_settings
from gateway.doctor import Level, check_remote_model
from gateway.forward.service import build_signer
from gateway.forward.signing import Signer, SigningKey
from gateway.web.app import bound_port, build_app, serve
from tests.fakes import GATEWAY, HR, NOW, SPO2, STREAMING, RecordingSensors, reply_events
from tests.harness import running_gateway, wait_until
from tests.llama_server import API_KEY, MODEL, LlamaCppServer
from tests.processes import LOOPBACK, free_port

PROMPT = (
    "<start_of_turn>user\nWhat is a normal resting heart rate for an adult?<end_of_turn>\n"
    "<start_of_turn>model\n"
)


@pytest.fixture(scope="module")
def server(
    model_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppServer]:
    resolved = resolve_model(
        model=DEFAULT_MODEL, model_path=None, data_dir=model_data_dir, progress=False
    )
    process = LlamaCppServer(resolved.path, tmp_path_factory.mktemp("llama-server") / "log")
    process.start()
    yield process
    process.stop()


def remote(server: LlamaCppServer, **settings: object) -> AssistantSettings:
    values: dict[str, object] = {
        "backend": "remote",
        "base_url": server.base_url,
        "api_key": API_KEY,
        "seed": 7,
    }
    return AssistantSettings.model_validate(values | settings)


@pytest.fixture
async def engine(server: LlamaCppServer) -> AsyncIterator[RemoteEngine]:
    async with RemoteEngine(remote(server)) as started:
        yield started


# -- settings (pure) -------------------------------------------------------------------------------


def test_settings_name_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"assistant\.base_url is not set"):
        AssistantSettings(backend="remote")
    with pytest.raises(ValidationError, match="expected an http"):
        AssistantSettings(backend="remote", base_url="gpu-box:8080")
    settings = AssistantSettings(backend="remote", base_url="https://gpu-box:8080/v1/")
    assert settings.base_url == "https://gpu-box:8080/v1"

    monkeypatch.setenv("BEDSIDE_ASSISTANT__BACKEND", "remote")
    monkeypatch.setenv("BEDSIDE_ASSISTANT__BASE_URL", "http://gpu-box:8080/v1")
    monkeypatch.setenv("BEDSIDE_ASSISTANT__API_KEY", "s3cret")
    monkeypatch.setenv("BEDSIDE_ASSISTANT__REMOTE_MODEL", "medgemma-4b")
    loaded = load_settings(data_dir=tmp_path).assistant
    assert (loaded.backend, loaded.base_url, loaded.remote_model) == (
        "remote",
        "http://gpu-box:8080/v1",
        "medgemma-4b",
    )
    assert loaded.api_key is not None
    assert loaded.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)


# -- requests --------------------------------------------------------------------------------------


async def test_greedy_text_is_the_local_engines(
    engine: RemoteEngine, consultation_engine: Engine
) -> None:
    local = await consultation_engine.complete(PROMPT, max_tokens=24, temperature=0.0)
    far = await engine.complete(PROMPT, max_tokens=24, temperature=0.0)
    assert far.text == local.text
    assert far.finish_reason == local.finish_reason
    assert far.usage.prompt_tokens == local.usage.prompt_tokens
    assert far.usage.completion_tokens == local.usage.completion_tokens
    assert engine.model_info.name == MODEL
    assert engine.model_info.file is None
    assert engine.model_info.endpoint == engine.base_url


async def test_a_stop_string_cuts_here_and_is_named(
    engine: RemoteEngine, consultation_engine: Engine
) -> None:
    text = (await consultation_engine.complete(PROMPT, max_tokens=24, temperature=0.0)).text
    words = text.split()
    assert len(words) >= 4
    stop = words[len(words) // 2]
    async with engine.stream(PROMPT, max_tokens=24, temperature=0.0, stop=[stop]) as generation:
        pieces = [event.text async for event in generation if isinstance(event, TextPiece)]
    finished = generation.finished
    assert finished is not None
    assert (finished.finish_reason, finished.stop) == ("stop", stop)
    assert finished.text == text[: text.index(stop)] == "".join(pieces)


async def test_the_grammar_is_applied_by_the_server(engine: RemoteEngine) -> None:
    allowed = {"8867-4", "59408-5"}
    prompt = PROMPT + "I will measure it. <request_observation"
    finished = await engine.complete(
        prompt, max_tokens=32, temperature=0.0, grammar=tag_completion(allowed)
    )
    match = TAG_PATTERN.fullmatch("<request_observation" + finished.text)
    assert match is not None
    assert match.group("code") in allowed


async def test_cancel_and_timeout_leave_the_server_usable(engine: RemoteEngine) -> None:
    async with engine.stream(PROMPT, max_tokens=400, temperature=0.7) as generation:
        async for event in generation:
            if isinstance(event, TextPiece):
                generation.cancel()
    assert generation.finished is not None
    assert generation.finished.finish_reason == "cancelled"

    with pytest.raises(EngineTimeoutError, match=r"did not finish within 0\.3 s"):
        await engine.complete(PROMPT, max_tokens=400, temperature=0.7, timeout=0.3)

    after = await engine.complete(PROMPT, max_tokens=4, temperature=0.0)
    assert after.finish_reason == "length"
    assert after.usage.completion_tokens == 4
    with pytest.raises(PromptError, match="takes text"):
        engine.stream([2, 105], max_tokens=4)


# -- failures, one sentence each -------------------------------------------------------------------


async def test_configuration_mistakes_are_one_sentence(server: LlamaCppServer) -> None:
    with pytest.raises(RemoteEngineError, match=r"refused the API key \(HTTP 401\)"):
        await RemoteEngine(remote(server, api_key="wrong")).start()
    with pytest.raises(ModelLoadError, match=f"does not serve 'medgemma'.*serves: {MODEL}"):
        await RemoteEngine(remote(server, remote_model="medgemma")).start()

    nobody = f"http://{LOOPBACK}:{free_port()}/v1"
    with pytest.raises(ModelLoadError, match=r"cannot be reached.*set assistant\.remote_model"):
        await RemoteEngine(remote(server, base_url=nobody)).start()
    # With the model named, the gateway starts and each request says the server is down.
    async with RemoteEngine(remote(server, base_url=nobody, remote_model=MODEL)) as down:
        with pytest.raises(RemoteEngineError, match=r"^the inference server at .* cannot be"):
            await down.complete(PROMPT, max_tokens=4)


async def test_doctor_checks_the_remote_server(server: LlamaCppServer, tmp_path: Path) -> None:
    def settings(**assistant: object) -> object:
        return load_settings(data_dir=tmp_path).model_copy(
            update={"assistant": remote(server, **assistant)}
        )

    good = await check_remote_model(settings())  # type: ignore[arg-type]
    assert (good.level, good.detail) == (Level.OK, f"{MODEL} served by {server.base_url}")
    wrong_key = await check_remote_model(settings(api_key="wrong"))  # type: ignore[arg-type]
    assert wrong_key.level is Level.FAIL
    assert "api_key" in wrong_key.detail
    nobody = f"http://{LOOPBACK}:{free_port()}/v1"
    down = await check_remote_model(settings(base_url=nobody, remote_model=MODEL))  # type: ignore[arg-type]
    assert down.level is Level.FAIL
    assert "cannot be reached" in down.detail


# -- consultations ---------------------------------------------------------------------------------


async def test_consultation_with_require_runs_end_to_end_on_the_server(
    server: LlamaCppServer, tmp_path: Path
) -> None:
    async with (
        RemoteEngine(remote(server)) as engine,
        running_gateway(tmp_path, ["ecg", "spo2"]) as run,
    ):
        await wait_until(
            lambda: run.states() == {"ecg": STREAMING, "spo2": STREAMING}, 30, "both streaming"
        )
        service = ConsultationService(
            engine,
            run.manager,
            gateway=run.gateway.info,
            signer=build_signer(run.gateway.data_dir, {"reference": "urn:uuid:gateway"}),
            store=run.gateway.store,
            settings=ConsultationSettings(
                temperature=0.0, max_reply_tokens=24, report_max_tokens=160
            ),
            profiles=run.gateway.profiles,
        )
        consultation = service.create([HR, SPO2])
        events = await reply_events(consultation, "How is the patient doing?")
        bundle = await service.close(consultation.id)

    measured = [e.code for e in events if isinstance(e, ObservationReceived)]
    assert measured[:2] == [HR, SPO2]
    done = events[-1]
    assert isinstance(done, Done)
    steps = done.usage.steps
    assert [s.kind for s in steps[:3]] == ["forced_tag", "forced_tag", "reply"]
    assert all(s.prompt_tokens > 0 for s in steps)  # counted by the server
    assert steps[1].prompt_tokens > steps[0].prompt_tokens
    assert "<request_observation code=" in consultation.transcript()

    resources = [entry["resource"] for entry in bundle["entry"]]
    report = next(r for r in resources if r["resourceType"] == "DiagnosticReport")
    assert report["status"] == "partial"
    model = next(
        r
        for r in resources
        if r["resourceType"] == "Device" and r["identifier"][0]["system"] == MODEL_ENDPOINT_SYSTEM
    )
    assert model["identifier"][0]["value"] == f"{server.base_url} {MODEL}"
    assert model["deviceName"][0]["name"] == MODEL


async def test_the_server_going_away_mid_reply_is_clear_and_the_consultation_goes_on(
    server: LlamaCppServer,
) -> None:
    async with RemoteEngine(remote(server)) as engine:
        service = ConsultationService(
            engine,
            RecordingSensors({}),
            gateway=GATEWAY,
            signer=Signer(SigningKey.generate(), {"reference": "urn:uuid:gateway"}),
            settings=ConsultationSettings(temperature=0.7, max_reply_tokens=400, seed=3),
            clock=lambda: NOW,
        )
        consultation = service.create([])
        said: list[str] = []

        async def until_killed() -> None:
            async with consultation.send("Write a long handover note.") as reply:
                async for event in reply:
                    if isinstance(event, TokenEvent):
                        said.append(event.text)
                        if len(said) == 1:
                            server.kill()

        with pytest.raises(RemoteEngineError) as failure:
            await until_killed()
        message = str(failure.value)
        assert message.startswith(f"the inference server at {server.base_url} ")
        assert "\n" not in message
        assert "Traceback" not in message
        assert said
        assert "".join(said) in consultation.transcript()  # what was said is kept
        assert not consultation.busy

        await asyncio.to_thread(server.start)  # back, on the same port
        events = await reply_events(consultation, "Go on, briefly.")
    done = events[-1]
    assert isinstance(done, Done)
    assert done.finish_reason in {"stop", "length"}
    assert done.usage.steps[0].prompt_tokens > 0


async def test_finished_events_reach_the_metrics_observer(engine: RemoteEngine) -> None:
    seen: list[Finished] = []
    engine.on_finished = seen.append
    finished = await engine.complete(PROMPT, max_tokens=3, temperature=0.0)
    assert seen == [finished]


async def test_the_gateways_v1_api_serves_the_remote_model(
    engine: RemoteEngine, consultation_engine: Engine
) -> None:
    app = build_app(token=API_KEY, engine=engine)
    runner = await serve(app, LOOPBACK, 0)
    try:
        url = f"http://{LOOPBACK}:{bound_port(runner)}/v1"
        async with openai.AsyncOpenAI(base_url=url, api_key=API_KEY) as client:
            models = await client.models.list()
            assert [m.id for m in models.data] == [MODEL]
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "What is a normal resting heart rate?"}],
                max_tokens=12,
                temperature=0,
                stream=True,
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    finally:
        await runner.cleanup()
    prompt = format_gemma3([{"role": "user", "content": "What is a normal resting heart rate?"}])
    local = await consultation_engine.complete(prompt, max_tokens=12, temperature=0.0)
    assert text == local.text
