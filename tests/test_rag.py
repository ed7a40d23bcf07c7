"""Retrieval end to end with the real parts: the embedded all-MiniLM-L6-v2 through
sentence-transformers, sqlite-vec through sqlean, the corpus of tests/data/rag/ (written for these
tests) plus a generated PDF (tests/documents.py). The model loads once per process."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer
from numpy.typing import NDArray
from typer.testing import CliRunner

from gateway.rag import (
    Embedder,
    EmptyIndexError,
    IndexMismatchError,
    IndexStorageError,
    Passage,
    RagError,
    RagSettings,
    Retriever,
    SourceError,
    context_block,
    index_path,
)
from gateway.rag.chunking import chunk_document
from gateway.rag.commands import register
from gateway.rag.extract import DocumentKind, Extracted, Section
from gateway.rag.index import Index, connect
from gateway.rag.ingest import ingest
from gateway.rag.retriever import DocumentRef
from tests.documents import sepsis_pdf

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parent / "data" / "rag"
NONSENSE = "purple elephant juggling saxophones on the far side of the moon"
THRESHOLDS_TEXT = (
    "A body temperature of 38.0 °C or higher, measured orally or in the ear, is a fever. A "
    "single\nreading of 38.3 °C, or 38.0 °C sustained for one hour, meets the threshold for a "
    "fever work-up in\nhospitalised adults. A temperature of 41.0 °C or above is hyperpyrexia "
    "and needs immediate medical\nreview.\n\nArmpit (axillary) readings run about 0.5 °C below "
    "core temperature. Do not add a correction:\nrepeat the measurement at a core site instead."
)
LACTATE_TEXT = (
    "Lactate\nMeasure serum lactate in every patient who screens positive. A lactate above\n"
    "2 mmol/L shows tissue hypoperfusion; a lactate of 4 mmol/L or more calls for an\n"
    "intravenous fluid bolus of 30 mL/kg and senior review within one hour."
)


def copy_corpus(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for source in CORPUS.iterdir():
        shutil.copy(source, target / source.name)
    (target / "sepsis.pdf").write_bytes(sepsis_pdf())
    return target


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    model = Embedder()
    model.load()
    return model


@dataclass(frozen=True)
class Indexed:
    corpus: Path
    data_dir: Path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Indexed:
    root = tmp_path_factory.mktemp("rag")
    corpus = copy_corpus(root / "corpus")
    ingest([corpus], root / "data", embedder=embedder)
    return Indexed(corpus.resolve(), root / "data")


@pytest.fixture(scope="module")
def retriever(indexed: Indexed) -> Iterator[Retriever]:
    with Retriever(indexed.data_dir) as opened:
        yield opened


def where(passage: Passage) -> tuple[str, int | None, tuple[str, ...]]:
    return Path(passage.document.path).name, passage.page, passage.section


# -- the embedder ----------------------------------------------------------------------------------


def test_embeddings_are_unit_rows_of_384_float32(embedder: Embedder) -> None:
    vectors = embedder.embed(["fever of 38.5 °C", "SpO2 of 91 %"])
    assert (vectors.dtype, vectors.shape) == (np.dtype(np.float32), (2, 384))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.max_tokens == 254  # max_seq_length 256 minus [CLS] and [SEP]


def test_real_tokenizer_chunks_fit_the_model(embedder: Embedder) -> None:
    sentences = [
        f"Observation {i}: heart rate {60 + i} /min, SpO2 {90 + i % 9} %, 38.{i % 10} °C."
        for i in range(120)
    ]
    document = Extracted(
        DocumentKind.TEXT, "Long ward log", (Section(" ".join(sentences), None, ("Log",)),)
    )
    chunks = chunk_document(document, embedder.token_spans, chunk_tokens=254, overlap=48)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(embedder.token_spans(chunk.embed_text)) <= embedder.max_tokens
        assert chunk.text.startswith("Observation")  # overlap starts at a sentence here
        assert chunk.text.endswith("°C.")
    joined = " ".join(chunk.text for chunk in chunks)
    assert all(sentence in joined for sentence in sentences)


# -- ingest ----------------------------------------------------------------------------------------


def test_first_ingest_adds_every_document(tmp_path: Path, embedder: Embedder) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    summary = ingest([corpus], tmp_path / "data", embedder=embedder)
    assert summary.as_dict() | {"seconds": 0} == {
        "index": str(index_path(tmp_path / "data")),
        "model": "all-MiniLM-L6-v2",
        "files": {"added": 4, "updated": 0, "skipped": 0, "removed": 0, "failed": 0},
        "chunks": {"added": 13, "removed": 0, "total": 13},
        "documents": 4,
        "failures": [],
        "seconds": 0,
    }
    with Index.open(index_path(tmp_path / "data")) as index:
        records = index.documents()
    assert [(Path(r.path).name, r.title, r.kind) for r in records] == [
        ("blood-pressure.txt", "Blood pressure on the ward", "text"),
        ("fever.md", "Fever in adults", "markdown"),
        ("oxygen.html", "Oxygen saturation targets", "html"),
        ("sepsis.pdf", "Sepsis screening", "pdf"),
    ]


class Untouchable(Embedder):
    """An embedder that fails the test if ingest asks it for anything."""

    def load(self) -> None:
        raise AssertionError("the model was loaded")

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        raise AssertionError("a file was chunked")

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        raise AssertionError("a file was embedded")


def test_unchanged_files_are_skipped_without_the_model(indexed: Indexed) -> None:
    summary = ingest([indexed.corpus], indexed.data_dir, embedder=Untouchable())
    assert summary.as_dict()["files"] == {
        "added": 0, "updated": 0, "skipped": 4, "removed": 0, "failed": 0,
    }  # fmt: skip
    assert (summary.documents, summary.chunks) == (4, 13)


def test_a_changed_file_has_its_chunks_replaced(tmp_path: Path, embedder: Embedder) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    ingest([corpus], data, embedder=embedder)
    fever = corpus / "fever.md"
    old = "Paracetamol 1 g by mouth every six hours"
    fever.write_text(
        fever.read_text().replace(old, "Ibuprofen 400 mg by mouth every eight hours with food")
    )
    with Index.open(index_path(data)) as index:
        before = index.document(str(fever.resolve()))
    summary = ingest([corpus], data, embedder=embedder)
    assert summary.as_dict()["files"] == {
        "added": 0, "updated": 1, "skipped": 3, "removed": 0, "failed": 0,
    }  # fmt: skip
    assert summary.as_dict()["chunks"] == {"added": 5, "removed": 5, "total": 13}
    with Index.open(index_path(data)) as index:
        after = index.document(str(fever.resolve()))
    assert before is not None
    assert after is not None
    assert (after.id, after.title) == (before.id, before.title)
    assert after.sha256 != before.sha256
    with Retriever(data) as retriever:
        passages = retriever.search_sync("which antipyretic and how often", threshold=-1.0)
    texts = " ".join(passage.text for passage in passages)
    assert old not in texts
    assert "Ibuprofen 400 mg" in passages[0].text
    assert where(passages[0]) == ("fever.md", None, ("Fever in adults", "Antipyretics"))


def test_other_chunk_settings_rechunk_unchanged_files(tmp_path: Path, embedder: Embedder) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    ingest([corpus / "fever.md"], tmp_path / "data", embedder=embedder)
    smaller = RagSettings(chunk_tokens=48, chunk_overlap=8)
    summary = ingest([corpus / "fever.md"], tmp_path / "data", smaller, embedder=embedder)
    assert (summary.updated, summary.skipped) == (1, 0)
    assert summary.chunks_removed == 5
    assert summary.chunks > 5


def test_prune_removes_documents_whose_file_is_gone(tmp_path: Path, embedder: Embedder) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    ingest([corpus], data, embedder=embedder)
    (corpus / "sepsis.pdf").unlink()
    kept = ingest([corpus], data, embedder=embedder)
    assert (kept.removed, kept.documents) == (0, 4)  # without --prune nothing is removed
    pruned = ingest([], data, remove_missing=True, embedder=Untouchable())
    assert pruned.as_dict()["files"] == {
        "added": 0, "updated": 0, "skipped": 0, "removed": 1, "failed": 0,
    }  # fmt: skip
    assert (pruned.chunks_removed, pruned.documents, pruned.chunks) == (3, 3, 10)
    with Retriever(data) as retriever:
        passages = retriever.search_sync("serum lactate above 2 mmol/L", threshold=-1.0)
    assert all(not passage.document.path.endswith("sepsis.pdf") for passage in passages)


def test_a_corrupt_file_is_reported_and_the_others_are_ingested(
    tmp_path: Path, embedder: Embedder
) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    (corpus / "broken.pdf").write_bytes(sepsis_pdf()[:200])
    (corpus / "image.png").write_bytes(b"\x89PNG")  # not a document kind: ignored in a directory
    (corpus / ".hidden.md").write_text("# Hidden\n\nnot ingested")
    summary = ingest([corpus], tmp_path / "data", embedder=embedder)
    assert summary.added == 4
    assert len(summary.failures) == 1
    path, problem = summary.failures[0]
    assert Path(path).name == "broken.pdf"
    assert problem.startswith("not a readable PDF")


def test_missing_paths_and_unsupported_files_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(SourceError) as missing:
        ingest([tmp_path / "nope.md"], tmp_path / "data", embedder=Untouchable())
    assert str(missing.value) == f"{tmp_path / 'nope.md'}: no such file or directory"
    document = tmp_path / "letter.docx"
    document.write_bytes(b"PK")
    with pytest.raises(SourceError) as unsupported:
        ingest([document], tmp_path / "data", embedder=Untouchable())
    assert str(unsupported.value) == (
        f"{document}: unsupported file type '.docx'; supported: .htm, .html, .markdown, .md, "
        ".pdf, .text, .txt, .xhtml"
    )
    assert not index_path(tmp_path / "data").exists()


def test_an_index_of_another_model_is_refused(indexed: Indexed) -> None:
    other = RagSettings(model="some/other-model")
    with pytest.raises(IndexMismatchError) as caught:
        ingest([indexed.corpus], indexed.data_dir, other, embedder=Embedder("some/other-model"))
    assert (caught.value.indexed, caught.value.configured) == (
        "all-MiniLM-L6-v2",
        "some/other-model",
    )


def test_a_file_that_is_not_an_index_is_reported(tmp_path: Path) -> None:
    index_path(tmp_path).write_bytes(b"this is not a SQLite database, it is a note" * 100)
    with Retriever(tmp_path) as retriever, pytest.raises(IndexStorageError) as caught:
        retriever.search_sync("fever")
    assert str(caught.value) == (
        f"{index_path(tmp_path)}: index database error: file is not a database"
    )


def test_an_index_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    Index.open(index_path(tmp_path)).close()
    conn = connect(index_path(tmp_path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(IndexStorageError) as caught:
        ingest([CORPUS / "fever.md"], tmp_path, embedder=Untouchable())
    assert str(caught.value) == (
        f"{index_path(tmp_path)}: index schema version 99 is newer than this gateway knows "
        "(up to 1); upgrade the gateway or use another --data-dir"
    )


# -- search ----------------------------------------------------------------------------------------


def test_a_fever_question_finds_the_thresholds_section(
    retriever: Retriever, indexed: Indexed
) -> None:
    passages = retriever.search_sync("What temperature counts as a fever in adults?")
    best = passages[0]
    assert best == Passage(
        chunk_id=best.chunk_id,
        document=DocumentRef(str(indexed.corpus / "fever.md"), "Fever in adults"),
        page=None,
        section=("Fever in adults", "Thresholds"),
        text=THRESHOLDS_TEXT,
        score=best.score,
    )
    assert best.citation == "Fever in adults, § Fever in adults > Thresholds"
    assert best.score > 0.6
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert all(p.score >= 0.35 for p in passages)


def test_pdf_passages_cite_their_page(retriever: Retriever, indexed: Indexed) -> None:
    best = retriever.search_sync("When is serum lactate too high?", k=1)[0]
    assert best == Passage(
        best.chunk_id,
        DocumentRef(str(indexed.corpus / "sepsis.pdf"), "Sepsis screening"),
        2,
        (),
        LACTATE_TEXT,
        best.score,
    )
    assert best.citation == "Sepsis screening, p. 2"


def test_context_block_numbers_passages_with_their_citations() -> None:
    fever = DocumentRef("/d/fever.md", "Fever in adults")
    sepsis = DocumentRef("/d/sepsis.pdf", "Sepsis screening")
    passages = [
        Passage(3, fever, None, ("Fever in adults", "Thresholds"), "38.0 °C is a fever.", 0.7),
        Passage(9, sepsis, 2, (), "Lactate above 2.", 0.5),
    ]
    assert context_block(passages) == (
        "[1] Fever in adults, § Fever in adults > Thresholds\n38.0 °C is a fever.\n\n"
        "[2] Sepsis screening, p. 2\nLactate above 2."
    )
    assert context_block([]) == ""


def test_html_passages_cite_their_section(retriever: Retriever) -> None:
    best = retriever.search_sync("oxygen saturation target for a patient with COPD", k=1)[0]
    assert where(best) == ("oxygen.html", None, ("Oxygen therapy", "Target ranges"))
    assert "88–92 %" in best.text


def test_plain_text_is_found(retriever: Retriever) -> None:
    best = retriever.search_sync("what size of blood pressure cuff", k=1)[0]
    assert where(best) == ("blood-pressure.txt", None, ())


def test_the_threshold_drops_unrelated_passages(retriever: Retriever) -> None:
    assert retriever.search_sync(NONSENSE) == []
    assert retriever.search_sync("how do I reset the wifi router") == []
    everything = retriever.search_sync(NONSENSE, k=6, threshold=-1.0)
    assert len(everything) == 6
    assert max(p.score for p in everything) < 0.35


def test_k_bounds_the_number_of_passages(retriever: Retriever) -> None:
    assert len(retriever.search_sync("fever", k=2, threshold=-1.0)) == 2
    assert len(retriever.search_sync("fever", k=50, threshold=-1.0)) == 13


def test_an_empty_query_is_refused(retriever: Retriever) -> None:
    with pytest.raises(RagError, match="the search query is empty"):
        retriever.search_sync("   ")


def test_search_without_an_index_says_to_ingest_and_creates_nothing(tmp_path: Path) -> None:
    with Retriever(tmp_path) as retriever, pytest.raises(EmptyIndexError) as caught:
        retriever.search_sync("fever")
    assert str(caught.value) == (
        f"{index_path(tmp_path)}: no documents are indexed; run `bedside ingest PATH...` with "
        "the same --data-dir first"
    )
    assert not index_path(tmp_path).exists()


async def test_async_search_leaves_the_event_loop_free(indexed: Indexed) -> None:
    ticks = 0
    searching = True

    async def ticker() -> None:
        nonlocal ticks
        while searching:
            ticks += 1
            await asyncio.sleep(0)

    async with Retriever(indexed.data_dir) as retriever:
        await retriever.warm_up()
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = ticks
        first, second = await asyncio.gather(
            retriever.search("fever threshold"), retriever.search("lactate", k=2)
        )
        searching = False
        await task
        assert ticks - started >= 2  # the loop kept running other tasks during the search
        assert first == retriever.search_sync("fever threshold")
        assert second == retriever.search_sync("lactate", k=2)
        vectors = await retriever.embed(["fever threshold"])
    assert vectors.shape == (1, 384)


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_ingest_prints_a_json_summary(tmp_path: Path, cli: typer.Typer) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["ingest", str(corpus), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"] == {
        "added": 4, "updated": 0, "skipped": 0, "removed": 0, "failed": 0,
    }  # fmt: skip
    assert summary["chunks"] == {"added": 13, "removed": 0, "total": 13}
    again = CliRunner().invoke(
        cli, ["ingest", str(corpus / "fever.md"), "--data-dir", str(data), "--prune"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["files"]["skipped"] == 1


def test_cli_search_prints_passages_as_json(indexed: Indexed, cli: typer.Typer) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "search",
            "When is serum lactate too high?",
            "-k",
            "1",
            "--data-dir",
            str(indexed.data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    (passage,) = out.pop("passages")
    assert out == {
        "query": "When is serum lactate too high?",
        "k": 1,
        "threshold": 0.35,
        "index": str(index_path(indexed.data_dir)),
    }
    assert passage | {"chunk_id": 0, "score": 0} == {
        "chunk_id": 0,
        "score": 0,
        "document": {"path": str(indexed.corpus / "sepsis.pdf"), "title": "Sepsis screening"},
        "page": 2,
        "section": [],
        "citation": "Sepsis screening, p. 2",
        "text": LACTATE_TEXT,
    }
    assert 0.35 <= passage["score"] <= 1


def test_cli_search_threshold_option(indexed: Indexed, cli: typer.Typer) -> None:
    result = CliRunner().invoke(
        cli, ["search", NONSENSE, "--threshold", "-1", "--data-dir", str(indexed.data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["passages"]) == 6


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["ingest", str(d / "missing.md"), "--data-dir", str(d / "data")],
         "error: {d}/missing.md: no such file or directory"),
        (lambda d: ["ingest", "--data-dir", str(d / "data")],
         "error: give at least one PATH (a file or a directory), or --prune"),
        (lambda d: ["search", "fever", "--data-dir", str(d / "data")],
         ("error: {d}/data/rag.sqlite3: no documents are indexed; run `bedside ingest PATH...` "
          "with the same --data-dir first")),
        (lambda d: ["ingest", str(d), "--chunk-tokens", "64", "--chunk-overlap", "40",
                    "--data-dir", str(d / "data")],
         ("error: settings: Value error, chunk_overlap (40) must be less than half of "
          "chunk_tokens (64)")),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_and_exit_2(
    tmp_path: Path, cli: typer.Typer, make_args: Callable[[Path], list[str]], message: str
) -> None:
    args = make_args(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == message.format(d=tmp_path)
    assert result.stdout == ""


def test_cli_reports_a_model_that_cannot_load_in_one_line(tmp_path: Path, cli: typer.Typer) -> None:
    missing = tmp_path / "no-model"
    result = CliRunner().invoke(
        cli,
        ["ingest", str(CORPUS / "fever.md"), "--model", str(missing), "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: embedding model '{missing}' cannot be loaded (FileNotFoundError: Path {missing} "
        "not found); give a local sentence-transformers directory or a model already in the "
        "Hugging Face cache (nothing is downloaded)"
    )


def test_cli_reports_a_corrupt_pdf_and_exits_2(
    tmp_path: Path, cli: typer.Typer, embedder: Embedder
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    shutil.copy(CORPUS / "fever.md", corpus / "fever.md")
    result = CliRunner().invoke(cli, ["ingest", str(corpus), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    summary = json.loads(result.stdout)
    assert summary["files"]["added"] == 1
    assert [Path(f["path"]).name for f in summary["failures"]] == ["broken.pdf"]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {(corpus / 'broken.pdf').resolve()}: not a readable PDF")
