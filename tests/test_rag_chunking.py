"""Chunking (gateway.rag.chunking), pure: windows, boundaries, overlap, context lines, hashing.

A regex tokenizer (words and single punctuation marks, as BERT's basic tokenizer splits them)
stands in for the model's; tests/test_rag.py chunks with the real one."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rag.chunking import (
    Chunk,
    chunk_document,
    chunker_signature,
    content_hash,
    context_line,
    windows,
)
from gateway.rag.extract import DocumentKind, Extracted, Section
from gateway.rag.settings import RagSettings

_TOKEN = re.compile(r"\w+|[^\w\s]")


def spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _TOKEN.finditer(text)]


def pieces(text: str, budget: int, overlap: int) -> list[str]:
    token_spans = spans(text)
    return [
        text[token_spans[start][0] : token_spans[end - 1][1]]
        for start, end in windows(text, token_spans, budget, overlap)
    ]


def test_sha256_of_the_fips_180_2_example() -> None:
    # FIPS 180-2 Appendix B.1: SHA-256("abc").
    assert content_hash(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_the_signature_names_everything_that_shapes_the_chunks() -> None:
    assert chunker_signature("all-MiniLM-L6-v2", 256, 48) == "v1/256/48/all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("title", "headings", "line"),
    [
        ("Fever in adults", ("Fever in adults", "Thresholds"), "Fever in adults > Thresholds"),
        (
            "Oxygen targets",
            ("Oxygen therapy", "Targets"),
            "Oxygen targets > Oxygen therapy > Targets",
        ),
        ("Sepsis screening", (), "Sepsis screening"),
    ],
)
def test_context_line_names_the_title_once(
    title: str, headings: tuple[str, ...], line: str
) -> None:
    assert context_line(title, headings) == line


def test_a_short_text_is_one_window() -> None:
    assert pieces("Fever is 38.0 °C or more.", 50, 10) == ["Fever is 38.0 °C or more."]


def test_windows_end_at_a_sentence_rather_than_mid_sentence() -> None:
    # 9 tokens: One two three . Four five six seven .
    assert pieces("One two three. Four five six seven.", 6, 0) == [
        "One two three.",
        "Four five six seven.",
    ]


def test_a_paragraph_break_beats_a_later_sentence_end() -> None:
    text = "Alpha beta gamma delta.\n\nEpsilon zeta. Eta theta iota kappa lambda mu."
    # 15 tokens; a 10-token window may end at token 5 (paragraph) or 8 (sentence).
    assert pieces(text, 10, 0)[0] == "Alpha beta gamma delta."


def test_numbers_are_never_cut() -> None:
    # Without spaces 38.0 is three tokens; a cut inside it would be a "no boundary" cut.
    text = "aa bb cc 38.0 dd"
    assert pieces(text, 5, 0) == ["aa bb cc", "38.0 dd"]


def test_consecutive_windows_overlap_at_a_word_boundary() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    assert pieces(text, 10, 3) == [
        "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9",
        "w7 w8 w9 w10 w11 w12 w13 w14 w15 w16",
        "w14 w15 w16 w17 w18 w19 w20 w21 w22 w23",
        "w21 w22 w23 w24 w25 w26 w27 w28 w29",
    ]


def test_a_budget_below_one_token_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="budget must be at least 1"):
        windows("a", [(0, 1)], 0, 0)


WORDS = st.sampled_from(
    ["fever", "38.0", "°C", "SpO2", "94–98", "%", "mmHg", "heart", "rate", "(COPD)", "e.g.", "-"]
)
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", ". ", "; ", ""])


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    parts=st.lists(st.tuples(WORDS, SEPARATORS), max_size=120),
    budget=st.integers(1, 40),
    overlap=st.integers(0, 30),
)
def test_windows_cover_every_token_within_budget_and_overlap(
    parts: list[tuple[str, str]], budget: int, overlap: int
) -> None:
    text = "".join(word + separator for word, separator in parts)
    token_spans = spans(text)
    out = windows(text, token_spans, budget, overlap)
    if not token_spans:
        assert out == []
        return
    assert out[0][0] == 0
    assert out[-1][1] == len(token_spans)
    for start, end in out:
        assert 0 < end - start <= budget
    for (start, end), (next_start, next_end) in itertools.pairwise(out):
        assert start < next_start <= end < next_end  # no gap, always progress
        assert end - next_start <= min(overlap, budget // 2)


def test_chunks_carry_place_context_and_exact_slices() -> None:
    body = " ".join(f"word{i}." for i in range(12))  # 24 tokens
    document = Extracted(
        DocumentKind.MARKDOWN,
        "Guide",
        (
            Section("Short intro.", None, ("Guide",)),
            Section(body, None, ("Guide", "Details")),
        ),
    )
    chunks = chunk_document(document, spans, chunk_tokens=16, overlap=2)
    # "Guide > Details" is 4 tokens (> counts), so 12 remain for text: 6 sentences of 2 tokens.
    assert chunks == [
        Chunk(0, "Short intro.", None, ("Guide",), "Guide", 3),
        Chunk(
            1,
            "word0. word1. word2. word3. word4. word5.",
            None,
            ("Guide", "Details"),
            "Guide > Details",
            12,
        ),
        Chunk(
            2,
            "word5. word6. word7. word8. word9. word10.",
            None,
            ("Guide", "Details"),
            "Guide > Details",
            12,
        ),
        Chunk(3, "word10. word11.", None, ("Guide", "Details"), "Guide > Details", 4),
    ]
    assert chunks[1].embed_text == "Guide > Details\nword0. word1. word2. word3. word4. word5."


def test_a_long_heading_path_is_cut_to_a_quarter_of_the_chunk() -> None:
    heading = " ".join(f"h{i}" for i in range(40))
    document = Extracted(DocumentKind.PDF, heading, (Section("text here", 3),))
    (chunk,) = chunk_document(document, spans, chunk_tokens=32, overlap=0)
    assert chunk == Chunk(0, "text here", 3, (), "h0 h1 h2 h3 h4 h5 h6 h7", 2)


def test_settings_refuse_an_overlap_of_half_a_chunk() -> None:
    with pytest.raises(ValueError, match=r"chunk_overlap \(64\) must be less than half"):
        RagSettings(chunk_tokens=128, chunk_overlap=64)
