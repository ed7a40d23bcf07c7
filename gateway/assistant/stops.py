"""Stop strings over streamed text: release text as soon as no stop string can start in it,
hold back a tail that might still become one, and cut at the stop string that appears first.

The outcome does not depend on how the text was split into pieces: it is the text cut before the
earliest occurrence of any stop string (the longest, of those starting at the same place).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed decoded text piece by piece; :meth:`feed` returns what may be released now and
    :meth:`flush` what remains at the end. :attr:`matched` names the stop string that cut the
    text (everything from it on is dropped). Empty stop strings are ignored."""

    __slots__ = ("_pending", "_stops", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._pending = ""
        self.matched: str | None = None

    def _best_match(self, buffer: str) -> tuple[int, str] | None:
        found: tuple[int, str] | None = None
        for stop in self._stops:
            at = buffer.find(stop)
            if at >= 0 and (
                found is None or at < found[0] or (at == found[0] and len(stop) > len(found[1]))
            ):
                found = (at, stop)
        return found

    def _open_start(self, buffer: str, limit: int) -> int | None:
        """The first position ≤ ``limit`` where a stop string (longer than what is there) could
        still be completed by more text."""
        for start in range(max(0, len(buffer) - max(map(len, self._stops)) + 1), limit + 1):
            tail = buffer[start:]
            if any(len(stop) > len(tail) and stop.startswith(tail) for stop in self._stops):
                return start
        return None

    def feed(self, text: str) -> str:
        if self.matched is not None or not self._stops:
            return "" if self.matched is not None else text
        buffer = self._pending + text
        found = self._best_match(buffer)
        limit = found[0] if found is not None else len(buffer) - 1
        undecided = self._open_start(buffer, limit) if buffer else None
        if undecided is not None:  # a stop string may yet start here: wait for more text
            self._pending = buffer[undecided:]
            return buffer[:undecided]
        self._pending = ""
        if found is not None:
            self.matched = found[1]
            return buffer[: found[0]]
        return buffer

    def flush(self) -> str:
        """At the end of generation: the held-back text, cut at a stop string if one is in it."""
        buffer, self._pending = self._pending, ""
        if self.matched is not None:
            return ""
        found = self._best_match(buffer)
        if found is not None:
            self.matched = found[1]
            return buffer[: found[0]]
        return buffer
