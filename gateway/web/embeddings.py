"""The embedding service behind ``POST /v1/embeddings``: an embedding backend (the gateway's
:class:`gateway.rag.embedder.Embedder`, or any object or function alike) run in its own thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gateway.assistant.errors import EngineError

Vectors = np.ndarray[Any, np.dtype[np.float32]]


@runtime_checkable
class EmbeddingBackend(Protocol):
    """What ``/v1/embeddings`` needs: ``embed(texts) -> array (len(texts), dims)``; optionally
    ``count_tokens(texts) -> int`` for the usage figures."""

    def embed(self, texts: list[str]) -> Any: ...


EmbedderLike = EmbeddingBackend | Callable[[list[str]], Any]


class EmbeddingService:
    """Runs an embedding backend in its own thread (one call at a time: models are not
    re-entrant). ``name`` is the model id clients ask for."""

    def __init__(self, embedder: EmbedderLike, name: str) -> None:
        self.name = name
        self._embed: Callable[[list[str]], Any] = (
            embedder.embed if isinstance(embedder, EmbeddingBackend) else embedder
        )
        count = getattr(embedder, "count_tokens", None)
        self._count: Callable[[list[str]], int] | None = count if callable(count) else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    def _run(self, texts: list[str]) -> tuple[Vectors, int]:
        vectors = np.asarray(self._embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EngineError(
                f"embedder {self.name!r} returned shape {vectors.shape} for {len(texts)} texts; "
                "expected (texts, dimensions)"
            )
        tokens = int(self._count(texts)) if self._count is not None else 0
        return vectors, tokens

    async def embed(self, texts: list[str]) -> tuple[Vectors, int]:
        """Vectors (float32, one row per text) and the token count (0 when unknown)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
