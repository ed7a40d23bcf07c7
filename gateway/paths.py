"""Where the gateway keeps its data by default (a light module: every command imports it)."""

from __future__ import annotations

from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    """Per-user data directory (``~/.local/share/bedside`` on Linux)."""
    return Path(platformdirs.user_data_dir("bedside", appauthor=False))
