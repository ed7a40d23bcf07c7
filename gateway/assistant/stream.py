"""What a request to the engine is and what it yields: the events (:class:`TextPiece`, then one
:class:`Finished`), its :class:`Usage`, and :class:`Generation`, the async iterator the event
loop consumes while the engine thread (:mod:`gateway.assistant.llama_thread`) produces.

Light on purpose (no llama.cpp, no numpy): the HTTP routes and the consultation loop import these
types without loading the model code.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from gateway.assistant.errors import EngineTimeoutError

FinishReason = Literal["stop", "length", "cancelled"]
STREAM_BATCH_S: Final = 0.05  # text reaches the event loop at most every 50 ms (first at once)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int
    tokens_evaluated: int  # prompt tokens that had to be evaluated (the rest came from the cache)
    completion_tokens: int  # tokens generated (an end-of-generation token not counted)

    @property
    def cached_tokens(self) -> int:
        return self.prompt_tokens - self.tokens_evaluated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Generated text, in order; pieces concatenate to :attr:`Finished.text`."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of a request."""

    finish_reason: FinishReason
    usage: Usage
    stop: str | None  # the stop string that ended generation
    text: str  # all text returned
    queued_s: float = 0.0  # waiting for the engine thread
    prompt_s: float = 0.0  # thread start → first token (tokenizing and evaluating the prompt)
    decode_s: float = 0.0  # first → last token


StreamEvent = TextPiece | Finished


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The loaded model."""

    name: str  # manifest key, or the file's stem for a model_path
    file: Path
    sha256: str | None  # as verified against the manifest (None for a model_path)
    n_ctx: int  # the context window in use
    n_ctx_train: int | None
    chat_format: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """How one request samples its tokens."""

    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int


class Sink:
    """Hands events from the engine thread to the consumer's event loop.

    Text is passed over in batches, at most every :data:`STREAM_BATCH_S` (the first piece, the
    last event and errors at once): on a small CPU-bound box every wake-up of the event loop
    takes time from the compute threads.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, cancel: threading.Event) -> None:
        self.loop = loop
        self._cancel = cancel
        self._lock = threading.Lock()
        self._batch: list[StreamEvent | BaseException] = []
        self._sent_at: float | None = None
        self.received: collections.deque[StreamEvent | BaseException] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: StreamEvent | BaseException) -> None:  # engine thread
        now = time.monotonic()
        urgent = not isinstance(item, TextPiece) or self._sent_at is None
        with self._lock:
            self._batch.append(item)
            if not urgent and self._sent_at is not None and now - self._sent_at < STREAM_BATCH_S:
                return
            batch, self._batch = self._batch, []
            self._sent_at = now
        try:
            self.loop.call_soon_threadsafe(self._deliver, batch)
        except RuntimeError:  # the consumer's loop is closed: nobody listens any more
            self._cancel.set()

    def _deliver(self, batch: list[StreamEvent | BaseException]) -> None:  # event loop
        self.received.extend(batch)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> StreamEvent | BaseException:
        while not self.received:
            self._waiter = self.loop.create_future()
            await self._waiter
        return self.received.popleft()


@dataclass(slots=True)
class Request:
    """One queued generation request, as the engine thread receives it."""

    prompt: str | list[int]
    sampling: Sampling
    stop: tuple[str, ...]
    grammar: str | None
    timeout_s: float
    deadline: float  # time.monotonic()
    cancel: threading.Event
    sink: Sink
    enqueued: float = field(default_factory=time.monotonic)


class Generation:
    """One request's events, as an async iterator (and async context manager).

    Iteration yields :class:`TextPiece` events and ends after one :class:`Finished`; errors of
    the request are raised from it. Leaving the ``async with`` block, :meth:`aclose`, cancelling
    the consuming task, or dropping the object cancel an unfinished request.
    """

    def __init__(self, request: Request, loop_deadline: float) -> None:
        self._request = request
        self._deadline = loop_deadline
        self._done = False
        self.finished: Finished | None = None

    def cancel(self) -> None:
        """Ask the engine thread to stop at the next token; iteration ends with ``"cancelled"``."""
        self._request.cancel.set()

    def pending(self) -> int:
        """Events already received: that many ``anext()`` calls return without waiting."""
        return 0 if self._done else len(self._request.sink.received)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout_at(self._deadline):
                item = await self._request.sink.get()
        except TimeoutError:
            self._stop()
            raise EngineTimeoutError(self._request.timeout_s) from None
        except BaseException:
            self._stop()
            raise
        if isinstance(item, BaseException):
            self._stop()
            raise item
        if isinstance(item, Finished):
            self._done = True
            self.finished = item
        return item

    def _stop(self) -> None:
        self._done = True
        self._request.cancel.set()

    async def aclose(self) -> None:
        if not self._done:
            self._stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._done:  # dropped unfinished (a `break` out of `async for`)
            self._request.cancel.set()
