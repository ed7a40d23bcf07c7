"""Token-aware chunking with overlap. Pure: the tokenizer comes in as a function.

A chunk never crosses a section (so its page or heading path is exact) and never holds more tokens
than the embedder reads: ``chunk_tokens`` counts the context line (document title and heading
path, which is embedded with the chunk so that "Thresholds" under "Fever in adults" is found by a
question about fever) plus the chunk's own text. Windows end at the best boundary in their second
half (paragraph, then sentence, then line, then word; never inside a word or a number such as
``38.0``); the next window starts up to ``overlap`` tokens earlier, preferably at a sentence, else
at a word boundary. The stored text is an exact slice of the section, so it can be quoted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.rag.extract import Extracted

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""Character spans ``(start, end)`` of a text's tokens in order, special tokens excluded."""

CHUNKER_VERSION: Final = 1  # bump when chunk boundaries change: indexed files are re-chunked
CONTEXT_SEPARATOR: Final = " > "
CONTEXT_SHARE: Final = 4  # the context line gets at most 1/4 of a chunk's tokens
_SENTENCE_ENDS: Final = frozenset(".!?…")  # not ":" or ";": they join a label to its value

# Boundary quality between two tokens (higher is a better place to cut).
_NONE, _WORD, _LINE, _SENTENCE, _PARAGRAPH = range(5)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One embedded unit: ``text`` is a verbatim slice of its section."""

    ordinal: int
    text: str
    page: int | None
    headings: tuple[str, ...]
    context: str
    tokens: int

    @property
    def embed_text(self) -> str:
        """What is embedded: the context line, then the text."""
        return f"{self.context}\n{self.text}" if self.context else self.text


def content_hash(data: bytes) -> str:
    """SHA-256 of a file's bytes, lower-case hex (the unchanged-file test)."""
    return hashlib.sha256(data).hexdigest()


def chunker_signature(model: str, chunk_tokens: int, overlap: int) -> str:
    """Everything that decides a file's chunks and vectors besides its bytes."""
    return f"v{CHUNKER_VERSION}/{chunk_tokens}/{overlap}/{model}"


def context_line(title: str, headings: Sequence[str]) -> str:
    """``Title > Heading > Subheading`` (the title once, also when it is the first heading)."""
    path = list(headings)
    if not path or path[0] != title:
        path.insert(0, title)
    return CONTEXT_SEPARATOR.join(part for part in path if part)


def _boundary(text: str, spans: Sequence[tuple[int, int]], index: int) -> int:
    """How good a cut between token ``index - 1`` and token ``index`` is."""
    previous_end = spans[index - 1][1]
    gap = text[previous_end : spans[index][0]]
    if not gap:
        return _NONE
    if gap.count("\n") >= 2:
        return _PARAGRAPH
    if previous_end > 0 and text[previous_end - 1] in _SENTENCE_ENDS and not gap.strip():
        return _SENTENCE
    if "\n" in gap:
        return _LINE
    return _WORD if not gap.strip() else _NONE


def _next_start(
    text: str, spans: Sequence[tuple[int, int]], start: int, end: int, overlap: int
) -> int:
    """Where the window after ``[start, end)`` begins: the best boundary in the first half of the
    overlap (earliest on ties, so the overlap stays long), else the first word boundary after it,
    else ``end`` (no overlap rather than half a word)."""
    lowest = max(end - overlap, start + 1)
    if lowest >= end:
        return end
    preferred_until = max(lowest, end - overlap // 2)
    best, best_score = end, _NONE
    for candidate in range(lowest, preferred_until + 1):
        score = _boundary(text, spans, candidate)
        if score > best_score:
            best, best_score = candidate, score
    if best_score != _NONE:
        return best
    for candidate in range(preferred_until + 1, end):
        if _boundary(text, spans, candidate) != _NONE:
            return candidate
    return end


def windows(
    text: str, spans: Sequence[tuple[int, int]], budget: int, overlap: int
) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` over ``spans`` (of ``text``): each at most ``budget``
    tokens, consecutive ones sharing at most ``overlap`` tokens, together covering every token."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1 token, not {budget}")
    overlap = max(0, min(overlap, budget // 2))
    count = len(spans)
    out: list[tuple[int, int]] = []
    start = previous_end = 0
    while start < count:
        end = min(start + budget, count)
        if end < count:
            # Cut in the window's second half, and past the previous window's end.
            lowest = max(start + max(1, budget // 2), previous_end + 1)
            best, best_score = end, _boundary(text, spans, end)
            for cut in range(end - 1, lowest - 1, -1):
                score = _boundary(text, spans, cut)
                if score > best_score:
                    best, best_score = cut, score
            end = best
        out.append((start, end))
        if end >= count:
            break
        previous_end = end
        start = _next_start(text, spans, start, end, overlap)
    return out


def _truncate(text: str, spans: Sequence[tuple[int, int]], limit: int) -> str:
    if len(spans) <= limit:
        return text
    return text[: spans[limit - 1][1]] if limit > 0 else ""


def chunk_document(
    document: Extracted, token_spans: TokenSpans, *, chunk_tokens: int, overlap: int
) -> list[Chunk]:
    """Chunks of every section of ``document``, numbered from 0 in reading order."""
    chunks: list[Chunk] = []
    for section in document.sections:
        context = context_line(document.title, section.headings)
        context_spans = token_spans(context)
        context = _truncate(context, context_spans, chunk_tokens // CONTEXT_SHARE)
        budget = chunk_tokens - min(len(context_spans), chunk_tokens // CONTEXT_SHARE)
        spans = token_spans(section.text)
        for start, end in windows(section.text, spans, budget, overlap):
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=section.text[spans[start][0] : spans[end - 1][1]],
                    page=section.page,
                    headings=section.headings,
                    context=context,
                    tokens=end - start,
                )
            )
    return chunks
