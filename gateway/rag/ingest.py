"""``bedside ingest``: files → sections → chunks → vectors → the index. Blocking; run it in a
worker thread when called from the service.

A file whose bytes (SHA-256) and chunking settings match what is indexed is skipped without
loading the model; a changed file has its chunks replaced in one transaction; ``prune`` removes
documents whose file is gone. Chunks of several files are embedded together (batches keep the
model busy, as a bare ``SentenceTransformer.encode`` would); a file that cannot be read or
extracted is reported in the summary and does not stop the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from gateway.rag.chunking import Chunk, chunk_document, chunker_signature, content_hash
from gateway.rag.embedder import Embedder
from gateway.rag.errors import SourceError
from gateway.rag.extract import DocumentKind, Extracted, extract, kind_of, supported_suffixes
from gateway.rag.index import Index, NewDocument, index_path
from gateway.rag.settings import RagSettings

EMBED_GROUP_BATCHES: Final = 8  # embed once this many batches' worth of chunks are pending


class IngestProgress(Protocol):
    """Told how many files there are, then about each one as it is done."""

    def start(self, files: int) -> None: ...

    def advance(self, path: Path) -> None: ...


@dataclass(slots=True)
class IngestSummary:
    index: Path
    model: str
    added: int = 0
    updated: int = 0
    skipped: int = 0
    removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "index": str(self.index),
            "model": self.model,
            "files": {
                "added": self.added,
                "updated": self.updated,
                "skipped": self.skipped,
                "removed": self.removed,
                "failed": len(self.failures),
            },
            "chunks": {
                "added": self.chunks_added,
                "removed": self.chunks_removed,
                "total": self.chunks,
            },
            "documents": self.documents,
            "failures": [{"path": path, "error": error} for path, error in self.failures],
            "seconds": round(self.seconds, 3),
        }


def discover(paths: Iterable[Path]) -> dict[Path, DocumentKind]:
    """The files to ingest and their kind: each given file, and every supported file under each
    given directory (recursively, hidden entries skipped), resolved, without duplicates, in a
    stable order. A missing path, or a file given by name with an unsupported suffix, is a
    :class:`SourceError`."""
    found: dict[Path, DocumentKind] = {}
    for given in paths:
        if given.is_dir():
            for candidate in sorted(given.rglob("*")):
                hidden = any(part.startswith(".") for part in candidate.relative_to(given).parts)
                kind = kind_of(candidate)
                if kind is not None and not hidden and candidate.is_file():
                    found.setdefault(candidate.resolve(), kind)
        elif given.is_file():
            kind = kind_of(given)
            if kind is None:
                raise SourceError(
                    str(given),
                    f"unsupported file type {given.suffix or '(no suffix)'!r}; "
                    f"supported: {supported_suffixes()}",
                )
            found.setdefault(given.resolve(), kind)
        else:
            raise SourceError(str(given), "no such file or directory")
    return found


@dataclass(frozen=True, slots=True)
class _Pending:
    document: NewDocument
    chunks: list[Chunk]


class _Ingest:
    def __init__(
        self, index: Index, settings: RagSettings, embedder: Embedder, summary: IngestSummary
    ) -> None:
        self.index = index
        self.settings = settings
        self.embedder = embedder
        self.summary = summary
        self.signature = chunker_signature(
            settings.model, settings.chunk_tokens, settings.chunk_overlap
        )
        self.pending: list[_Pending] = []
        self.pending_chunks = 0
        self.group = settings.batch_size * EMBED_GROUP_BATCHES

    def file(self, path: Path, kind: DocumentKind, progress: IngestProgress | None) -> None:
        key = str(path)
        try:
            data = path.read_bytes()
            stat = path.stat()
        except OSError as exc:
            self._failed(path, f"cannot read ({exc.strerror or exc})", progress)
            return
        digest = content_hash(data)
        known = self.index.document(key)
        if known is not None and known.sha256 == digest and known.chunker == self.signature:
            self.summary.skipped += 1
            if progress is not None:
                progress.advance(path)
            return
        try:
            extracted = extract(kind, data, path.name)
        except SourceError as exc:
            self._failed(path, exc.problem, progress)
            return
        chunks = chunks_for(extracted, self.settings, self.embedder)
        if not chunks:  # text, but nothing the tokenizer keeps (control characters, say)
            self._failed(path, "no text the embedding model can read", progress)
            return
        document = NewDocument(
            key, digest, extracted.title, kind.value, stat.st_mtime, len(data), self.signature
        )
        self.pending.append(_Pending(document, chunks))
        self.pending_chunks += len(chunks)
        if self.pending_chunks >= self.group:
            self.flush(progress)

    def flush(self, progress: IngestProgress | None) -> None:
        if not self.pending:
            return
        texts = [chunk.embed_text for item in self.pending for chunk in item.chunks]
        vectors = self.embedder.embed(texts)
        self.index.bind_model(self.settings.model, self.embedder.dimension)
        offset = 0
        for item in self.pending:
            rows = vectors[offset : offset + len(item.chunks)]
            offset += len(item.chunks)
            outcome = self.index.replace_document(item.document, item.chunks, rows)
            if outcome.created:
                self.summary.added += 1
            else:
                self.summary.updated += 1
            self.summary.chunks_added += outcome.chunks_added
            self.summary.chunks_removed += outcome.chunks_removed
            if progress is not None:
                progress.advance(Path(item.document.path))
        self.pending = []
        self.pending_chunks = 0

    def _failed(self, path: Path, problem: str, progress: IngestProgress | None) -> None:
        self.summary.failures.append((str(path), problem))
        if progress is not None:
            progress.advance(path)


def prune(index: Index, summary: IngestSummary) -> None:
    """Remove documents whose file no longer exists."""
    for record in index.documents():
        if not Path(record.path).is_file():
            summary.chunks_removed += index.remove_document(record.path)
            summary.removed += 1


def ingest(
    paths: Sequence[Path],
    data_dir: Path,
    settings: RagSettings | None = None,
    *,
    remove_missing: bool = False,
    embedder: Embedder | None = None,
    progress: IngestProgress | None = None,
) -> IngestSummary:
    """Ingest ``paths`` (files or directories) into the index in ``data_dir``; with
    ``remove_missing``, also drop documents whose file is gone. Raises :class:`SourceError` for a
    missing path or unsupported file named explicitly (before anything is written) and
    :class:`IndexMismatchError` when the index holds another model's vectors; failures of single
    files are listed in the summary."""
    started = time.perf_counter()
    settings = settings or RagSettings()
    embedder = embedder or Embedder.from_settings(settings)
    if embedder.model != settings.model:
        raise ValueError(f"embedder model {embedder.model!r} is not {settings.model!r}")
    files = discover(paths)
    path = index_path(data_dir)
    summary = IngestSummary(path, settings.model)
    with Index.open(path) as index:
        index.check_model(settings.model)
        run = _Ingest(index, settings, embedder, summary)
        if progress is not None:
            progress.start(len(files))
        for file, kind in files.items():
            run.file(file, kind, progress)
        run.flush(progress)
        if remove_missing:
            prune(index, summary)
        summary.documents, summary.chunks = index.counts()
    summary.seconds = time.perf_counter() - started
    return summary


def chunks_for(extracted: Extracted, settings: RagSettings, embedder: Embedder) -> list[Chunk]:
    """The chunks :func:`ingest` makes of a document (``chunk_tokens`` capped at what the model
    reads)."""
    return chunk_document(
        extracted,
        embedder.token_spans,
        chunk_tokens=min(settings.chunk_tokens, embedder.max_tokens),
        overlap=settings.chunk_overlap,
    )
