"""The demo's live view: every kind the demo runs has its latest value on screen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from rich.console import Console

from gateway.demo import DEMO_KINDS, VITALS, live_view


def test_the_live_view_shows_a_vital_of_every_demo_kind() -> None:
    gateway = SimpleNamespace(
        identity=SimpleNamespace(gateway_id="gw-test"),
        manager=SimpleNamespace(statuses=list),
    )
    latest = {code: f"value-{code}" for code, _ in VITALS}
    console = Console(record=True, width=200)
    console.print(live_view(cast(Any, gateway), latest, 12.0))
    text = console.export_text()
    for code, label in VITALS:
        assert label in text
        assert f"value-{code}" in text
    labels = " ".join(label for _, label in VITALS).lower()
    words = {
        "ecg": "ecg",
        "spo2": "spo2",
        "bp": "blood pressure",
        "thermo": "temperature",
        "glucose": "glucose",
    }
    assert set(DEMO_KINDS) == set(words)
    for kind in DEMO_KINDS:
        assert words[kind] in labels, kind
