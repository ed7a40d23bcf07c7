"""What the consultation loop and the HTTP API need of a model, whichever runs it: the local
llama.cpp engine (:class:`gateway.assistant.engine.Engine`) or a remote OpenAI-compatible server
(:class:`gateway.assistant.remote.RemoteEngine`), chosen by ``assistant.backend``.

Both take a prompt as text (the engine adds ``<bos>``) or, for the local engine, as tokens from
its own :class:`~gateway.assistant.context.TokenContext`; both yield the same events
(:mod:`gateway.assistant.stream`) and raise the same errors (:mod:`gateway.assistant.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.assistant.context import PromptContext
from gateway.assistant.settings import AssistantSettings
from gateway.assistant.stream import Finished, Generation, ModelInfo


class LlmEngine(Protocol):
    settings: AssistantSettings
    on_finished: Callable[[Finished], None] | None

    async def start(self) -> ModelInfo: ...

    async def close(self) -> None: ...

    @property
    def running(self) -> bool: ...

    @property
    def model_info(self) -> ModelInfo: ...

    @property
    def queued(self) -> int: ...

    def context(self) -> PromptContext: ...

    def stream(
        self,
        prompt: str | list[int],
        *,
        max_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 0.95,
        top_k: int = 64,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        stop: Sequence[str] = (),
        grammar: str | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> Generation: ...

    async def complete(self, prompt: str | list[int], **options: Any) -> Finished: ...


def make_engine(settings: AssistantSettings, *, data_dir: Path, progress: bool) -> LlmEngine:
    """The engine ``settings.backend`` names, not started."""
    if settings.backend == "remote":
        from gateway.assistant.remote import RemoteEngine

        return RemoteEngine(settings)
    from gateway.assistant.engine import Engine

    return Engine(settings, data_dir=data_dir, progress=progress)
