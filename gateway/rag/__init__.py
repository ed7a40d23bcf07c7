"""Retrieval over clinical documents: ingest (Markdown, HTML, text, PDF), sqlite-vec search.

The pure parts (:mod:`.extract`, :mod:`.chunking`) do no I/O; :mod:`.index` is the SQLite file,
:mod:`.embedder` the sentence-transformers model, :mod:`.ingest` and :mod:`.retriever` put them
together, :mod:`.commands` is ``bedside ingest`` / ``bedside search``.

The names below load on first use: importing the package (or its light :mod:`.settings` and
:mod:`.errors`) loads neither numpy, SQLite extensions nor sentence-transformers. The ingest
function is :func:`gateway.rag.ingest.ingest` (the package attribute ``ingest`` is that module).

Typical use from the service::

    async with Retriever(settings.data_dir, settings.rag) as retriever:
        passages = await retriever.search("fever threshold in adults", k=6)
        prompt_context = context_block(passages)  # "[1] Fever in adults, § …\\n<text>" …
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.rag.embedder import Embedder
    from gateway.rag.errors import (
        EmptyIndexError,
        IndexMismatchError,
        IndexStorageError,
        ModelError,
        RagError,
        SourceError,
    )
    from gateway.rag.index import INDEX_FILENAME, index_path
    from gateway.rag.ingest import IngestSummary
    from gateway.rag.retriever import DocumentRef, Passage, Retriever, context_block
    from gateway.rag.settings import EMBEDDED_MODEL, RagSettings

_WHERE = {
    "EMBEDDED_MODEL": "gateway.rag.settings",
    "INDEX_FILENAME": "gateway.rag.index",
    "DocumentRef": "gateway.rag.retriever",
    "Embedder": "gateway.rag.embedder",
    "EmptyIndexError": "gateway.rag.errors",
    "IndexMismatchError": "gateway.rag.errors",
    "IndexStorageError": "gateway.rag.errors",
    "IngestSummary": "gateway.rag.ingest",
    "ModelError": "gateway.rag.errors",
    "Passage": "gateway.rag.retriever",
    "RagError": "gateway.rag.errors",
    "RagSettings": "gateway.rag.settings",
    "Retriever": "gateway.rag.retriever",
    "SourceError": "gateway.rag.errors",
    "context_block": "gateway.rag.retriever",
    "index_path": "gateway.rag.index",
}

__all__ = [
    "EMBEDDED_MODEL",
    "INDEX_FILENAME",
    "DocumentRef",
    "Embedder",
    "EmptyIndexError",
    "IndexMismatchError",
    "IndexStorageError",
    "IngestSummary",
    "ModelError",
    "Passage",
    "RagError",
    "RagSettings",
    "Retriever",
    "SourceError",
    "context_block",
    "index_path",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
