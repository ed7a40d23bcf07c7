"""A conversation's prompt as the engine takes it: the text the model holds, grown by appending.

The local engine keeps it as tokens (:class:`TokenContext`): each appended text is tokenized once,
so the prompt of the next request starts with exactly the tokens whose KV the context still holds
(prefix reuse, see :mod:`gateway.assistant.engine`). A remote server takes text and tokenizes it
itself (:class:`TextContext`); its prompt cache matches the common token prefix on its side. Its
token count is the server's: the prompt and completion tokens of the last request.

Both start empty; :meth:`start` sets a new conversation's first prompt (the engine adds ``<bos>``),
:meth:`append` adds text, :meth:`prompt` is what the next request sends (with ``extra`` after it,
not kept), :meth:`observe` tells the context a request's usage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.assistant.stream import Usage


class PromptContext(Protocol):
    def start(self, text: str) -> None: ...

    def append(self, text: str) -> None: ...

    def prompt(self, extra: str = "") -> str | list[int]: ...

    def transcript(self) -> str: ...

    def observe(self, usage: Usage) -> None: ...

    @property
    def empty(self) -> bool: ...

    def __len__(self) -> int: ...  # tokens


class TokenContext:
    """The prompt as tokens, tokenized by the local engine."""

    def __init__(
        self,
        tokenize: Callable[[str, bool], list[int]],
        detokenize: Callable[[list[int]], str],
    ) -> None:
        self._tokenize = tokenize  # (text, add_bos) -> tokens, special tokens parsed
        self._detokenize = detokenize
        self._tokens: list[int] = []

    def start(self, text: str) -> None:
        self._tokens = self._tokenize(text, True)

    def append(self, text: str) -> None:
        if text:
            self._tokens += self._tokenize(text, False)

    def prompt(self, extra: str = "") -> list[int]:
        if not self._tokens:
            return self._tokenize(extra, True)
        return self._tokens + (self._tokenize(extra, False) if extra else [])

    def transcript(self) -> str:
        return self._detokenize(self._tokens)

    def observe(self, usage: Usage) -> None:
        """Counted exactly already: nothing to learn."""

    @property
    def empty(self) -> bool:
        return not self._tokens

    def __len__(self) -> int:
        return len(self._tokens)


class TextContext:
    """The prompt as text, for a server that tokenizes it; counted by the server."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._counted = 0

    def start(self, text: str) -> None:
        self._parts = [text]

    def append(self, text: str) -> None:
        if text:
            self._parts.append(text)

    def prompt(self, extra: str = "") -> str:
        return "".join(self._parts) + extra

    def transcript(self) -> str:
        return self.prompt()

    def observe(self, usage: Usage) -> None:
        self._counted = usage.prompt_tokens + usage.completion_tokens

    @property
    def empty(self) -> bool:
        return not self._parts

    def __len__(self) -> int:
        return self._counted
