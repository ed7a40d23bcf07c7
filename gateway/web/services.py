"""What the routes reach through the application: the assistant's services and state, the
health checks of ``/healthz``, the start time.

::

    assistant = request.app[ASSISTANT]       # AssistantServices
    engine = assistant.running_engine()      # or ApiError 503: loading, disabled, failed, stopped
    embeddings = assistant.embedding_service()
    consultations = assistant.consultation_service()
    request.app[HEALTH]["radio"] = callable  # name → () -> JSON-able status, shown by /healthz

The gateway serves the API first and loads the assistant in the background: the services start
``"loading"``, become ``"ready"`` (:meth:`AssistantServices.ready`) or ``"failed"``
(:meth:`AssistantServices.fail`); with ``assistant.enabled = false`` they are ``"disabled"``.
Until ready, every route that needs the assistant answers 503 with one sentence saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

from aiohttp import web

from gateway.web.errors import ApiError

if TYPE_CHECKING:
    from gateway.assistant.backend import LlmEngine
    from gateway.assistant.consultation import ConsultationService
    from gateway.web.embeddings import EmbeddingService

AssistantState = Literal["loading", "ready", "disabled", "failed"]
HealthCheck = Callable[[], object]
"""A component's status for ``/healthz``: called on every request, returns JSON-able data."""

LOADING_MESSAGE: Final = "the assistant is still loading; retry in a few seconds"
DISABLED_MESSAGE: Final = "the assistant is disabled on this gateway (assistant.enabled = false)"
NOT_RUNNING_MESSAGE: Final = "the assistant is not running on this gateway"
NO_EMBEDDINGS_MESSAGE: Final = "no embedding model is configured on this gateway"
NO_CONSULTATIONS_MESSAGE: Final = "consultations are not available on this gateway"
UNAVAILABLE_CODE: Final = "assistant_unavailable"


class AssistantServices:
    """The assistant as the routes see it: its state, and its services once ready."""

    def __init__(self, state: AssistantState = "loading") -> None:
        self.state: AssistantState = state
        self.error: str | None = None
        self.engine: LlmEngine | None = None
        self.embeddings: EmbeddingService | None = None
        self.consultations: ConsultationService | None = None

    def ready(
        self,
        engine: LlmEngine | None,
        *,
        embeddings: EmbeddingService | None = None,
        consultations: ConsultationService | None = None,
    ) -> None:
        """Loaded: the routes use these from now on."""
        self.engine = engine
        self.embeddings = embeddings
        if consultations is not None:
            self.consultations = consultations
        self.error = None
        self.state = "ready"

    def fail(self, error: str) -> None:
        """Loading failed; ``error`` (one sentence) is shown by ``/healthz`` and in the 503s."""
        self.error = error
        self.state = "failed"

    def health(self) -> dict[str, object]:
        """``{"assistant": state}``, with ``"assistant_error"`` when it failed."""
        status: dict[str, object] = {"assistant": self.state}
        if self.state == "failed":
            status["assistant_error"] = self.error
        return status

    def unavailable(self) -> ApiError | None:
        """The 503 for a route that needs the assistant, unless it is ready."""
        if self.state == "ready":
            return None
        if self.state == "loading":
            message = LOADING_MESSAGE
        elif self.state == "disabled":
            message = DISABLED_MESSAGE
        else:
            message = f"the assistant failed to load: {self.error}"
        return ApiError(503, message, code=UNAVAILABLE_CODE)

    def _check(self) -> None:
        problem = self.unavailable()
        if problem is not None:
            raise problem

    def running_engine(self) -> LlmEngine:
        """The engine, running; :class:`ApiError` 503 otherwise."""
        self._check()
        engine = self.engine
        if engine is None or not engine.running:
            raise ApiError(503, NOT_RUNNING_MESSAGE)
        return engine

    def embedding_service(self) -> EmbeddingService:
        self._check()
        if self.embeddings is None:
            raise ApiError(503, NO_EMBEDDINGS_MESSAGE)
        return self.embeddings

    def consultation_service(self, *, running: bool = True) -> ConsultationService:
        """The consultations (with their engine running, when ``running``: what takes a message
        needs it, reading a record does not); :class:`ApiError` 503 otherwise."""
        self._check()
        service = self.consultations
        if service is None:
            raise ApiError(503, NO_CONSULTATIONS_MESSAGE)
        if running and not service.engine.running:
            raise ApiError(503, NOT_RUNNING_MESSAGE)
        return service

    def running(self) -> LlmEngine | None:
        """The engine when ready and running, else None (``/healthz``, ``/v1/models``)."""
        engine = self.engine if self.state == "ready" else None
        return engine if engine is not None and engine.running else None

    def ready_embeddings(self) -> EmbeddingService | None:
        return self.embeddings if self.state == "ready" else None


ASSISTANT: Final = web.AppKey("assistant", AssistantServices)
HEALTH: Final[web.AppKey[dict[str, HealthCheck]]] = web.AppKey("health")
STARTED_AT: Final = web.AppKey("started_at", float)
UP_SINCE: Final = web.AppKey("up_since", float)  # time.monotonic() at start: the uptime

__all__ = [
    "ASSISTANT",
    "DISABLED_MESSAGE",
    "HEALTH",
    "LOADING_MESSAGE",
    "STARTED_AT",
    "UP_SINCE",
    "AssistantServices",
    "AssistantState",
    "HealthCheck",
]
