"""The local clinical assistant: a llama.cpp engine in its own thread, the model manifest, the
Gemma 3 chat format (the consultation loop and report drafting build on these)."""

from gateway.assistant.chatformat import format_gemma3
from gateway.assistant.engine import (
    Engine,
    Finished,
    FinishReason,
    Generation,
    ModelInfo,
    StreamEvent,
    TextPiece,
    Usage,
)
from gateway.assistant.settings import AssistantSettings

__all__ = [
    "AssistantSettings",
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
