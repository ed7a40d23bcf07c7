"""Where the gateway keeps its data by default (a light module: every command imports it)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    """Per-user data directory (``~/.local/share/bedside`` on Linux)."""
    return Path(platformdirs.user_data_dir("bedside", appauthor=False))


PRIVATE_FILE_MODE = 0o600


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable by its owner only (mode 0600).

    A new file is written and synced beside it, then renamed over the old one and the directory
    synced: a crash leaves the old file or the new one, never a mix. Raises OSError.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
