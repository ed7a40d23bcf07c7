"""GBNF grammars for the consultation (llama.cpp ``grammars/README.md``): the tag completions of
the ``<request_observation>`` protocol and JSON-schema-constrained output (pure text builders).

- :func:`tag_completion` finishes a tag the model opened: only `` code="<allowed>"/>``.
- :func:`any_code_completion` finishes it with any well-formed LOINC code, for when no sensor can
  measure anything: the tag stays well-formed, and the gateway answers "unavailable" without
  calling a sensor.
- :func:`forced_tag` produces exactly one complete tag (the ``require`` intake).
- :func:`json_schema` converts a JSON schema with llama-cpp-python's converter (a port of
  llama.cpp's ``json_schema_to_grammar.py``: types, ``enum``, ``required``,
  ``additionalProperties: false``, ``minLength``/``maxLength``, ``maxItems``; whitespace limited to
  single spaces so that a model cannot run away in it).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from gateway.assistant.prompts import TAG_ATTRIBUTE, TAG_CLOSE, is_loinc_code, tag

# GBNF string literals escape like JSON strings (llama.cpp grammars/README.md, "Terminals").
_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A LOINC code: 1-7 digits, "-", a check digit.
LOINC_RULE: Final = '[0-9] [0-9]? [0-9]? [0-9]? [0-9]? [0-9]? [0-9]? "-" [0-9]'


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + "".join(_ESCAPES.get(c, c) for c in text) + '"'


def _checked(codes: Collection[str]) -> list[str]:
    bad = sorted(c for c in codes if not is_loinc_code(c))
    if bad:
        raise ValueError(f"codes: {', '.join(map(repr, bad))} are not LOINC codes (1234-5)")
    return sorted(set(codes))


def tag_completion(codes: Collection[str]) -> str:
    """The rest of an opened tag, `` code="X"/>``, X one of ``codes`` (at least one)."""
    allowed = _checked(codes)
    if not allowed:
        raise ValueError("codes: give at least one allowed code")
    alternatives = " | ".join(literal(c) for c in allowed)
    return f"root ::= {literal(TAG_ATTRIBUTE)} code {literal(TAG_CLOSE)}\ncode ::= {alternatives}\n"


def any_code_completion() -> str:
    """The rest of an opened tag with any well-formed LOINC code."""
    return f"root ::= {literal(TAG_ATTRIBUTE)} code {literal(TAG_CLOSE)}\ncode ::= {LOINC_RULE}\n"


def forced_tag(code: str) -> str:
    """Exactly ``<request_observation code="X"/>``."""
    (checked,) = _checked([code])
    return f"root ::= {literal(tag(checked))}\n"


def json_schema(schema: Mapping[str, Any], order: Sequence[str] = ()) -> str:
    """The GBNF of ``schema``; properties are written in ``order`` (then the rest)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar: str = json_schema_to_gbnf(json.dumps(schema), list(order))
    return grammar
