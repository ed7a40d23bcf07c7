"""The Gemma 3 turn format, applied whether or not the GGUF carries a template.

As Gemma 3's own chat template does: a system message is folded into the first user turn
(followed by a blank line), each turn is ``<start_of_turn>{user|model}\\n{content}<end_of_turn>\\n``
with its content trimmed, turns alternate strictly starting with the user, and the generation
prompt ``<start_of_turn>model\\n`` closes the text. ``<bos>`` is not written: the engine adds it
when it tokenizes the prompt.

Message text must not contain the control tokens themselves: the engine tokenizes prompts with
special tokens enabled, so ``<end_of_turn>`` inside a message (say, from a retrieved document)
would forge a turn. Such text is refused with :class:`ChatFormatError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from gateway.assistant.errors import ChatFormatError

START_OF_TURN: Final = "<start_of_turn>"
END_OF_TURN: Final = "<end_of_turn>"
GENERATION_PROMPT: Final = f"{START_OF_TURN}model\n"
# Gemma 3 vocabulary control tokens whose text would change the conversation's structure.
CONTROL_TOKENS: Final = (START_OF_TURN, END_OF_TURN, "<bos>", "<eos>", "<pad>")
SYSTEM_ROLES: Final = frozenset({"system", "developer"})  # OpenAI's newer name for system
TURN_ROLE: Final = {"user": "user", "assistant": "model"}  # message role → Gemma turn role
SYSTEM_SEPARATOR: Final = "\n\n"


def _content(index: int, message: Mapping[str, str]) -> tuple[str, str]:
    try:
        role, content = message["role"], message["content"]
    except KeyError as exc:
        raise ChatFormatError(f"messages[{index}]: missing {exc.args[0]!r}") from None
    if not isinstance(content, str):
        raise ChatFormatError(f"messages[{index}].content: expected text")
    for token in CONTROL_TOKENS:
        if token in content:
            raise ChatFormatError(
                f"messages[{index}].content contains the control token {token}; "
                "remove it (it would change the conversation's turns)"
            )
    return role, content.strip()


def format_gemma3(
    messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
) -> str:
    """The prompt text for ``messages`` (``[{"role": ..., "content": ...}, ...]``).

    Roles: ``system`` (or ``developer``) first only, then ``user`` and ``assistant`` alternating,
    starting with ``user``; with ``add_generation_prompt`` the last message must be the user's.
    """
    items = [_content(i, m) for i, m in enumerate(messages)]
    system = ""
    start = 0
    if items and items[0][0] in SYSTEM_ROLES:
        system, start = items[0][1], 1
    turns = items[start:]
    if not turns:
        raise ChatFormatError("messages: expected at least one user message")
    parts: list[str] = []
    for offset, (role, content) in enumerate(turns):
        index = start + offset
        expected = "user" if offset % 2 == 0 else "assistant"
        if role in SYSTEM_ROLES:
            raise ChatFormatError(f"messages[{index}]: a {role} message may only come first")
        if role not in TURN_ROLE:
            raise ChatFormatError(
                f"messages[{index}].role: {role!r} is not one of system, user, assistant"
            )
        if role != expected:
            raise ChatFormatError(
                f"messages[{index}]: expected a {expected} message (turns must alternate "
                f"user/assistant, starting with user), got {role}"
            )
        text = system + SYSTEM_SEPARATOR + content if offset == 0 and system else content
        parts.append(f"{START_OF_TURN}{TURN_ROLE[role]}\n{text}{END_OF_TURN}\n")
    if add_generation_prompt:
        if turns[-1][0] != "user":
            raise ChatFormatError(
                f"messages[{len(items) - 1}]: the last message must be the user's for the "
                "model to answer"
            )
        parts.append(GENERATION_PROMPT)
    return "".join(parts)
