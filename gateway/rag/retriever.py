"""The retrieval API the assistant calls: passages for a question, with what to cite.

All blocking work (embedding the query, SQLite) runs in the retriever's own worker thread, which
owns the index connection; :meth:`Retriever.search` awaits it and never blocks the event loop,
:meth:`Retriever.search_sync` (the CLI) waits for the same thread. Queries are embedded with the
model the index was built with (the vectors decide the space); a search before anything was
ingested raises :class:`EmptyIndexError`, which the assistant can treat as "no context".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from gateway.rag.embedder import Embedder
from gateway.rag.errors import EmptyIndexError, IndexMismatchError, RagError
from gateway.rag.index import Index, index_path
from gateway.rag.settings import RagSettings

T = TypeVar("T")
DEFAULT_K: Final = 6
MAX_K: Final = 100
PAGE_MARK: Final = "p."
SECTION_MARK: Final = "§"


@dataclass(frozen=True, slots=True)
class DocumentRef:
    path: str
    title: str


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk: its text, where it comes from, and its cosine similarity to the query."""

    chunk_id: int
    document: DocumentRef
    page: int | None
    section: tuple[str, ...]
    text: str
    score: float

    @property
    def citation(self) -> str:
        """``Fever in adults § Fever in adults > Thresholds`` or ``Sepsis screening, p. 2``."""
        where = []
        if self.section:
            where.append(f"{SECTION_MARK} {' > '.join(self.section)}")
        if self.page is not None:
            where.append(f"{PAGE_MARK} {self.page}")
        return ", ".join([self.document.title, *where])

    def as_dict(self) -> dict[str, object]:
        return {
            "chunk_id": self.chunk_id,
            "score": round(self.score, 4),
            "document": {"path": self.document.path, "title": self.document.title},
            "page": self.page,
            "section": list(self.section),
            "citation": self.citation,
            "text": self.text,
        }


def context_block(passages: Sequence[Passage]) -> str:
    """Passages numbered for a prompt, each headed by its citation, so that a reply can cite
    ``[1]``, ``[2]``…; ``passages[n - 1]`` is what ``[n]`` refers to."""
    return "\n\n".join(
        f"[{number}] {passage.citation}\n{passage.text}"
        for number, passage in enumerate(passages, start=1)
    )


class Retriever:
    """Search over the index in ``data_dir``; close it (or use it as a context manager)."""

    def __init__(self, data_dir: Path, settings: RagSettings | None = None) -> None:
        self.settings = settings or RagSettings()
        self.path = index_path(data_dir)
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rag-retriever"
        )
        self._index: Index | None = None  # opened in, and only used from, the worker thread

    # -- the API -----------------------------------------------------------------------------------

    async def search(
        self, query: str, k: int = DEFAULT_K, threshold: float | None = None
    ) -> list[Passage]:
        """Up to ``k`` passages with cosine similarity ≥ ``threshold`` (default: the settings',
        0.35), best first."""
        return await asyncio.wrap_future(self._submit(self._search, query, k, threshold))

    def search_sync(
        self, query: str, k: int = DEFAULT_K, threshold: float | None = None
    ) -> list[Passage]:
        """:meth:`search` for code without an event loop (the CLI)."""
        return self._submit(self._search, query, k, threshold).result()

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length embeddings of ``texts`` by the configured model (``/v1/embeddings``)."""
        items = list(texts)
        embedder = Embedder.from_settings(self.settings)
        return await asyncio.wrap_future(self._submit(embedder.embed, items))

    async def warm_up(self) -> None:
        """Open the index and load its model (the configured one while there is no index) now,
        rather than at the first question."""
        await asyncio.wrap_future(self._submit(self._warm_up))

    def close(self) -> None:
        """Finish queued work, close the index connection and stop the worker thread."""
        try:
            self._submit(self._close_index).result()
        except RuntimeError:  # already shut down
            return
        self._worker.shutdown(wait=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Retriever:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the worker thread -------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: object) -> concurrent.futures.Future[T]:
        return self._worker.submit(fn, *args)

    def _open(self) -> Index:
        if self._index is None:
            if not self.path.is_file():
                raise EmptyIndexError(self.path)
            self._index = Index.open(self.path)
        return self._index

    def _close_index(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def _warm_up(self) -> None:
        name = self.settings.model
        if self.path.is_file():
            model = self._open().model()
            if model is not None:
                name = model.name
        Embedder(name, device=self.settings.device).load()

    def _search(self, query: str, k: int, threshold: float | None) -> list[Passage]:
        if not query.strip():
            raise RagError("the search query is empty: ask something")
        if not 1 <= k <= MAX_K:
            raise RagError(f"k must be between 1 and {MAX_K}, not {k}")
        limit = self.settings.threshold if threshold is None else threshold
        index = self._open()
        model = index.model()
        if model is None or index.counts()[1] == 0:
            raise EmptyIndexError(self.path)
        embedder = Embedder(model.name, device=self.settings.device)
        vector = embedder.embed([query])[0]
        if vector.shape != (model.dimension,):
            raise IndexMismatchError(
                self.path,
                f"{model.name} ({model.dimension}-d)",
                f"{model.name} as installed now ({vector.shape[-1]}-d)",
            )
        hits = [
            (chunk_id, score)
            for chunk_id, score in index.nearest(vector, k, k * self.settings.oversample)
            if score >= limit
        ]
        stored = index.chunks([chunk_id for chunk_id, _ in hits])
        return [
            Passage(
                chunk_id=chunk_id,
                document=DocumentRef(chunk.document_path, chunk.document_title),
                page=chunk.page,
                section=chunk.headings,
                text=chunk.text,
                score=score,
            )
            for chunk_id, score in hits
            if (chunk := stored.get(chunk_id)) is not None
        ]
