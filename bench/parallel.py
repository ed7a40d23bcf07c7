"""Two sequences at once: the local engine's parallel sequences (``assistant.parallel``) against
one at a time, in this process, with the embedded Gemma 3 270M.

(a) Throughput: total generated tokens per second with 2 concurrent streams (two conversations,
    each in its own sequence, decoded in one batch per step) vs 1 stream, on the same engine
    (``parallel = 2``), over ``ROUNDS`` alternating rounds; the ratio is the median of the rounds.
(b) A chat behind a running reply: time to first token of a short chat sent while a long reply
    (``LONG_TOKENS``) is generating, with ``parallel = 2`` (it runs beside) vs ``parallel = 1``
    (it waits for the long reply to end), best of the rounds.

Prints ONE JSON object. The model is assembled in .bench/ (bench/llm.py's data directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from gateway.assistant import AssistantSettings, Engine, format_gemma3

BENCH_DIR = Path(__file__).resolve().parents[1] / ".bench"
THREADS = os.cpu_count() or 1
TOKENS = 128
LONG_TOKENS = 192
CHAT_TOKENS = 8
ROUNDS = 3
PROMPTS = [
    "Write a detailed nursing handover note for a patient with fever.",
    "Explain, step by step, how to take a manual blood pressure reading.",
]
CHAT = "Quick question: what is the normal range of SpO2?"


def prompt(text: str) -> str:
    return format_gemma3([{"role": "user", "content": text}])


async def run_stream(engine: Engine, text: str, max_tokens: int, seed: int) -> tuple[int, float]:
    """Tokens generated and the time the last one arrived."""
    finished = await engine.complete(
        prompt(text), max_tokens=max_tokens, temperature=0.7, seed=seed
    )
    return finished.usage.completion_tokens, time.perf_counter()


async def throughput(engine: Engine, streams: int, seed: int) -> float:
    """Total tokens per second of ``streams`` concurrent streams (prompts cached beforehand)."""
    started = time.perf_counter()
    done = await asyncio.gather(
        *(run_stream(engine, PROMPTS[i], TOKENS, seed + i) for i in range(streams))
    )
    tokens = sum(n for n, _ in done)
    return tokens / (max(t for _, t in done) - started)


async def chat_behind_reply(engine: Engine) -> float:
    """TTFT of a chat sent while a long reply generates."""
    async with engine.stream(
        prompt(PROMPTS[0]), max_tokens=LONG_TOKENS, temperature=0.7, seed=1
    ) as long:
        await anext(long)
        sent = time.perf_counter()
        async with engine.stream(prompt(CHAT), max_tokens=CHAT_TOKENS, temperature=0.0) as chat:
            await anext(chat)
            ttft = time.perf_counter() - sent
            async for _ in chat:
                pass
        async for _ in long:
            pass
    return ttft


async def measure() -> dict[str, Any]:
    data_dir = BENCH_DIR / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = AssistantSettings(n_threads=THREADS, n_ctx=4096)
    two = Engine(settings.model_copy(update={"parallel": 2}), data_dir=data_dir, progress=False)
    one = Engine(settings.model_copy(update={"parallel": 1}), data_dir=data_dir, progress=False)
    async with two, one:
        for engine in (two, one):  # warm-up: the prompts in the caches
            for text in (*PROMPTS, CHAT):
                await engine.complete(prompt(text), max_tokens=2)
        single: list[float] = []
        double: list[float] = []
        for round_ in range(ROUNDS):
            single.append(await throughput(two, 1, 10 * round_))
            double.append(await throughput(two, 2, 10 * round_))
        beside: list[float] = []
        behind: list[float] = []
        for _ in range(ROUNDS):
            beside.append(await chat_behind_reply(two))
            behind.append(await chat_behind_reply(one))
    ratio = statistics.median(d / s for d, s in zip(double, single, strict=True))
    return {
        "bench": "parallel",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "model": "gemma-3-270m",
        "threads": THREADS,
        "a_throughput": {
            "tokens_per_stream": TOKENS,
            "one_stream_tok_s": round(statistics.median(single), 2),
            "two_streams_total_tok_s": round(statistics.median(double), 2),
            "ratio_two_to_one": round(ratio, 3),
            "rounds": ROUNDS,
        },
        "b_chat_behind_a_reply": {
            "long_reply_tokens": LONG_TOKENS,
            "chat_ttft_s_parallel_2": round(min(beside), 3),
            "chat_ttft_s_parallel_1": round(min(behind), 3),
            "speedup": round(min(behind) / min(beside), 1),
        },
    }


def main() -> None:
    print(json.dumps(asyncio.run(measure())))


if __name__ == "__main__":
    main()
