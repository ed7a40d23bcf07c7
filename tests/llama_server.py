"""``llama_cpp.server`` (llama-cpp-python's OpenAI-compatible server) as a child process, for the
remote-backend tests: the embedded model, one thread, on a free loopback port, started through
bench/llm.py's runner (which applies the engine's choice of CPU buffers, see
gateway/assistant/llama_load.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.processes import LOOPBACK, free_port

RUNNER = Path(__file__).resolve().parents[1] / "bench" / "llm.py"
READY_TIMEOUT_S = 120.0
API_KEY = "remote-test-key-0123456789"
MODEL = "gemma-3-270m"


class LlamaCppServer:
    """One server process; :meth:`kill` and :meth:`start` again on the same port."""

    def __init__(self, model_path: Path, log_path: Path, *, n_ctx: int = 4096) -> None:
        self.model_path = model_path
        self.log_path = log_path
        self.n_ctx = n_ctx
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def start(self) -> None:
        argv = [
            *(sys.executable, str(RUNNER), "--llama-cpp-server"),
            *("--model", str(self.model_path), "--model_alias", MODEL),
            *("--n_ctx", str(self.n_ctx), "--n_threads", "1", "--n_threads_batch", "1"),
            *("--logits_all", "false", "--api_key", API_KEY),
            *("--host", LOOPBACK, "--port", str(self.port)),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        request = urllib.request.Request(
            f"{self.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"llama_cpp.server ended at start: {self.log_path.read_text()[-2000:]}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError),
                urllib.request.urlopen(request, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)  # polling a child process's port: no event to wait for
        raise AssertionError("llama_cpp.server did not answer within 120 s")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
