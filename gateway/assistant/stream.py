"""What a request to the engine is and what it yields: the events (:class:`TextPiece`, then one
:class:`Finished`), its :class:`Usage`, and :class:`Generation`, the async iterator the event
loop consumes while the engine thread (:mod:`gateway.assistant.llama_thread`) produces.

Light on purpose (no llama.cpp, no numpy): the HTTP routes and the consultation loop import these
types without loading the model code.
"""

from __future__ import annotations

import asyncio
import collections
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self, TypedDict, Unpack

from gateway.assistant.errors import EngineTimeoutError

if TYPE_CHECKING:
    from gateway.assistant.settings import AssistantSettings

FinishReason = Literal["stop", "length", "cancelled"]
STREAM_BATCH_S: Final = 0.05  # text reaches the event loop at most every 50 ms (first at once)
SEED_BITS: Final = 31
# The producer notices a timeout at the next token and reports it with the usage so far; the
# consumer waits this much longer before giving up on a producer stuck (a long prompt batch).
TIMEOUT_GRACE_S: Final = 0.25


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
    compute_s: float = 0.0  # of prompt_s + decode_s, in llama.cpp (decoding, sampling)


StreamEvent = TextPiece | Finished


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The loaded model."""

    name: str  # manifest key, the file's stem for a model_path, or the remote server's name
    file: Path | None  # None: served by a remote server
    sha256: str | None  # as verified against the manifest (None for a model_path or remote)
    n_ctx: int  # the context window in use
    n_ctx_train: int | None
    chat_format: str
    endpoint: str | None = None  # the remote server's base_url


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
    takes time from the compute threads. A ``deferred`` sink holds text until its producer calls
    :meth:`flush`: the engine thread does so just before it hands the CPU to llama.cpp, so the
    event loop does its work while llama.cpp computes rather than while the engine thread needs
    the interpreter.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, cancel: threading.Event, *, deferred: bool = False
    ) -> None:
        self.loop = loop
        self._cancel = cancel
        self._deferred = deferred
        self._batch: list[StreamEvent | BaseException] = []  # the producer's alone
        self._sent_at: float | None = None
        self.received: collections.deque[StreamEvent | BaseException] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: StreamEvent | BaseException) -> None:  # the producer
        self._batch.append(item)
        if (
            isinstance(item, TextPiece)
            and self._sent_at is not None
            and (self._deferred or time.monotonic() - self._sent_at < STREAM_BATCH_S)
        ):
            return
        self._send()

    def flush(self) -> None:  # the producer
        """Hand over the text held back, if the last hand-over is :data:`STREAM_BATCH_S` ago."""
        if (
            self._batch
            and self._sent_at is not None
            and time.monotonic() - self._sent_at >= STREAM_BATCH_S
        ):
            self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        self._sent_at = time.monotonic()
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
    on_cancel: Callable[[], None] | None = None  # besides setting `cancel` (any thread)

    def interrupt(self) -> None:
        """Ask the producer to stop (the engine thread at its next token; a remote request at
        once)."""
        self.cancel.set()
        if self.on_cancel is not None:
            self.on_cancel()


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

    @classmethod
    def of(cls, request: Request) -> Generation:
        """The events of ``request``, given up on a little after its deadline."""
        return cls(request, request.sink.loop.time() + request.timeout_s + TIMEOUT_GRACE_S)

    def cancel(self) -> None:
        """Ask the engine thread to stop at the next token; iteration ends with ``"cancelled"``."""
        self._request.interrupt()

    def pending(self) -> int:
        """Events already received: that many ``anext()`` calls return without waiting."""
        return 0 if self._done else len(self._request.sink.received)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        received = self._request.sink.received
        try:
            if received:  # already here (a batch): no deadline to arm
                item = received.popleft()
            else:
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
        self._request.interrupt()

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
            self._request.interrupt()


class StreamOptions(TypedDict, total=False):
    """How one request generates (every engine's ``stream()`` and ``complete()`` take these)."""

    max_tokens: int | None  # None: until end of turn or the context is full
    temperature: float  # 0: greedy (default 1.0)
    top_p: float  # default 0.95
    top_k: int  # default 64
    min_p: float  # default 0.0
    repeat_penalty: float  # default 1.0 (none)
    presence_penalty: float  # default 0.0
    frequency_penalty: float  # default 0.0
    stop: Sequence[str] | str  # cut before the earliest of these
    grammar: str | None  # GBNF text with a 'root' rule
    seed: int | None  # None: the settings' seed, else a random one
    timeout: float | None  # None: the settings' request_timeout_s (queueing included)


def build_request(
    settings: AssistantSettings,
    prompt: str | list[int],
    *,
    deferred: bool = False,
    **options: Unpack[StreamOptions],
) -> Request:
    """A request with checked options (``ValueError`` naming a bad one), for the running loop;
    ``seed`` and ``timeout`` default to the settings' (a random seed when neither gives one)."""
    max_tokens = options.get("max_tokens")
    temperature = options.get("temperature", 1.0)
    top_p = options.get("top_p", 0.95)
    stop = options.get("stop", ())
    timeout = options.get("timeout")
    seed = options.get("seed")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens: expected at least 1, got {max_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a number ≥ 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected 0 < top_p ≤ 1, got {top_p}")
    if isinstance(stop, str):
        stop = (stop,)
    timeout_s = settings.request_timeout_s if timeout is None else timeout
    if not timeout_s > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout_s}")
    if seed is None:
        seed = settings.seed
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=options.get("top_k", 64),
        min_p=options.get("min_p", 0.0),
        repeat_penalty=options.get("repeat_penalty", 1.0),
        presence_penalty=options.get("presence_penalty", 0.0),
        frequency_penalty=options.get("frequency_penalty", 0.0),
        seed=secrets.randbits(SEED_BITS) if seed is None else seed,
    )
    cancel = threading.Event()
    return Request(
        prompt=prompt,
        sampling=sampling,
        stop=tuple(stop),
        grammar=options.get("grammar"),
        timeout_s=timeout_s,
        deadline=time.monotonic() + timeout_s,
        cancel=cancel,
        sink=Sink(asyncio.get_running_loop(), cancel, deferred=deferred),
    )
