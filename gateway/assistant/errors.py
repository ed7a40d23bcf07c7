"""Errors of the local assistant: model files, chat formatting and the llama.cpp engine.

Callers match on the class, never on the message; every message names the input and what was
expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import BedsideError

if TYPE_CHECKING:
    from gateway.assistant.stream import Usage


class AssistantError(BedsideError):
    """Root of the assistant's errors."""


class ManifestError(AssistantError, ValueError):
    """``models/manifest.toml`` (or a model name looked up in it) does not validate."""


class ModelFileError(AssistantError):
    """A model file that is missing or cannot be read or assembled."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class ChecksumMismatchError(ModelFileError):
    """A model file whose sha256 is not the one the manifest records."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            path,
            f"sha256 {actual} does not match the manifest's {expected}; the file is damaged or "
            "not the listed model: delete it (an embedded model is assembled again) or replace "
            "it with the listed file",
        )


class ChatFormatError(AssistantError, ValueError):
    """Chat messages that cannot be put in the model's turn format."""


class EngineError(AssistantError):
    """The engine could not run a request."""


class EngineClosedError(EngineError):
    """The engine is not started, or closed."""


class ModelLoadError(EngineError):
    """llama.cpp could not load the model file."""


class GrammarError(EngineError, ValueError):
    """A GBNF grammar that llama.cpp cannot parse."""


class PromptError(EngineError, ValueError):
    """A prompt the engine cannot run (empty, or too long)."""


class ContextOverflowError(PromptError):
    """A prompt that does not fit in the context window (with room for one token)."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"prompt of {prompt_tokens} tokens does not fit the context of {n_ctx} tokens; "
            "shorten the conversation or raise n_ctx"
        )


class RemoteEngineError(EngineError):
    """The remote inference server could not be reached, went away, or refused a request."""


class RemoteUnreachableError(RemoteEngineError):
    """The remote inference server could not be connected to."""


class EngineTimeoutError(EngineError, TimeoutError):
    """A request that did not finish within its timeout (queueing included).

    ``usage`` tells how far it got when the engine thread had started it (``None`` while queued).
    """

    def __init__(self, timeout_s: float, usage: Usage | None = None) -> None:
        self.timeout_s = timeout_s
        self.usage = usage
        super().__init__(f"generation did not finish within {timeout_s:g} s")
