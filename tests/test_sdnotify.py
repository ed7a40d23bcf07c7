"""sd_notify against a real Unix datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from gateway import sdnotify


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_notify_sends_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1", "STATUS=streaming 4 sensors")
        assert server.recv(1024) == b"READY=1\nSTATUS=streaming 4 sensors"


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval_s() is None


async def test_a_long_start_extends_the_start_timeout_until_it_is_done(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        loop = asyncio.get_running_loop()
        received: list[bytes] = []

        async def upgrade() -> str:  # done once systemd has been told twice
            while len(received) < 2:
                received.append(await loop.sock_recv(server, 1024))
            return "opened"

        assert await sdnotify.while_starting(upgrade(), "upgrading", every_s=0.01) == "opened"
    assert received[0] == b"EXTEND_TIMEOUT_USEC=30000\nSTATUS=upgrading"


async def test_a_quick_start_says_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert await sdnotify.while_starting(asyncio.sleep(0, "opened"), "upgrading") == "opened"
        with pytest.raises(BlockingIOError):
            server.recv(1024)
