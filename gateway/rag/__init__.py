"""Retrieval over clinical documents: ingest (Markdown, HTML, text, PDF), sqlite-vec search.

The pure parts (:mod:`.extract`, :mod:`.chunking`) do no I/O; :mod:`.index` is the SQLite file,
:mod:`.embedder` the sentence-transformers model, :mod:`.ingest` and :mod:`.retriever` put them
together, :mod:`.commands` is ``bedside ingest`` / ``bedside search``.

Typical use from the service::

    async with Retriever(settings.data_dir, settings.rag) as retriever:
        passages = await retriever.search("fever threshold in adults", k=6)
        prompt_context = context_block(passages)  # "[1] Fever in adults, § …\\n<text>" …
"""

from __future__ import annotations

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
from gateway.rag.ingest import IngestSummary, ingest
from gateway.rag.retriever import DocumentRef, Passage, Retriever, context_block
from gateway.rag.settings import EMBEDDED_MODEL, RagSettings

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
    "ingest",
]
