"""Sequences of the engine's llama.cpp context: each :class:`Slot` is one sequence id with the
tokens its KV cells hold (its own prefix cache), and a request runs in a slot as a
:class:`SlotRun` — its prompt evaluated a batch at a time, then one token per step, sampled with
its own sampler chain, until an end-of-generation token, a stop string, ``max_tokens``, the
context, a cancellation or its deadline. The engine thread (:mod:`.llama_thread`) puts the tokens
of every running slot in one ``llama_batch`` per step, so two sequences decode together.

Sampling follows llama-cpp-python's chain (``Llama._init_sampler``): penalties, the grammar, then
greedy (temperature 0) or top-k, top-p, min-p, temperature and a seeded draw.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from gateway.assistant.errors import GrammarError
from gateway.assistant.stops import StopMatcher
from gateway.assistant.stream import Finished, FinishReason, Request, TextPiece, Usage

GRAMMAR_ROOT: Final = b"root"
PENALTY_LAST_N: Final = 64  # llama-cpp-python's last_n_tokens_size
PIECE_BUFFER: Final = 64  # bytes; longer pieces (Gemma 3 has pieces > 32 bytes) grow it


def token_piece(vocab: Any, token: int, buffer: ctypes.Array[ctypes.c_char]) -> bytes:
    """The bytes of one token (control tokens rendered), growing past llama-cpp-python's fixed
    32-byte buffer: a negative result is the size needed (llama.h llama_token_to_piece)."""
    import llama_cpp

    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    return buffer.raw[:size]


class Pieces:
    """Each token's bytes and whether it ends generation, asked of llama.cpp once per token (the
    vocabulary does not change): the per-token path makes no foreign call for them."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._buffer = ctypes.create_string_buffer(PIECE_BUFFER)
        self._known: dict[int, tuple[bytes, bool]] = {}

    def get(self, token: int) -> tuple[bytes, bool]:
        known = self._known.get(token)
        if known is None:
            import llama_cpp

            eog = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
            known = (token_piece(self._vocab, token, self._buffer), eog)
            self._known[token] = known
        return known


def common_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    size = min(len(cached), len(tokens))
    if size == 0:
        return 0
    equal = np.asarray(cached[:size], dtype=np.int64) == np.asarray(tokens[:size], dtype=np.int64)
    return size if bool(equal.all()) else int(np.argmin(equal))


def check_grammar(vocab: Any, text: str) -> None:
    """:class:`GrammarError` unless llama.cpp parses ``text`` (GBNF with a ``root`` rule)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), GRAMMAR_ROOT)
    if not sampler:
        raise GrammarError(
            "grammar: llama.cpp cannot parse it; expected GBNF with a 'root' rule "
            "(its parser logged the position on stderr)"
        )
    llama_cpp.llama_sampler_free(sampler)


def sampler_chain(vocab: Any, n_vocab: int, request: Request) -> Any:
    """The request's sampler chain (freed with ``llama_sampler_free``)."""
    import llama_cpp

    sampling = request.sampling
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    add(
        llama_cpp.llama_sampler_init_penalties(
            n_vocab,
            PENALTY_LAST_N,
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        )
    )
    if request.grammar is not None:
        grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, request.grammar.encode("utf-8"), GRAMMAR_ROOT
        )
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise GrammarError("grammar: llama.cpp cannot parse it")
        add(grammar)
    if sampling.temperature == 0:
        add(llama_cpp.llama_sampler_init_greedy())
    else:
        add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        add(llama_cpp.llama_sampler_init_typical(1.0, 1))
        add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
        add(llama_cpp.llama_sampler_init_dist(sampling.seed))
    return chain


@dataclass(slots=True)
class Slot:
    """One sequence of the context and the tokens its KV cells hold."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    used_at: float = 0.0
    run: SlotRun | None = None


class SlotRun:
    """One request running in a slot: prompt evaluation, then token by token."""

    def __init__(
        self,
        request: Request,
        slot: Slot,
        tokens: list[int],
        reused: int,
        limit: int,
        chain: Any,
        pieces: Pieces,
    ) -> None:
        self.request = request
        self.slot = slot
        self.prompt = tokens
        self.reused = reused
        self.fed = reused  # prompt tokens in the KV cache so far
        self.limit = limit  # completion tokens allowed
        self.chain = chain
        self._pieces = pieces
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.matcher = StopMatcher(request.stop)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._returned: list[str] = []
        self._marks: list[tuple[int, bool]] = []  # per completion token: (chars, decoder clean)
        self._decoded = 0
        self.completion = 0
        self.next_token: int | None = None  # sampled, to be fed in the next batch
        self.compute_s = 0.0  # in llama.cpp: its share of each batch decoded, its sampling
        self.finish: FinishReason | None = None
        self.interrupted: Literal["cancelled", "timeout"] | None = None

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    @property
    def evaluating(self) -> bool:
        """Still evaluating its prompt (the last prompt token gives the first logits)."""
        return self.fed < self.n_prompt

    @property
    def done(self) -> bool:
        return self.finish is not None or self.interrupted is not None

    def _release(self, text: str) -> None:
        if text:
            self._returned.append(text)
            self.request.sink.put(TextPiece(text))

    def take(self, token: int) -> None:
        """A sampled token: the end, or text (cut at a stop string), or the next to feed."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        piece, eog = self._pieces.get(token)
        if eog:
            self.finish = "stop"
            return
        self.completion += 1
        text = self._decoder.decode(piece)
        self._decoded += len(text)
        self._marks.append((self._decoded, self._decoder.getstate()[0] == b""))
        self._release(self.matcher.feed(text))
        if self.matcher.matched is not None:
            self.finish = "stop"
        elif self.completion >= self.limit:
            self.finish = "length"
        else:
            self.next_token = token

    def end(self) -> tuple[Finished, int]:
        """The final event, and how many tokens of the slot's KV cache to keep: the prompt and
        exactly the completion tokens whose text was returned."""
        if self.finish is not None and self.matcher.matched is None:
            self._release(self.matcher.feed(self._decoder.decode(b"", final=True)))
            self._release(self.matcher.flush())
            if self.matcher.matched is not None:
                self.finish = "stop"
        ended = time.monotonic()
        returned_chars = sum(len(t) for t in self._returned)
        kept = 0
        for count, (chars, clean) in enumerate(self._marks, start=1):
            if chars > returned_chars:
                break
            if clean:
                kept = count
        first = self.first_token_at if self.first_token_at is not None else ended
        finished = Finished(
            finish_reason=self.finish if self.finish is not None else "cancelled",
            usage=self.usage(),
            stop=self.matcher.matched,
            text="".join(self._returned),
            queued_s=self.started - self.request.enqueued,
            prompt_s=first - self.started,
            decode_s=ended - first,
            compute_s=self.compute_s,
        )
        return finished, self.n_prompt + kept

    def usage(self) -> Usage:
        return Usage(self.n_prompt, self.n_prompt - self.reused, self.completion)
