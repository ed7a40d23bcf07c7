"""The local LLM engine: one ``llama_cpp.Llama`` owned by one dedicated thread.

llama.cpp contexts are not thread-safe, so every evaluation runs in the engine thread
(:mod:`gateway.assistant.llama_thread`); its context serves ``assistant.parallel`` sequences at
once (2 by default, each with its own prefix cache), requests taking a free one in the order
submitted; the event loop talks to the thread through a queue and never blocks. The request and
its events are in :mod:`gateway.assistant.stream`; this module is the event loop's side.

API (for the consultation loop and the HTTP API)::

    engine = Engine(AssistantSettings(), data_dir=settings.data_dir)
    info: ModelInfo = await engine.start()        # resolves, assembles/verifies, loads the model
    ...
    await engine.close()                          # or: async with Engine(...) as engine:

    engine.model_info -> ModelInfo         # name, file, sha256, n_ctx, n_ctx_train, chat_format
    engine.tokenize(text, *, add_bos=True, special=True) -> list[int]     # thread-safe, sync
    engine.detokenize(tokens, *, special=True) -> str                     # thread-safe, sync
    engine.context() -> TokenContext       # a conversation's prompt (gateway.assistant.context)
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
    gen.cancel()                    # the engine thread stops at the next token; the iteration
                                    # ends with Finished(finish_reason="cancelled")
    gen.pending() -> int            # events already here (anext() returns without waiting)
    gen.finished -> Finished | None # the last event, once iterated
    finished: Finished = await engine.complete(prompt, **same_options)   # all text at once

    Finished(finish_reason: "stop" | "length" | "cancelled", usage: Usage, stop: str | None,
             text: str, queued_s, prompt_s, decode_s)
    Usage(prompt_tokens, tokens_evaluated, completion_tokens)  # + cached_tokens, total_tokens
    await engine.context_tokens() -> list[int]    # the tokens whose KV the latest request's
                                                  # sequence holds now

Errors (gateway.assistant.errors): ``EngineClosedError`` (not started / closed),
``ContextOverflowError`` (prompt ≥ n_ctx), ``GrammarError`` (bad GBNF), ``EngineTimeoutError``
(raised from the iteration, with the usage so far), ``ModelLoadError`` / ``ModelFileError`` from
:meth:`Engine.start`. Breaking out of ``async for``, leaving ``async with`` early, or cancelling
the consuming task all cancel the request; the engine thread stops generating at the next token.

Stop conditions: an end-of-generation token of the model (Gemma 3: ``<end_of_turn>``, ``<eos>``),
a stop string (``finish_reason="stop"``, ``stop`` names it; the text returned ends before it),
``max_tokens`` or a full context (``"length"``).

KV-cache (prefix) reuse: each sequence keeps the tokens of its last request (its prompt and the
tokens whose text was returned); a request goes to the free sequence whose tokens share the
longest prefix with its own. A request whose tokens start with the same tokens evaluates only
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
import concurrent.futures
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, Unpack

from gateway.assistant.backend import EngineBase
from gateway.assistant.context import TokenContext
from gateway.assistant.errors import EngineClosedError, EngineError
from gateway.assistant.llama_thread import Call, EngineThread
from gateway.assistant.manifest import Manifest
from gateway.assistant.settings import AssistantSettings
from gateway.assistant.stream import Finished, Generation, ModelInfo, StreamOptions, build_request

__all__ = ["Engine"]

T = TypeVar("T")


class Engine(EngineBase):
    """The model in its engine thread; see the module docstring for the API."""

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
        self._thread: EngineThread | None = None
        self.on_finished: Callable[[Finished], None] | None = None
        """Told of every finished request, on the engine's thread (metrics); set before start."""
        self._info: ModelInfo | None = None

    # -- lifecycle --

    async def start(self) -> ModelInfo:
        """Resolve the model file (assembling an embedded one on first use), verify its sha256
        and load it in the engine thread."""
        if self._thread is not None:
            raise EngineError("the engine is already started")
        thread = EngineThread(self.settings, self.data_dir, self._manifest, self._progress)
        thread.on_finished = self.on_finished
        self._thread = thread
        thread.start()
        try:
            self._info = await asyncio.wrap_future(thread.loaded)
        except BaseException:
            self._thread = None
            thread.stopping.set()
            thread.jobs.put(None)
            # Cancelled while loading (the gateway shutting down): let the thread finish loading
            # and free the model, rather than leave it running into the interpreter's exit.
            await asyncio.shield(asyncio.to_thread(thread.join))
            raise
        return self._info

    async def close(self) -> None:
        """Cancel the running request, fail the queued ones, free the model."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.stopping.set()
        thread.interrupt_all()
        thread.jobs.put(None)
        await asyncio.to_thread(thread.join)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._info is not None

    @property
    def model_info(self) -> ModelInfo:
        self._ready()
        assert self._info is not None
        return self._info

    def _ready(self) -> EngineThread:
        thread = self._thread
        if thread is None or self._info is None:
            raise EngineClosedError("the engine is not running: await engine.start() first")
        return thread

    # -- tokens --

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Tokens of ``text`` (llama.cpp tokenization reads only the vocabulary: thread-safe)."""
        llm = self._ready().llm
        return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, tokens: Sequence[int], *, special: bool = True) -> str:
        """Text of ``tokens`` (control tokens rendered when ``special``)."""
        import llama_cpp

        thread = self._ready()
        data = b"".join(
            thread.pieces.get(t)[0]
            for t in tokens
            if special or not llama_cpp.llama_vocab_is_control(thread.vocab, t)
        )
        return data.decode("utf-8", errors="replace")

    def context(self) -> TokenContext:
        """A new, empty conversation prompt for this engine (tokens; see
        :mod:`gateway.assistant.context`)."""
        return TokenContext(
            lambda text, bos: self.tokenize(text, add_bos=bos, special=True), self.detokenize
        )

    async def context_tokens(self) -> list[int]:
        """The tokens the latest request's sequence holds now (after queued requests ran)."""
        return await self._call(
            lambda thread: list(thread.last_slot.tokens) if thread.last_slot is not None else []
        )

    async def _call(self, fn: Callable[[EngineThread], T]) -> T:
        thread = self._ready()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        thread.jobs.put(Call(fn, future))
        return await asyncio.wrap_future(future)

    # -- generation --

    def stream(self, prompt: str | list[int], **options: Unpack[StreamOptions]) -> Generation:
        """Queue a request; iterate the returned :class:`Generation` for its events."""
        thread = self._ready()
        # deferred: the engine thread hands text over just before each llama_decode
        request = build_request(self.settings, prompt, deferred=True, **options)
        thread.jobs.put(request)
        return Generation.of(request)

    @property
    def queued(self) -> int:
        """Requests waiting for a free sequence (the running ones not counted)."""
        thread = self._thread
        return thread.queued if thread is not None else 0
