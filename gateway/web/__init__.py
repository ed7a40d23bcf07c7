"""The gateway's HTTP side (aiohttp): the OpenAI-compatible ``/v1`` API, and the routes other
modules register through :func:`gateway.web.app.build_app`'s ``setup`` callbacks.

The application keys below are how route modules reach the shared services::

    engine = request.app[ENGINE]        # the LLM engine, or None when the assistant is off
    embeddings = request.app[EMBEDDINGS]  # the embedding service, or None
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

if TYPE_CHECKING:
    from gateway.assistant.engine import Engine
    from gateway.web.openai_api import EmbeddingService

ENGINE: Final[web.AppKey[Engine | None]] = web.AppKey("engine")
EMBEDDINGS: Final[web.AppKey[EmbeddingService | None]] = web.AppKey("embeddings")
STARTED_AT: Final[web.AppKey[float]] = web.AppKey("started_at", float)

__all__ = ["EMBEDDINGS", "ENGINE", "STARTED_AT"]
