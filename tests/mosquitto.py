"""A private mosquitto broker on 127.0.0.1 for the tests and the benchmarks (``bench/``).

Never the system service: the broker runs from a generated config in its own directory on a free
port, with persistence there (so a stop/start keeps queued messages of persistent sessions, as a
hospital broker would), optionally with TLS or mutual TLS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tests.processes import LOOPBACK, free_port

START_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 15.0
POLL_INTERVAL_S: Final = 0.02


class BrokerError(RuntimeError):
    """mosquitto is missing or did not start."""


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """Server certificate and key, the CA for client certificates, and whether mTLS is required."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_client_cert: bool = False


class Mosquitto:
    """One mosquitto process; ``start()`` returns once it accepts connections."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: BrokerTls | None = None,
        executable: str = "mosquitto",
        max_inflight: int = 100,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise BrokerError(
                f"{executable!r} not found; install it (Debian: apt-get install mosquitto)"
            )
        self.executable = found
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.max_inflight = max_inflight  # QoS 1 messages in flight to one client
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{LOOPBACK}:{self.port}"

    def _config(self) -> str:
        lines = [
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.directory}/",
            # Persistent sessions (the receiver's) may queue many messages while disconnected.
            "max_queued_messages 1000000",
            f"max_inflight_messages {self.max_inflight}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # do not drop to 'mosquitto': it could not read our files
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_client_cert else 'false'}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.executable, "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self.process.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                )
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(POLL_INTERVAL_S)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on {self.port} within {START_TIMEOUT_S} s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Orderly stop (SIGTERM): mosquitto saves its persistence file."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): what was not saved is lost."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
