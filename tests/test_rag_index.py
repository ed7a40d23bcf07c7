"""The index (gateway.rag.index) with real sqlite-vec and hand-made vectors (no model needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.rag.chunking import Chunk
from gateway.rag.errors import IndexMismatchError, IndexStorageError
from gateway.rag.index import Index, IndexModel, NewDocument, Replaced, index_path

DIMENSION = 16


def unit(rows: NDArray[np.float64]) -> NDArray[np.float32]:
    return np.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True), dtype=np.float32)


def chunks(count: int, page: int | None = None) -> list[Chunk]:
    return [Chunk(i, f"text {i}", page, ("A", "B"), "Doc > A > B", 2) for i in range(count)]


def document(path: str, sha: str = "0" * 64) -> NewDocument:
    return NewDocument(path, sha, "Doc", "markdown", 1.5, 10, "v1/test")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index.open(index_path(tmp_path)) as opened:
        opened.bind_model("test-model", DIMENSION)
        yield opened


def test_the_model_is_recorded_once_and_a_different_one_refused(index: Index) -> None:
    assert index.model() == IndexModel("test-model", DIMENSION)
    index.bind_model("test-model", DIMENSION)  # the same again: fine
    with pytest.raises(IndexMismatchError):
        index.bind_model("other-model", DIMENSION)
    with pytest.raises(IndexMismatchError):
        index.bind_model("test-model", DIMENSION * 2)
    index.check_model("test-model")
    with pytest.raises(IndexMismatchError):
        index.check_model("other-model")


def test_documents_need_a_model_first(tmp_path: Path) -> None:
    with Index.open(tmp_path / "fresh.sqlite3") as fresh, pytest.raises(IndexStorageError):
        fresh.replace_document(document("/a.md"), [], np.empty((0, DIMENSION), np.float32))


def test_vectors_must_match_the_chunks(index: Index) -> None:
    with pytest.raises(ValueError, match="2 chunks need 2×16 vectors, got 3×16"):
        index.replace_document(document("/a.md"), chunks(2), np.ones((3, DIMENSION), np.float32))


def test_exact_ranking_when_the_candidates_cover_the_index(index: Index) -> None:
    rng = np.random.default_rng(7)
    vectors = unit(rng.standard_normal((30, DIMENSION)))
    assert index.replace_document(document("/a.md"), chunks(30, page=4), vectors) == Replaced(
        True, 30, 0
    )
    query = unit(rng.standard_normal(DIMENSION))
    scores = vectors @ query
    expected = [(int(i) + 1, float(scores[i])) for i in np.argsort(-scores)[:5]]
    found = index.nearest(query, 5, 10_000)  # beyond sqlite-vec's k limit: capped at 4096
    assert [chunk_id for chunk_id, _ in found] == [chunk_id for chunk_id, _ in expected]
    assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-6)
    stored = index.chunks([found[0][0]])[found[0][0]]
    assert (stored.document_path, stored.page, stored.headings) == ("/a.md", 4, ("A", "B"))
    assert stored.text == f"text {found[0][0] - 1}"


def test_the_bit_prefilter_finds_a_vector_equal_to_the_query(index: Index) -> None:
    rng = np.random.default_rng(11)
    vectors = unit(rng.standard_normal((500, DIMENSION)))
    index.replace_document(document("/many.md"), chunks(500), vectors)
    for row in (0, 137, 499):
        (best,) = index.nearest(vectors[row], 1, 8)  # 8 of 500 candidates by Hamming distance
        assert best[0] == row + 1
        assert best[1] == pytest.approx(1.0, abs=1e-6)


def test_replacing_a_document_swaps_its_chunks_and_never_reuses_ids(index: Index) -> None:
    rng = np.random.default_rng(3)
    first = unit(rng.standard_normal((4, DIMENSION)))
    index.replace_document(document("/a.md"), chunks(4), first)
    index.replace_document(document("/b.md"), chunks(2), unit(rng.standard_normal((2, DIMENSION))))
    second = unit(rng.standard_normal((3, DIMENSION)))
    outcome = index.replace_document(document("/a.md", "1" * 64), chunks(3), second)
    assert outcome == Replaced(False, 3, 4)
    assert index.counts() == (2, 5)
    record = index.document("/a.md")
    assert record is not None
    assert (record.id, record.sha256) == (1, "1" * 64)
    found = index.nearest(first[0], 10, 100)
    assert sorted(chunk_id for chunk_id, _ in found) == [5, 6, 7, 8, 9]  # 1-4 are gone for good
    assert index.remove_document("/a.md") == 3
    assert index.remove_document("/a.md") == 0
    assert sorted(chunk_id for chunk_id, _ in index.nearest(first[0], 10, 100)) == [5, 6]
    assert [r.path for r in index.documents()] == ["/b.md"]


def test_an_empty_index_finds_nothing(index: Index) -> None:
    assert index.nearest(np.full(DIMENSION, 0.25, np.float32), 6, 48) == []
    assert index.nearest(np.full(DIMENSION, 0.25, np.float32), 0, 48) == []
    assert index.chunks([]) == {}
