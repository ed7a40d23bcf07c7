"""The engine thread: the one thread that owns the ``llama_cpp.Llama`` (llama.cpp contexts are
not thread-safe). It loads the model, then serves the queued jobs one at a time, in order:
generation requests (:class:`~gateway.assistant.stream.Request`) and calls on the model
(:class:`Call`). :class:`gateway.assistant.engine.Engine` is the event loop's side of it.

KV-cache (prefix) reuse lives here too (:meth:`EngineThread._reuse_prefix`): the context keeps the
tokens of the last request, a request that starts with them evaluates only the rest, and a reply
cut at a stop string is cut back in the context to exactly the returned text.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import contextlib
import ctypes
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

import numpy as np

from gateway.assistant.errors import (
    ContextOverflowError,
    EngineClosedError,
    EngineError,
    EngineTimeoutError,
    GrammarError,
    ModelLoadError,
    PromptError,
)
from gateway.assistant.llama_load import load_llama
from gateway.assistant.manifest import Manifest, ResolvedModel, resolve_model
from gateway.assistant.settings import LLAMA_DEFAULT_SEED, AssistantSettings
from gateway.assistant.stops import StopMatcher
from gateway.assistant.stream import (
    Finished,
    FinishReason,
    ModelInfo,
    Request,
    TextPiece,
    Usage,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
GRAMMAR_ROOT: Final = b"root"
BOS_TEXT: Final = "<bos>"
PIECE_BUFFER: Final = 64  # bytes; longer pieces (Gemma 3 has pieces > 32 bytes) grow it


@dataclass(slots=True)
class Call(Generic[T]):
    """A function to run on the model in the engine thread, its result handed back."""

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


class EngineThread(threading.Thread):
    """The thread that owns the Llama: loads it, then serves jobs until told to stop."""

    def __init__(
        self,
        settings: AssistantSettings,
        data_dir: Path,
        manifest: Manifest | None,
        progress: bool,
    ) -> None:
        super().__init__(name="llm-engine", daemon=True)
        self.on_finished: Callable[[Finished], None] | None = None
        """Told of every finished request, on this thread (metrics)."""
        self.settings = settings
        self._data_dir = data_dir
        self._manifest = manifest
        self._progress = progress
        self.loaded: concurrent.futures.Future[ModelInfo] = concurrent.futures.Future()
        self.jobs: queue.SimpleQueue[Request | Call[Any] | None] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.current: Request | None = None
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
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # start() gave up
                self.loaded.set_exception(exc)
            return
        try:
            try:
                self.loaded.set_result(info)
            except concurrent.futures.InvalidStateError:  # start() was cancelled meanwhile
                return
            while (job := self.jobs.get()) is not None:
                if isinstance(job, Call):
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
            llm = load_llama(
                cpu_repack=settings.cpu_repack,
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
                if isinstance(job, Call):
                    job.future.set_exception(closed)
                elif job is not None:
                    job.sink.put(closed)

    def _call(self, job: Call[Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(self.llm))
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            job.future.set_exception(exc)

    def _serve(self, request: Request) -> None:
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

    def _interrupted(self, request: Request) -> Literal["cancelled", "timeout"] | None:
        if request.cancel.is_set() or self.stopping.is_set():
            return "cancelled"
        if time.monotonic() >= request.deadline:
            return "timeout"
        return None

    def _generate(self, request: Request) -> None:  # noqa: PLR0912, PLR0915 - one loop, kept whole
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
        finished = Finished(
            finish_reason=finish or "cancelled",
            usage=usage,
            stop=matcher.matched,
            text="".join(returned),
            queued_s=started - request.enqueued,
            prompt_s=first - started,
            decode_s=ended - first,
        )
        request.sink.put(finished)
        observer = self.on_finished
        if observer is not None:
            observer(finished)
