"""Errors of consultations; the HTTP API maps each class to a status
(:func:`gateway.web.consultations.api_error`)."""

from __future__ import annotations

from gateway.assistant.errors import AssistantError


class ConsultationError(AssistantError):
    """Root of the consultation errors."""


class ConsultationNotFoundError(ConsultationError, LookupError):
    def __init__(self, cid: str) -> None:
        self.consultation_id = cid
        super().__init__(f"consultation {cid!r}: no such consultation on this gateway")


class ConsultationClosedError(ConsultationError):
    def __init__(self, cid: str, why: str = "is closed; its draft report is in its record") -> None:
        self.consultation_id = cid
        super().__init__(
            f"consultation {cid!r} {why} (GET the consultation); create a new consultation to "
            "continue"
        )


class ConsultationBusyError(ConsultationError):
    def __init__(self, cid: str, doing: str) -> None:
        self.consultation_id = cid
        super().__init__(
            f"consultation {cid!r} is {doing}; wait until it has finished (one message at a time)"
        )


class ConsultationInputError(ConsultationError, ValueError):
    """A message or a ``require`` list the consultation cannot take."""


class ConsultationFullError(ConsultationError):
    """The conversation no longer fits the model's context window."""


class ReportError(ConsultationError):
    """The draft report could not be made."""
