"""The local LLM engine: one ``llama_cpp.Llama`` owned by one dedicated worker thread.

llama.cpp contexts are not thread-safe, so every evaluation runs in the worker, one request at a
time, in the order submitted; the event loop talks to it through a queue and never blocks.

API (for the consultation loop and the HTTP API)::

    engine = Engine(AssistantSettings(), data_dir=settings.data_dir)
    info: ModelInfo = await engine.start()        # resolves, assembles/verifies, loads the model
    ...
    await engine.close()                          # or: async with Engine(...) as engine:

    engine.model_info -> ModelInfo         # name, file, sha256, n_ctx, n_ctx_train, chat_format
    engine.tokenize(text, *, add_bos=True, special=True) -> list[int]     # thread-safe, sync
    engine.detokenize(tokens, *, special=True) -> str                     # thread-safe, sync
    format_gemma3(messages) -> str                # (gateway.assistant.chatformat) the prompt text

    gen: Generation = engine.stream(
        prompt: str | list[int],                  # text (tokenized with <bos>) or tokens
        *,
        max_tokens: int | None = None,            # None: until end of turn or the context is full
        temperature: float = 1.0,                 # 0: greedy
        top_p: float = 0.95, top_k: int = 64, min_p: float = 0.0,
        repeat_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
        stop: Sequence[str] = (),                 # cut before the earliest of these
        grammar: str | None = None,               # GBNF text with a 'root' rule
        seed: int | None = None,                  # None: settings.seed, else random
        timeout: float | None = None,             # None: settings.request_timeout_s (queue too)
    )
    async with gen:                               # leaving the block cancels an unfinished request
        async for event in gen:                   # TextPiece(text) ..., then exactly one Finished
            ...
    gen.cancel()                    # the worker stops at the next token; the iteration then
                                    # ends with Finished(finish_reason="cancelled")
    gen.pending() -> int            # events already here (anext() returns without waiting)
    gen.finished -> Finished | None # the last event, once iterated
    finished: Finished = await engine.complete(prompt, **same_options)   # all text at once

    Finished(finish_reason: "stop" | "length" | "cancelled", usage: Usage, stop: str | None,
             text: str, queued_s, prompt_s, decode_s)
    Usage(prompt_tokens, tokens_evaluated, completion_tokens)  # + cached_tokens, total_tokens
    await engine.context_tokens() -> list[int]    # the tokens whose KV the context holds now

Errors (gateway.assistant.errors): ``EngineClosedError`` (not started / closed),
``ContextOverflowError`` (prompt ≥ n_ctx), ``GrammarError`` (bad GBNF), ``EngineTimeoutError``
(raised from the iteration, with the usage so far), ``ModelLoadError`` / ``ModelFileError`` from
:meth:`Engine.start`. Breaking out of ``async for``, leaving ``async with`` early, or cancelling
the consuming task all cancel the request; the worker stops generating at the next token.

Stop conditions: an end-of-generation token of the model (Gemma 3: ``<end_of_turn>``, ``<eos>``),
a stop string (``finish_reason="stop"``, ``stop`` names it; the text returned ends before it),
``max_tokens`` or a full context (``"length"``).

KV-cache (prefix) reuse: the context keeps the tokens of the last request (its prompt and the
tokens whose text was returned). A request whose tokens start with the same tokens evaluates only
the rest: ``usage.tokens_evaluated`` counts the prompt tokens that had to be evaluated (at least 1,
for fresh logits). When generation stops at a stop string, the context is cut back to exactly the
tokens whose text was returned, so a next prompt that appends to the returned text continues
cheaply. Gemma 3 uses sliding-window attention: with ``swa_full=True`` (the default) any cut-back
keeps the prefix; with ``swa_full=False`` those layers keep only the last n_swa + n_ubatch
positions, and a request that would continue before what they still hold is evaluated in full
(llama-cpp-python's own ``generate()`` would go on without the missing positions).

Streaming: text is handed to the event loop in batches, at most every 50 ms (the first piece at
once), so that the loop wakes less often on a small CPU-bound box.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import concurrent.futures
import contextlib
import ctypes
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Generic, Literal, Self, TypeVar

import numpy as np

from gateway.assistant.chatformat import format_gemma3
from gateway.assistant.errors import (
    ContextOverflowError,
    EngineClosedError,
    EngineError,
    EngineTimeoutError,
    GrammarError,
    ModelLoadError,
    PromptError,
)
from gateway.assistant.manifest import Manifest, ResolvedModel, resolve_model
from gateway.assistant.settings import LLAMA_DEFAULT_SEED, AssistantSettings
from gateway.assistant.stops import StopMatcher

__all__ = [
    "Engine",
    "FinishReason",
    "Finished",
    "Generation",
    "ModelInfo",
    "StreamEvent",
    "TextPiece",
    "Usage",
    "format_gemma3",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
FinishReason = Literal["stop", "length", "cancelled"]
GRAMMAR_ROOT: Final = b"root"
BOS_TEXT: Final = "<bos>"
PIECE_BUFFER: Final = 64  # bytes; longer pieces (Gemma 3 has pieces > 32 bytes) grow it
SEED_BITS: Final = 31
# The worker notices a timeout at the next token and reports it with the usage so far; the
# consumer waits this much longer before giving up on a worker stuck in a long prompt batch.
TIMEOUT_GRACE_S: Final = 0.25
STREAM_BATCH_S: Final = (
    0.05  # text reaches the event loop at most every 50 ms (first piece at once)
)


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
    queued_s: float = 0.0  # waiting for the worker
    prompt_s: float = 0.0  # worker start → first token (tokenizing and evaluating the prompt)
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
class _Sampling:
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int


class _Sink:
    """Hands events from the worker thread to the consumer's event loop.

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

    def put(self, item: StreamEvent | BaseException) -> None:  # worker thread
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
class _Request:
    prompt: str | list[int]
    sampling: _Sampling
    stop: tuple[str, ...]
    grammar: str | None
    timeout_s: float
    deadline: float  # time.monotonic()
    cancel: threading.Event
    sink: _Sink
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Call(Generic[T]):
    fn: Callable[[Any], T]
    future: concurrent.futures.Future[T]


def _common_prefix(cached: np.ndarray[Any, Any], tokens: Sequence[int]) -> int:
    size = min(len(cached), len(tokens))
    if size == 0:
        return 0
    equal = cached[:size] == np.asarray(tokens[:size], dtype=cached.dtype)
    return size if bool(equal.all()) else int(np.argmin(equal))


def token_piece(vocab: Any, token: int, buffer: ctypes.Array[ctypes.c_char]) -> bytes:
    """The bytes of one token (control tokens rendered), growing past llama-cpp-python's fixed
    32-byte buffer: a negative result is the size needed (llama.h llama_token_to_piece)."""
    import llama_cpp

    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    return buffer.raw[:size]


class _Worker(threading.Thread):
    """The thread that owns the Llama: loads it, then serves jobs until told to stop."""

    def __init__(
        self,
        settings: AssistantSettings,
        data_dir: Path,
        manifest: Manifest | None,
        progress: bool,
    ) -> None:
        super().__init__(name="llm-worker", daemon=True)
        self.settings = settings
        self._data_dir = data_dir
        self._manifest = manifest
        self._progress = progress
        self.loaded: concurrent.futures.Future[ModelInfo] = concurrent.futures.Future()
        self.jobs: queue.SimpleQueue[_Request | _Call[Any] | None] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.current: _Request | None = None
        self.llm: Any = None
        self.vocab: Any = None
        self._memory: Any = None
        self._n_swa = 0
        self._buffer = ctypes.create_string_buffer(PIECE_BUFFER)
        self.n_ctx = 0

    # -- lifecycle --

    def run(self) -> None:
        try:
            info = self._load()
        except Exception as exc:  # noqa: BLE001 - handed to start()
            self.loaded.set_exception(exc)
            return
        self.loaded.set_result(info)
        try:
            while (job := self.jobs.get()) is not None:
                if isinstance(job, _Call):
                    self._call(job)
                else:
                    self._serve(job)
        finally:
            self._drain()
            self.llm.close()

    def _load(self) -> ModelInfo:
        settings = self.settings
        resolved: ResolvedModel = resolve_model(
            model=settings.model,
            model_path=settings.model_path,
            data_dir=self._data_dir,
            models_dir=settings.models_dir,
            manifest=self._manifest,
            progress=self._progress,
        )
        n_ctx = settings.n_ctx
        if resolved.n_ctx_train is not None:
            n_ctx = min(n_ctx, resolved.n_ctx_train)
        import llama_cpp

        try:
            llm = llama_cpp.Llama(
                model_path=str(resolved.path),
                n_ctx=n_ctx,
                n_batch=min(settings.n_batch, n_ctx),
                n_threads=settings.n_threads,
                n_threads_batch=settings.n_threads,
                n_gpu_layers=settings.n_gpu_layers,
                flash_attn=settings.flash_attn,
                swa_full=settings.swa_full,
                seed=LLAMA_DEFAULT_SEED if settings.seed is None else settings.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{resolved.path}: llama.cpp could not load it ({exc})") from exc
        self.llm = llm
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._memory = llama_cpp.llama_get_memory(llm.ctx)
        self._n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
        self.n_ctx = int(llm.n_ctx())
        log.info(
            "loaded %s (%s), context %d tokens, %d threads, %d GPU layers",
            resolved.name,
            resolved.path,
            self.n_ctx,
            settings.n_threads,
            settings.n_gpu_layers,
        )
        return ModelInfo(
            name=resolved.name,
            file=resolved.path,
            sha256=resolved.sha256,
            n_ctx=self.n_ctx,
            n_ctx_train=resolved.n_ctx_train,
            chat_format=resolved.chat_format,
        )

    def _drain(self) -> None:
        closed = EngineClosedError("the engine closed before the request ran")
        with contextlib.suppress(queue.Empty):
            while True:
                job = self.jobs.get_nowait()
                if isinstance(job, _Call):
                    job.future.set_exception(closed)
                elif job is not None:
                    job.sink.put(closed)

    def _call(self, job: _Call[Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(self.llm))
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            job.future.set_exception(exc)

    def _serve(self, request: _Request) -> None:
        self.current = request
        try:
            self._generate(request)
        except EngineError as exc:
            request.sink.put(exc)
        except Exception as exc:
            log.exception("generation failed; the context is reset")
            self.llm.reset()
            request.sink.put(EngineError(f"generation failed: {exc}"))
        finally:
            self.current = None

    # -- generation --

    def tokenize_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            return prompt
        add_bos = not prompt.startswith(BOS_TEXT)
        return list(self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))

    def _grammar(self, text: str | None) -> Any:
        if text is None:
            return None
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        # LlamaGrammar.from_string does not parse; llama.cpp does, when the sampler is made.
        sampler = llama_cpp.llama_sampler_init_grammar(
            self.vocab, text.encode("utf-8"), GRAMMAR_ROOT
        )
        if not sampler:
            raise GrammarError(
                "grammar: llama.cpp cannot parse it; expected GBNF with a 'root' rule "
                "(its parser logged the position on stderr)"
            )
        llama_cpp.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(text, verbose=False)

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the longest cached prefix of ``tokens`` (leaving at least one token to
        evaluate); returns its length."""
        import llama_cpp

        llm = self.llm
        keep = min(_common_prefix(llm.input_ids[: llm.n_tokens], tokens), len(tokens) - 1)
        if keep > 0 and llama_cpp.llama_memory_seq_rm(self._memory, -1, keep, -1):
            # A sliding-window cache that is not full-size (swa_full=False) only holds the last
            # positions; continuing at `keep` needs the window before it (llama-server checks
            # the same). llama-cpp-python's own generate() does not, and goes on silently wrong.
            pos_min = llama_cpp.llama_memory_seq_pos_min(self._memory, 0)
            if 0 <= pos_min <= max(0, keep - self._n_swa):
                llm.n_tokens = keep
                return keep
        llm.reset()  # the next eval() removes every cell from position 0 on
        return 0

    def _interrupted(self, request: _Request) -> Literal["cancelled", "timeout"] | None:
        if request.cancel.is_set() or self.stopping.is_set():
            return "cancelled"
        if time.monotonic() >= request.deadline:
            return "timeout"
        return None

    def _generate(self, request: _Request) -> None:  # noqa: PLR0912, PLR0915 - one loop, kept whole
        import llama_cpp

        started = time.monotonic()
        if self.stopping.is_set():
            raise EngineClosedError("the engine is closing")
        interrupted = self._interrupted(request)
        if interrupted == "timeout":
            raise EngineTimeoutError(request.timeout_s)
        if interrupted == "cancelled":
            request.sink.put(Finished("cancelled", Usage(0, 0, 0), None, ""))
            return
        llm = self.llm
        tokens = self.tokenize_prompt(request.prompt)
        n_prompt = len(tokens)
        if n_prompt == 0:
            raise PromptError("the prompt is empty: give at least one token")
        if n_prompt >= self.n_ctx:
            raise ContextOverflowError(n_prompt, self.n_ctx)
        grammar = self._grammar(request.grammar)
        sampling = request.sampling
        reused = self._reuse_prefix(tokens)
        suffix = tokens[reused:]
        # Evaluate a long prompt a batch at a time, so that a cancelled or timed-out request
        # stops between batches; generate() evaluates the last (partial) batch in one call.
        done = 0
        while interrupted is None and len(suffix) - done > llm.n_batch:
            llm.eval(suffix[done : done + llm.n_batch])
            done += llm.n_batch
            interrupted = self._interrupted(request)

        limit = self.n_ctx - n_prompt
        if sampling.max_tokens is not None:
            limit = min(limit, sampling.max_tokens)
        matcher = StopMatcher(request.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        returned: list[str] = []
        marks: list[tuple[int, bool]] = []  # per completion token: (chars decoded, decoder clean)
        decoded = 0
        completion = 0
        first_token_at: float | None = None
        finish: FinishReason | None = None

        def release(text: str) -> None:
            if text:
                returned.append(text)
                request.sink.put(TextPiece(text))

        if interrupted is None:
            llm.set_seed(sampling.seed)
            tokens_out = llm.generate(
                suffix[done:],
                reset=False,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                temp=sampling.temperature,
                repeat_penalty=sampling.repeat_penalty,
                presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty,
                grammar=grammar,
            )
            try:
                for token in tokens_out:
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                    if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                        finish = "stop"
                        break
                    completion += 1
                    text = decoder.decode(token_piece(self.vocab, token, self._buffer))
                    decoded += len(text)
                    marks.append((decoded, decoder.getstate()[0] == b""))
                    release(matcher.feed(text))
                    if matcher.matched is not None:
                        finish = "stop"
                        break
                    if completion >= limit:
                        finish = "length"
                        break
                    if (interrupted := self._interrupted(request)) is not None:
                        break
            finally:
                tokens_out.close()
        if finish in {"stop", "length"} and matcher.matched is None:
            release(matcher.feed(decoder.decode(b"", final=True)))
            release(matcher.flush())
            if matcher.matched is not None:
                finish = "stop"
        ended = time.monotonic()

        # Keep in the context exactly the tokens whose text was returned.
        returned_chars = sum(len(t) for t in returned)
        kept = 0
        for count, (chars, clean) in enumerate(marks, start=1):
            if chars > returned_chars:
                break
            if clean:
                kept = count
        llm.n_tokens = min(llm.n_tokens, n_prompt + kept)

        usage = Usage(n_prompt, n_prompt - reused, completion)
        if interrupted == "timeout":
            raise EngineTimeoutError(request.timeout_s, usage)
        first = first_token_at if first_token_at is not None else ended
        request.sink.put(
            Finished(
                finish_reason=finish or "cancelled",
                usage=usage,
                stop=matcher.matched,
                text="".join(returned),
                queued_s=started - request.enqueued,
                prompt_s=first - started,
                decode_s=ended - first,
            )
        )


class Generation:
    """One request's events, as an async iterator (and async context manager).

    Iteration yields :class:`TextPiece` events and ends after one :class:`Finished`; errors of
    the request are raised from it. Leaving the ``async with`` block, :meth:`aclose`, cancelling
    the consuming task, or dropping the object cancel an unfinished request.
    """

    def __init__(self, request: _Request, loop_deadline: float) -> None:
        self._request = request
        self._deadline = loop_deadline
        self._done = False
        self.finished: Finished | None = None

    def cancel(self) -> None:
        """Ask the worker to stop at the next token; iteration ends with ``"cancelled"``."""
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


class Engine:
    """The model in its worker thread; see the module docstring for the API."""

    def __init__(
        self,
        settings: AssistantSettings | None = None,
        *,
        data_dir: Path,
        manifest: Manifest | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings or AssistantSettings()
        self.data_dir = data_dir
        self._manifest = manifest
        self._progress = progress
        self._worker: _Worker | None = None
        self._info: ModelInfo | None = None

    # -- lifecycle --

    async def start(self) -> ModelInfo:
        """Resolve the model file (assembling an embedded one on first use), verify its sha256
        and load it in the worker thread."""
        if self._worker is not None:
            raise EngineError("the engine is already started")
        worker = _Worker(self.settings, self.data_dir, self._manifest, self._progress)
        self._worker = worker
        worker.start()
        try:
            self._info = await asyncio.wrap_future(worker.loaded)
        except BaseException:
            self._worker = None
            worker.stopping.set()
            worker.jobs.put(None)
            raise
        return self._info

    async def close(self) -> None:
        """Cancel the running request, fail the queued ones, free the model."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.stopping.set()
        current = worker.current
        if current is not None:
            current.cancel.set()
        worker.jobs.put(None)
        await asyncio.to_thread(worker.join)

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

    @property
    def running(self) -> bool:
        return self._worker is not None and self._info is not None

    @property
    def model_info(self) -> ModelInfo:
        self._ready()
        assert self._info is not None
        return self._info

    def _ready(self) -> _Worker:
        worker = self._worker
        if worker is None or self._info is None:
            raise EngineClosedError("the engine is not running: await engine.start() first")
        return worker

    # -- tokens --

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Tokens of ``text`` (llama.cpp tokenization reads only the vocabulary: thread-safe)."""
        llm = self._ready().llm
        return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, tokens: Sequence[int], *, special: bool = True) -> str:
        """Text of ``tokens`` (control tokens rendered when ``special``)."""
        import llama_cpp

        worker = self._ready()
        buffer = ctypes.create_string_buffer(PIECE_BUFFER)
        data = b"".join(
            token_piece(worker.vocab, t, buffer)
            for t in tokens
            if special or not llama_cpp.llama_vocab_is_control(worker.vocab, t)
        )
        return data.decode("utf-8", errors="replace")

    async def context_tokens(self) -> list[int]:
        """The tokens the context holds now (after queued requests ran)."""
        return await self._call(lambda llm: [int(t) for t in llm.input_ids[: llm.n_tokens]])

    async def _call(self, fn: Callable[[Any], T]) -> T:
        worker = self._ready()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        worker.jobs.put(_Call(fn, future))
        return await asyncio.wrap_future(future)

    # -- generation --

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
    ) -> Generation:
        """Queue a request; iterate the returned :class:`Generation` for its events."""
        worker = self._ready()
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens: expected at least 1, got {max_tokens}")
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature: expected a number ≥ 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p: expected 0 < top_p ≤ 1, got {top_p}")
        if isinstance(stop, str):
            stop = (stop,)
        timeout_s = self.settings.request_timeout_s if timeout is None else timeout
        if not timeout_s > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout_s}")
        if seed is None:
            seed = self.settings.seed
        sampling = _Sampling(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=secrets.randbits(SEED_BITS) if seed is None else seed,
        )
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        request = _Request(
            prompt=prompt,
            sampling=sampling,
            stop=tuple(stop),
            grammar=grammar,
            timeout_s=timeout_s,
            deadline=time.monotonic() + timeout_s,
            cancel=cancel,
            sink=_Sink(loop, cancel),
        )
        worker.jobs.put(request)
        return Generation(request, loop.time() + timeout_s + TIMEOUT_GRACE_S)

    async def complete(self, prompt: str | list[int], **options: Any) -> Finished:
        """Run a request to its end; :attr:`Finished.text` holds all its text."""
        async with self.stream(prompt, **options) as generation:
            async for event in generation:
                if isinstance(event, Finished):
                    return event
        raise EngineError("the request ended without a final event")  # pragma: no cover
