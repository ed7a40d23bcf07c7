"""The local clinical assistant: a llama.cpp engine in its own thread, the model manifest, the
Gemma 3 chat format, the consultation loop and report drafting.

The names below load on first use: importing the package (or its light :mod:`.settings`, which
the configuration does) loads neither llama.cpp nor numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.assistant.chatformat import format_gemma3
    from gateway.assistant.engine import Engine
    from gateway.assistant.settings import AssistantSettings, ConsultationSettings
    from gateway.assistant.stream import (
        Finished,
        FinishReason,
        Generation,
        ModelInfo,
        StreamEvent,
        TextPiece,
        Usage,
    )

_WHERE = {
    "AssistantSettings": "gateway.assistant.settings",
    "ConsultationSettings": "gateway.assistant.settings",
    "Engine": "gateway.assistant.engine",
    "Generation": "gateway.assistant.stream",
    "FinishReason": "gateway.assistant.stream",
    "Finished": "gateway.assistant.stream",
    "ModelInfo": "gateway.assistant.stream",
    "StreamEvent": "gateway.assistant.stream",
    "TextPiece": "gateway.assistant.stream",
    "Usage": "gateway.assistant.stream",
    "format_gemma3": "gateway.assistant.chatformat",
}

__all__ = [
    "AssistantSettings",
    "ConsultationSettings",
    "Engine",
    "FinishReason",
    "Finished",
    "Generation",
    "ModelInfo",
    "StreamEvent",
    "TextPiece",
    "Usage",
    "format_gemma3",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
