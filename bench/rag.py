"""Retrieval benchmark: vector search at 100,000 chunks, and ingest throughput.

Search. 100,000 seeded random unit vectors of 384 dimensions in a real index
(``gateway.rag.index.Index``: SQLite file, sqlite-vec ``bit[384]`` vec0 table, float32 vectors
beside the chunks), written through ``Index.replace_document`` as ingest writes them. Real
embeddings are clustered (passages of one document, one topic, are alike), so the vectors are:
5,000 "documents" of 20 chunks, each chunk ``unit(centre + noise)`` with the noise as long as the
centre (cosine to its centre ≈ 0.71, to a sibling ≈ 0.5, to anything else ≈ 0 ± 0.05); a query
is ``unit(centre + noise)`` of a random document. For each query: the production search
(``Index.nearest``: Hamming KNN over the bit vectors for k × oversample candidates, exact cosine
rerank) against exact search (numpy over all 100,000 float vectors) → recall@6, and p50/p99
latency; the same for sqlite-vec's plain float KNN (``vec0 float[384] distance_metric=cosine``,
``MATCH … AND k = 6``) in the same file. Also reported: the same search over 100,000 *uniform*
random unit vectors (no structure at all: every vector is nearly orthogonal to every other, the
"nearest" ones are noise and binary quantization cannot rank them; a worst case that real text
embeddings do not reach) and the latency of embedding one query with the model.

Ingest. Generated Markdown (seeded clinical-sounding sentences; 1,000 chunks of up to 254 tokens
by default, ``--ingest-chunks 2000`` when the machine is idle enough for a 5-minute run)
through ``gateway.rag.ingest.ingest`` (read, hash, extract, chunk, embed, write) against a bare
``SentenceTransformer.encode`` of exactly the texts ingest embeds, same batch size, model loaded
before both. The work is split into rounds that alternate which path goes first, so both see the
same machine load. Goals: search p50 ≤ 10 ms with recall@6 ≥ 0.95; ingest ≥ 0.9 × encode.

Prints ONE JSON object. Takes a few minutes on 2 cores (``--quick``: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.rag.chunking import Chunk
from gateway.rag.embedder import Embedder, model_location
from gateway.rag.extract import extract, kind_of
from gateway.rag.index import Index, NewDocument, connect, index_path
from gateway.rag.ingest import chunks_for, ingest
from gateway.rag.settings import EMBEDDED_MODEL, RagSettings

SEED = 20240601
DIMENSION = 384
CHUNKS = 100_000
DOCUMENTS = 5_000  # × 20 chunks
NOISE = 1.0  # noise length relative to the centre: cosine to the centre ≈ 0.71
LOOSE_NOISE = 1.5  # ≈ 0.55
QUERIES = 300
WARM_UP_QUERIES = 20
THRESHOLD = RagSettings().threshold
K = 6
OVERSAMPLES = (4, 8, 16)
LOOSE_OVERSAMPLES = (8, 16, 32)
UNIFORM_OVERSAMPLES = (8, 32)
GOAL_P50_MS = 10.0
GOAL_RECALL = 0.95
INGEST_CHUNKS = 1_000  # --ingest-chunks 2000 for the figure when the machine is idle
INGEST_ROUNDS = 4
SECTIONS_PER_FILE = 12
GOAL_INGEST_RATIO = 0.9
QUERY_EMBEDDINGS = 30

Vectors = NDArray[np.float32]


def _unit(rows: NDArray[Any]) -> Vectors:
    rows = np.asarray(rows, dtype=np.float32)
    unit: Vectors = (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)
    return unit


def clustered(
    rng: np.random.Generator, chunks: int, documents: int, noise: float
) -> tuple[Vectors, Vectors]:
    """(chunk vectors, document centres); chunk i belongs to document i // (chunks/documents)."""
    centres = _unit(rng.standard_normal((documents, DIMENSION)))
    owner = np.arange(chunks) // (chunks // documents)
    return _unit(centres[owner] + noise * _unit(rng.standard_normal((chunks, DIMENSION)))), centres


def clustered_queries(
    rng: np.random.Generator, centres: Vectors, count: int, noise: float
) -> Vectors:
    picked = centres[rng.integers(0, len(centres), count)]
    return _unit(picked + noise * _unit(rng.standard_normal((count, DIMENSION))))


def build_index(path: Path, vectors: Vectors, documents: int) -> float:
    """Write ``vectors`` as ``documents`` documents through the production write path; seconds."""
    per_document = len(vectors) // documents
    started = time.perf_counter()
    with Index.open(path) as index:
        index.bind_model("bench/random-384", DIMENSION)
        for number in range(documents):
            rows = vectors[number * per_document : (number + 1) * per_document]
            chunks = [
                Chunk(i, f"document {number} chunk {i}", None, ("bench",), "bench", 8)
                for i in range(per_document)
            ]
            document = NewDocument(
                f"/bench/{number}.md", f"{number:064x}", "b", "markdown", 0, 0, ""
            )
            index.replace_document(document, chunks, rows)
        documents_stored, chunks_stored = index.counts()
        probe = index.chunks([1, len(vectors)])
    if (documents_stored, chunks_stored) != (documents, len(vectors)) or [
        c.text for c in probe.values()
    ] != ["document 0 chunk 0", f"document {documents - 1} chunk {per_document - 1}"]:
        raise RuntimeError("chunk ids are not 1..N in insertion order; recall would be wrong")
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Truth:
    """Exact search for one query: the top-k chunk ids, and those at or above the threshold."""

    top: frozenset[int]
    above: frozenset[int]
    scores: tuple[float, ...]  # best first


def exact(vectors: Vectors, query: Vectors) -> Truth:
    scores = vectors @ query
    top = np.argpartition(-scores, K)[:K]
    top = top[np.argsort(-scores[top])]
    ids = [int(i) + 1 for i in top]  # chunk ids are 1-based rows
    best = [float(scores[i]) for i in top]
    return Truth(
        frozenset(ids),
        frozenset(i for i, score in zip(ids, best, strict=True) if score >= THRESHOLD),
        tuple(best),
    )


def _timed(
    search: Callable[[Vectors], list[int]], queries: Vectors, truths: Sequence[Truth]
) -> dict[str, float | None]:
    for query in queries[:WARM_UP_QUERIES]:
        search(query)
    latencies = []
    recalls = []
    recalls_above = []
    for query, truth in zip(queries, truths, strict=True):
        started = time.perf_counter()
        found = set(search(query))
        latencies.append(time.perf_counter() - started)
        recalls.append(len(truth.top & found) / K)
        if truth.above:
            recalls_above.append(len(truth.above & found) / len(truth.above))
    return {
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 3),
        f"recall_at_{K}": round(statistics.fmean(recalls), 4),
        # The passages the retriever would return (exact cosine ≥ 0.35) that were found.
        f"recall_at_{K}_above_threshold": (
            round(statistics.fmean(recalls_above), 4) if recalls_above else None
        ),
    }


def _production(index: Index, oversample: int) -> Callable[[Vectors], list[int]]:
    def search(query: Vectors) -> list[int]:
        return [chunk_id for chunk_id, _ in index.nearest(query, K, K * oversample)]

    return search


def _dataset(
    path: Path,
    vectors: Vectors,
    queries: Vectors,
    oversamples: Sequence[int],
    extra: Callable[[Path, Sequence[Truth]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    build_seconds = build_index(path, vectors, DOCUMENTS)
    truths = [exact(vectors, query) for query in queries]
    out: dict[str, Any] = {
        "index_build_s": round(build_seconds, 2),
        "index_file_mb": round(path.stat().st_size / 1e6, 1),
        "exact_top1_cosine_mean": round(statistics.fmean(t.scores[0] for t in truths), 3),
        f"exact_top{K}_cosine_mean": round(statistics.fmean(t.scores[-1] for t in truths), 3),
        "queries_with_a_passage_above_threshold": sum(bool(t.above) for t in truths),
    }
    with Index.open(path) as index:
        out["binary_rerank"] = {
            f"oversample_{n}": _timed(_production(index, n), queries, truths) for n in oversamples
        }
    if extra is not None:
        out |= extra(path, truths)
    path.unlink()
    return out


def bench_search(root: Path, rng: np.random.Generator) -> dict[str, Any]:
    default = RagSettings().oversample
    vectors, centres = clustered(rng, CHUNKS, DOCUMENTS, NOISE)
    queries = clustered_queries(rng, centres, QUERIES, NOISE)

    def baselines(path: Path, truths: Sequence[Truth]) -> dict[str, Any]:
        return {
            "sqlite_vec_float_knn": _float_knn(path, vectors, queries, truths),
            "numpy_exact_in_memory": _timed(lambda q: list(exact(vectors, q).top), queries, truths),
        }

    tight = _dataset(root / "tight.sqlite3", vectors, queries, OVERSAMPLES, baselines)
    loose, loose_centres = clustered(rng, CHUNKS, DOCUMENTS, LOOSE_NOISE)
    loose_queries = clustered_queries(rng, loose_centres, QUERIES, LOOSE_NOISE)
    loose_figures = _dataset(root / "loose.sqlite3", loose, loose_queries, LOOSE_OVERSAMPLES)
    uniform = _unit(rng.standard_normal((CHUNKS, DIMENSION)))
    uniform_queries = _unit(rng.standard_normal((QUERIES, DIMENSION)))
    uniform_figures = _dataset(
        root / "uniform.sqlite3", uniform, uniform_queries, UNIFORM_OVERSAMPLES
    )
    headline = tight["binary_rerank"][f"oversample_{default}"]
    return {
        "chunks": CHUNKS,
        "dimension": DIMENSION,
        "documents": DOCUMENTS,
        "queries": QUERIES,
        "k": K,
        "default_oversample": default,
        "clustered": tight,
        "loose_clusters": loose_figures,
        "uniform_random_worst_case": uniform_figures,
        "goal": {"p50_ms": GOAL_P50_MS, f"recall_at_{K}": GOAL_RECALL},
        "goal_met": headline["p50_ms"] <= GOAL_P50_MS and headline[f"recall_at_{K}"] >= GOAL_RECALL,
    }


def _float_knn(
    path: Path, vectors: Vectors, queries: Vectors, truths: Sequence[Truth]
) -> dict[str, float | None]:
    import sqlite_vec

    conn = connect(path)
    try:
        conn.execute(
            f"CREATE VIRTUAL TABLE bench_float USING vec0(embedding float[{DIMENSION}] "
            "distance_metric=cosine)"
        )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO bench_float (rowid, embedding) VALUES (?, ?)",
            ((i + 1, row.tobytes()) for i, row in enumerate(vectors)),
        )
        conn.execute("COMMIT")

        def knn(query: Vectors) -> list[int]:
            rows = conn.execute(
                "SELECT rowid FROM bench_float WHERE embedding MATCH ? AND k = ?",
                (sqlite_vec.serialize_float32(query.tolist()), K),
            ).fetchall()
            return [int(row[0]) for row in rows]

        return _timed(knn, queries, truths)
    finally:
        conn.close()


# -- ingest ----------------------------------------------------------------------------------------

_SUBJECTS = (
    "The patient", "The night nurse", "The registrar", "The bedside monitor",
    "The pulse oximeter", "The blood pressure cuff", "The ward team", "The ECG patch",
    "The thermometer", "The outreach team",
)  # fmt: skip
_VERBS = (
    "recorded", "reported", "escalated", "reviewed", "documented", "measured", "noted",
    "confirmed", "repeated", "flagged",
)  # fmt: skip
_OBJECTS = (
    "a heart rate of {n} beats per minute", "an oxygen saturation of {n} percent",
    "a temperature of 38.{d} degrees", "a systolic pressure of {n}0 mmHg",
    "a respiratory rate of {n} breaths per minute", "a serum lactate of {d}.{d} mmol/L",
    "new confusion", "a fluid balance of {n}00 mL", "irregular pulse", "poor perfusion",
)  # fmt: skip
_TAILS = (
    "after the evening round", "before the first antibiotic dose", "during the transfer",
    "while the patient slept", "on the early warning chart", "within the hour",
    "and informed the consultant", "despite the oxygen therapy",
)  # fmt: skip


def _sentence(rand: random.Random) -> str:
    what = rand.choice(_OBJECTS).format(n=rand.randint(2, 19), d=rand.randint(0, 9))
    return f"{rand.choice(_SUBJECTS)} {rand.choice(_VERBS)} {what} {rand.choice(_TAILS)}."


def write_document(path: Path, number: int, rand: random.Random) -> None:
    """A Markdown handover note: sections of a few paragraphs (about 35 chunks)."""
    lines = [f"# Ward handover {number}", ""]
    for section in range(SECTIONS_PER_FILE):
        lines += [f"## Bay {section}", ""]
        for _ in range(4):
            lines += [" ".join(_sentence(rand) for _ in range(7)), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def bench_ingest(root: Path, chunks_wanted: int, rounds: int) -> dict[str, Any]:
    settings = RagSettings()
    embedder = Embedder.from_settings(settings)
    embedder.load()  # first: it sets the offline environment before sentence-transformers loads
    from sentence_transformers import SentenceTransformer

    bare = SentenceTransformer(model_location(EMBEDDED_MODEL), device="cpu", local_files_only=True)
    rand = random.Random(SEED)
    (root / "docs").mkdir()
    files: list[Path] = []
    texts_of: dict[Path, list[str]] = {}
    # Files until the chunks wanted are there (the texts are exactly what ingest will embed).
    while len(files) < rounds or sum(map(len, texts_of.values())) < chunks_wanted:
        path = root / "docs" / f"handover-{len(files):03}.md"
        write_document(path, len(files), rand)
        kind = kind_of(path)
        assert kind is not None
        extracted = extract(kind, path.read_bytes(), path.name)
        texts_of[path] = [c.embed_text for c in chunks_for(extracted, settings, embedder)]
        files.append(path)
    warm = [text for texts in texts_of.values() for text in texts][: settings.batch_size * 2]
    bare.encode(warm, batch_size=settings.batch_size, normalize_embeddings=True)
    embedder.embed(warm)

    ingest_seconds = encode_seconds = 0.0
    data_dir = root / "data"
    for number in range(rounds):
        batch = files[number::rounds]
        texts = [text for path in batch for text in texts_of[path]]

        def run_encode(texts: list[str] = texts) -> float:
            started = time.perf_counter()
            bare.encode(texts, batch_size=settings.batch_size, normalize_embeddings=True)
            return time.perf_counter() - started

        def run_ingest(batch: list[Path] = batch) -> float:
            started = time.perf_counter()
            summary = ingest(batch, data_dir, settings, embedder=embedder)
            if summary.failures or summary.added != len(batch):
                raise RuntimeError(f"ingest failed: {summary.as_dict()}")
            return time.perf_counter() - started

        if number % 2:
            ingest_seconds += run_ingest()
            encode_seconds += run_encode()
        else:
            encode_seconds += run_encode()
            ingest_seconds += run_ingest()
    chunks = sum(len(texts) for texts in texts_of.values())
    with Index.open(index_path(data_dir)) as index:
        if index.counts() != (len(files), chunks):
            raise RuntimeError(f"ingest stored {index.counts()}, encode saw {len(files), chunks}")
    ratio = encode_seconds / ingest_seconds

    query_latencies = []
    for number in range(QUERY_EMBEDDINGS):
        started = time.perf_counter()
        embedder.embed([f"what does a lactate of {number} mmol/L mean"])
        query_latencies.append(time.perf_counter() - started)
    return {
        "files": len(files),
        "chunks": chunks,
        "chunk_tokens": min(settings.chunk_tokens, embedder.max_tokens),
        "batch_size": settings.batch_size,
        "rounds": rounds,
        "ingest_chunks_per_s": round(chunks / ingest_seconds, 2),
        "bare_encode_chunks_per_s": round(chunks / encode_seconds, 2),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL_INGEST_RATIO,
        "goal_met": ratio >= GOAL_INGEST_RATIO,
        "query_embedding_p50_ms": round(1000 * statistics.median(query_latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small ingest part (smoke run)")
    parser.add_argument(
        "--ingest-chunks", type=int, default=INGEST_CHUNKS, help="chunks for the ingest part"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
        root = Path(tmp)
        search = bench_search(root, rng)
        chunks, rounds = (200, 2) if args.quick else (args.ingest_chunks, INGEST_ROUNDS)
        ingest_figures = bench_ingest(root, chunks, rounds)
    print(
        json.dumps(
            {
                "bench": "rag",
                "seed": SEED,
                "search": search,
                "ingest": ingest_figures,
                "goal_met": search["goal_met"] and ingest_figures["goal_met"],
                "seconds": round(time.perf_counter() - started, 1),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
