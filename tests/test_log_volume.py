"""Logs at the default level do not grow with the number of notifications: the standard set
streams for a while and the gateway's INFO log says (almost) nothing per reading — what months
of unattended running write to the journal is bounded by events, not by data."""

from __future__ import annotations

import logging
from pathlib import Path

from tests.harness import running_gateway, wait_until
from tests.sim_central import FAST

KINDS = ("ecg", "spo2", "bp", "thermo")


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("gateway"):
            self.lines.append(f"{record.name}: {record.getMessage()}")


async def test_log_lines_do_not_grow_with_notifications(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, KINDS, overrides=FAST) as run:
        await wait_until(
            lambda: all(run.states().get(kind) == "streaming" for kind in KINDS),
            30,
            "the standard set streaming",
        )
        handler = Counting()
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(handler)
        try:
            before = sum(s.notifications for s in run.manager.statuses())
            await wait_until(
                lambda: sum(s.notifications for s in run.manager.statuses()) > before + 300,
                60,
                "300 notifications",
            )
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        assert len(handler.lines) <= 5, handler.lines  # events, not readings
