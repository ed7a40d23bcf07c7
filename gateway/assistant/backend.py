"""What the consultation loop and the HTTP API need of a model, whichever runs it: the local
llama.cpp engine (:class:`gateway.assistant.engine.Engine`) or a remote OpenAI-compatible server
(:class:`gateway.assistant.remote.RemoteEngine`), chosen by ``assistant.backend``.

Both take a prompt as text (the engine adds ``<bos>``) or, for the local engine, as tokens from
its own :class:`~gateway.assistant.context.TokenContext`; both yield the same events
(:mod:`gateway.assistant.stream`) and raise the same errors (:mod:`gateway.assistant.errors`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, Unpack

from gateway.assistant.context import PromptContext
from gateway.assistant.errors import EngineError
from gateway.assistant.settings import AssistantSettings
from gateway.assistant.stream import Finished, Generation, ModelInfo, StreamOptions


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

    def stream(self, prompt: str | list[int], **options: Unpack[StreamOptions]) -> Generation: ...

    async def complete(
        self, prompt: str | list[int], **options: Unpack[StreamOptions]
    ) -> Finished: ...


class EngineBase(abc.ABC):
    """What the engines share: ``async with`` (start, close) and :meth:`complete` on top of
    their ``stream()``."""

    @abc.abstractmethod
    async def start(self) -> ModelInfo:
        """Load or reach the model; its description."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Cancel what runs and release the model or the connections."""

    @abc.abstractmethod
    def stream(self, prompt: str | list[int], **options: Unpack[StreamOptions]) -> Generation:
        """Start a request; iterate the returned :class:`Generation` for its events."""

    async def complete(self, prompt: str | list[int], **options: Unpack[StreamOptions]) -> Finished:
        """Run a request to its end; :attr:`Finished.text` holds all its text."""
        async with self.stream(prompt, **options) as generation:
            async for event in generation:
                if isinstance(event, Finished):
                    return event
        raise EngineError("the request ended without a final event")  # pragma: no cover

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def make_engine(settings: AssistantSettings, *, data_dir: Path, progress: bool) -> LlmEngine:
    """The engine ``settings.backend`` names, not started."""
    if settings.backend == "remote":
        from gateway.assistant.remote import RemoteEngine

        return RemoteEngine(settings)
    from gateway.assistant.engine import Engine

    return Engine(settings, data_dir=data_dir, progress=progress)
