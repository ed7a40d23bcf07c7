"""The engine thread: the one thread that owns the ``llama_cpp.Llama`` (llama.cpp contexts are
not thread-safe). It loads the model, then serves the queued jobs: generation requests
(:class:`~gateway.assistant.stream.Request`) and calls on the model (:class:`Call`).
:class:`gateway.assistant.engine.Engine` is the event loop's side of it.

The context holds ``assistant.parallel`` sequences (:class:`~.llama_slots.Slot`), each with its
own KV cells of ``n_ctx`` tokens and so its own prefix cache. Requests take a free slot in the
order they came (:func:`choose_slot`: the one whose cached tokens share most of the new prompt,
else an empty one, else the one used longest ago), and every step decodes one ``llama_batch``
holding the next token of each generating slot and a chunk of the prompt of each slot still
evaluating one (continuous batching, as llama-server does): a clinician's chat runs beside a
consultation instead of after it. With every slot busy, requests wait in order.

KV-cache (prefix) reuse per slot (:meth:`EngineThread._reuse_prefix`): a request that starts with
the slot's tokens evaluates only the rest, and a reply cut at a stop string is cut back in the
slot to exactly the returned text.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

from gateway.assistant.errors import (
    ContextOverflowError,
    EngineClosedError,
    EngineError,
    EngineTimeoutError,
    ModelLoadError,
    PromptError,
)
from gateway.assistant.llama_load import load_llama
from gateway.assistant.llama_slots import (
    Pieces,
    Slot,
    SlotRun,
    check_grammar,
    common_prefix,
    sampler_chain,
)
from gateway.assistant.manifest import Manifest, ResolvedModel, resolve_model
from gateway.assistant.settings import LLAMA_DEFAULT_SEED, AssistantSettings
from gateway.assistant.stream import Finished, ModelInfo, Request, Usage

log = logging.getLogger(__name__)

T = TypeVar("T")
BOS_TEXT: Final = "<bos>"
SLOT_SIMILARITY: Final = 0.5


@dataclass(slots=True)
class Call(Generic[T]):
    """A function to run on the engine thread between steps, its result handed back."""

    fn: Callable[[EngineThread], T]
    future: concurrent.futures.Future[T]


def choose_slot(free: list[Slot], tokens: list[int]) -> Slot:
    """The free slot whose cached tokens share the longest prefix with ``tokens``, if that is
    more than half the prompt (llama-server's ``--slot-prompt-similarity``); else an empty one,
    else the one used longest ago — so a short unrelated chat does not evict a conversation."""
    shared = {slot.seq: common_prefix(slot.tokens, tokens) for slot in free}
    best = max(free, key=lambda slot: shared[slot.seq])
    if shared[best.seq] > SLOT_SIMILARITY * len(tokens):
        return best
    return min(free, key=lambda slot: (bool(slot.tokens), slot.used_at))


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
        self.llm: Any = None
        self.vocab: Any = None
        self._memory: Any = None
        self._n_swa = 0
        self._n_vocab = 0
        self._batch: Any = None
        self._arrays: tuple[Any, Any, Any, Any] = (None, None, None, None)
        self.pieces: Pieces
        self.n_ctx = 0  # per sequence
        self.slots: list[Slot] = []
        self.last_slot: Slot | None = None  # where the latest request ran
        self.waiting: collections.deque[Request] = collections.deque()

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
            self._serve()
        finally:
            self._drain()
            import llama_cpp

            if self._batch is not None:
                llama_cpp.llama_batch_free(self._batch)
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
        parallel = settings.parallel
        import llama_cpp

        try:
            llm = load_llama(
                cpu_repack=settings.cpu_repack,
                n_seq_max=parallel,
                model_path=str(resolved.path),
                n_ctx=n_ctx * parallel,
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
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self._memory = llama_cpp.llama_get_memory(llm.ctx)
        self._n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(llm.ctx))
        self._batch = batch = llama_cpp.llama_batch_init(llm.n_batch, 0, 1)
        for i in range(llm.n_batch):  # one sequence per token, always
            batch.n_seq_id[i] = 1
        self._arrays = (batch.token, batch.pos, batch.seq_id, batch.logits)
        self.pieces = Pieces(self.vocab)
        self.slots = [Slot(seq) for seq in range(parallel)]
        log.info(
            "loaded %s (%s), %d sequence(s) of %d tokens, %d threads, %d GPU layers",
            resolved.name,
            resolved.path,
            parallel,
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
        for run in self._running():  # closing cancels what runs, at this step
            run.interrupted = "cancelled"
            self._finish(run)
        for request in self.waiting:
            request.sink.put(closed)
        self.waiting.clear()
        with contextlib.suppress(queue.Empty):
            while True:
                job = self.jobs.get_nowait()
                if isinstance(job, Call):
                    job.future.set_exception(closed)
                elif job is not None:
                    job.sink.put(closed)

    def interrupt_all(self) -> None:
        """Cancel what runs now (any thread): each request stops at its next step."""
        for slot in self.slots:
            run = slot.run
            if run is not None:
                run.request.cancel.set()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return self.jobs.qsize() + len(self.waiting)

    # -- the job loop --

    def _running(self) -> list[SlotRun]:
        return [slot.run for slot in self.slots if slot.run is not None]

    def _take_jobs(self) -> bool:
        """Take queued jobs (waiting for one when nothing runs); False when told to stop."""
        block = not self._running() and not self.waiting
        while True:
            try:
                job = self.jobs.get(block=block)
            except queue.Empty:
                return True
            block = False
            if job is None:
                return False
            if isinstance(job, Call):
                self._call(job)
            else:
                self.waiting.append(job)

    def _serve(self) -> None:
        while self._take_jobs():
            self._assign()
            if not self._running():
                continue
            try:
                self._step()
            except EngineError as exc:
                self._fail_all(exc)
            except Exception as exc:
                log.exception("generation failed; the context is cleared")
                self._fail_all(EngineError(f"generation failed: {exc}"))

    def _fail_all(self, exc: EngineError) -> None:
        import llama_cpp

        for run in self._running():
            self._end(run, exc)
        llama_cpp.llama_memory_clear(self._memory, True)
        for slot in self.slots:
            slot.tokens = []

    def _call(self, job: Call[Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(self))
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            job.future.set_exception(exc)

    # -- starting a request --

    def tokenize_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            return prompt
        add_bos = not prompt.startswith(BOS_TEXT)
        return list(self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))

    def _interrupted(self, request: Request) -> Literal["cancelled", "timeout"] | None:
        if request.cancel.is_set() or self.stopping.is_set():
            return "cancelled"
        if time.monotonic() >= request.deadline:
            return "timeout"
        return None

    def _assign(self) -> None:
        """Start waiting requests in free slots, in order."""
        while self.waiting:
            free = [slot for slot in self.slots if slot.run is None]
            if not free:
                return
            request = self.waiting.popleft()
            try:
                self._begin(request, free)
            except EngineError as exc:
                request.sink.put(exc)

    def _begin(self, request: Request, free: list[Slot]) -> None:
        if self.stopping.is_set():
            raise EngineClosedError("the engine is closing")
        interrupted = self._interrupted(request)
        if interrupted == "timeout":
            raise EngineTimeoutError(request.timeout_s)
        if interrupted == "cancelled":
            request.sink.put(Finished("cancelled", Usage(0, 0, 0), None, ""))
            return
        tokens = self.tokenize_prompt(request.prompt)
        if not tokens:
            raise PromptError("the prompt is empty: give at least one token")
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(len(tokens), self.n_ctx)
        if request.grammar is not None:
            check_grammar(self.vocab, request.grammar)
        slot = choose_slot(free, tokens)
        reused = self._reuse_prefix(slot, tokens)
        limit = self.n_ctx - len(tokens)
        if request.sampling.max_tokens is not None:
            limit = min(limit, request.sampling.max_tokens)
        chain = sampler_chain(self.vocab, self._n_vocab, request)
        slot.run = SlotRun(request, slot, tokens, reused, limit, chain, self.pieces)
        slot.used_at = time.monotonic()
        self.last_slot = slot

    def _reuse_prefix(self, slot: Slot, tokens: list[int]) -> int:
        """Keep the longest cached prefix of ``tokens`` in ``slot`` (leaving at least one token
        to evaluate, for fresh logits); returns its length."""
        import llama_cpp

        keep = min(common_prefix(slot.tokens, tokens), len(tokens) - 1)
        seq = slot.seq
        if keep > 0 and llama_cpp.llama_memory_seq_rm(self._memory, seq, keep, -1):
            # A sliding-window cache that is not full-size (swa_full=False) only holds the last
            # positions; continuing at `keep` needs the window before it (llama-server checks
            # the same).
            pos_min = llama_cpp.llama_memory_seq_pos_min(self._memory, seq)
            if 0 <= pos_min <= max(0, keep - self._n_swa):
                slot.tokens = slot.tokens[:keep]
                return keep
        llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
        slot.tokens = []
        return 0

    # -- one step --

    def _step(self) -> None:
        """One ``llama_decode`` of the next token of every generating slot and a prompt chunk
        of every evaluating one, then a token sampled for each slot that asked for logits."""
        import llama_cpp

        for run in self._running():
            if (interrupted := self._interrupted(run.request)) is not None:
                run.interrupted = interrupted
                self._finish(run)
        runs = self._running()
        if not runs:
            return
        batch = self._batch
        capacity = self.llm.n_batch
        token_at, pos_at, seq_at, logits_at = self._arrays
        n = 0
        sample_at: list[tuple[SlotRun, int]] = []

        def add(run: SlotRun, token: int, logits: bool) -> None:
            nonlocal n
            slot = run.slot
            token_at[n] = token
            pos_at[n] = len(slot.tokens)
            seq_at[n][0] = slot.seq
            logits_at[n] = logits
            slot.tokens.append(token)
            if logits:
                sample_at.append((run, n))
            n += 1

        for run in runs:  # generating: one token each, first
            if not run.evaluating and run.next_token is not None:
                add(run, run.next_token, True)
                run.next_token = None
        for run in runs:  # evaluating: what room is left, a prompt chunk each in turn
            while run.evaluating and n < capacity:
                run.fed += 1
                add(run, run.prompt[run.fed - 1], not run.evaluating)
        batch.n_tokens = n
        for run in runs:  # the event loop takes the text while llama.cpp computes
            run.request.sink.flush()
        began = time.perf_counter()
        status = llama_cpp.llama_decode(self.llm.ctx, batch)
        decoded = time.perf_counter()
        if status != 0:
            raise EngineError(f"llama_decode failed (status {status}); the context is cleared")
        share = (decoded - began) / len(runs)
        for run in runs:
            run.compute_s += share
        for run, index in sample_at:
            began = time.perf_counter()
            token = int(llama_cpp.llama_sampler_sample(run.chain, self.llm.ctx, index))
            run.compute_s += time.perf_counter() - began
            run.take(token)
            if run.done:
                self._finish(run)

    def _finish(self, run: SlotRun) -> None:
        if run.interrupted == "timeout":
            self._end(run, EngineTimeoutError(run.request.timeout_s, run.usage()))
            return
        self._end(run, None)

    def _end(self, run: SlotRun, error: EngineError | None) -> None:
        """Hand the request its last event, free its slot, keep in the slot's cache exactly the
        tokens whose text was returned."""
        import llama_cpp

        slot = run.slot
        slot.run = None
        llama_cpp.llama_sampler_free(run.chain)
        finished, keep = run.end()
        keep = min(keep, len(slot.tokens))
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1)
        del slot.tokens[keep:]
        if error is not None:
            run.request.sink.put(error)
            return
        run.request.sink.put(finished)
        observer = self.on_finished
        if observer is not None:
            observer(finished)
