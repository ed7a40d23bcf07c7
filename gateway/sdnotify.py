"""systemd notification protocol (sd_notify(3)): READY, STATUS, WATCHDOG, STOPPING,
EXTEND_TIMEOUT_USEC.

A datagram to ``$NOTIFY_SOCKET``; without that variable (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable
from typing import Final, TypeVar

T = TypeVar("T")
EXTEND_EVERY_S: Final = 10.0


def notify(*fields: str) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=…"``); True when a manager received them."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(fields).encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd expects pings at, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def while_starting(
    awaitable: Awaitable[T], status: str, every_s: float = EXTEND_EVERY_S
) -> T:
    """Await ``awaitable``, telling systemd every ``every_s`` it takes that the start goes on
    (``EXTEND_TIMEOUT_USEC``, three periods ahead) and what it is doing (``STATUS``): for work
    done once at start that can outlast the unit's start timeout, such as a database upgrade."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return task.result()
            notify(f"EXTEND_TIMEOUT_USEC={int(3 * every_s * 1_000_000):d}", f"STATUS={status}")
    finally:
        task.cancel()  # a no-op once it is done
