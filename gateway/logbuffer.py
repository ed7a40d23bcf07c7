"""The gateway's recent log lines, kept in memory for the technician (the page, the diagnostics
bundle), with patient data taken out.

The gateway's own log lines name sensors and uplinks, never values; the one kind of patient data
that can reach a line is a patient's reference or identifier (a claim, an assignment). Those are
replaced by ``[patient]`` before a line is kept, so neither the page nor a diagnostics bundle
carries them.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from typing import Final

KEEP_LINES: Final = 500
_PATIENT: Final = re.compile(
    r"(?:https?://\S+/)?Patient/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
    r"|urn:oid:[0-9.]+\|\S+"
)
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    return _PATIENT.sub("[patient]", text)


class RecentLog(logging.Handler):
    """Keeps the last :data:`KEEP_LINES` formatted lines."""

    def __init__(self, keep: int = KEEP_LINES, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.lines: deque[str] = deque(maxlen=keep)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(redact(self.format(record)))
        except Exception:  # noqa: BLE001 - a log handler must never raise
            self.handleError(record)

    def tail(self, count: int) -> list[str]:
        return list(self.lines)[-count:] if count > 0 else []
