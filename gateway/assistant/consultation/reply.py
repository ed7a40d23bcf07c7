"""A consultation's reply to one message, as its caller holds it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from gateway.assistant.consultation.events import ConsultationEvent


class Reply:
    """The events of one message (async iterator, async context manager). Iterate it or close
    it: until then the consultation is busy. Leaving ``async with`` cancels an unfinished reply."""

    def __init__(
        self, release: Callable[[Reply], None], events: AsyncIterator[ConsultationEvent]
    ) -> None:
        self._release = release  # the consultation is free again
        self._events = events

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ConsultationEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        close = getattr(self._events, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            self._release(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
