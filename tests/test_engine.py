"""The LLM engine with the real llama.cpp and the embedded Gemma 3 270M (loaded once per session).

The model is tiny and not instruction-tuned: tests assert structure (events, counts, finish
reasons, what the KV cache holds), never the wording. Where a test needs generation of a known
shape it constrains it with a GBNF grammar; everything runs greedy or with a fixed seed.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.assistant import (
    AssistantSettings,
    Engine,
    Finished,
    ModelInfo,
    TextPiece,
    Usage,
    format_gemma3,
)
from gateway.assistant.errors import (
    ChatFormatError,
    ContextOverflowError,
    EngineClosedError,
    EngineTimeoutError,
    GrammarError,
    PromptError,
)
from gateway.assistant.llama_slots import Slot
from gateway.assistant.llama_thread import choose_slot
from gateway.assistant.manifest import STAMPS_FILE, load_manifest
from gateway.assistant.stops import StopMatcher

N_CTX = 2048
SETTINGS = AssistantSettings(n_ctx=N_CTX, n_threads=2, seed=1234)
GREEDY: dict[str, Any] = {"temperature": 0.0}
# Grammars that force the shape of the output (GBNF, llama.cpp grammars/README.md).
LONG = "root ::= [a-z ]{1000,}"  # never allows end of generation before 1000 characters
ALPHABET = 'root ::= "alpha beta gamma delta"'
YES_NO = 'root ::= "yes" | "no"'
READING = r'root ::= "{\"hr\": " [1-9] [0-9] [0-9]? "}"'


def chat(text: str) -> str:
    return format_gemma3([{"role": "user", "content": text}])


PROMPT = chat("List three vital signs.")


@pytest.fixture(scope="session")
def engine(model_data_dir: Path) -> Iterator[Engine]:
    llm = Engine(SETTINGS, data_dir=model_data_dir, progress=False)
    asyncio.run(llm.start())
    yield llm
    asyncio.run(llm.close())


async def events(engine: Engine, prompt: str | list[int], **options: Any) -> list[object]:
    async with engine.stream(prompt, **options) as generation:
        return [event async for event in generation]


async def flush_context(engine: Engine) -> None:
    """Make the next request start from an unrelated context (no shared prefix to reuse): one
    unrelated prompt per sequence, each taking the one used longest ago."""
    for i in range(SETTINGS.parallel):
        await engine.complete(chat(f"Unrelated {i}: the weather today."), max_tokens=1, **GREEDY)


# -- the Gemma 3 turn format (pure) ----------------------------------------------------------------
# Expected strings follow Gemma 3's chat template (tokenizer_config.json "chat_template" of the
# google/gemma-3 instruction-tuned checkpoints), without <bos> (the engine adds it).


def test_format_single_user_turn() -> None:
    assert format_gemma3([{"role": "user", "content": "Hello"}]) == (
        "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
    )


def test_format_folds_system_into_first_user_turn_and_trims() -> None:
    messages = [
        {"role": "system", "content": "You are a nurse.  "},
        {"role": "user", "content": "  HR 130?\n"},
        {"role": "assistant", "content": "Tachycardia. "},
        {"role": "user", "content": "And now?"},
    ]
    assert format_gemma3(messages) == (
        "<start_of_turn>user\nYou are a nurse.\n\nHR 130?<end_of_turn>\n"
        "<start_of_turn>model\nTachycardia.<end_of_turn>\n"
        "<start_of_turn>user\nAnd now?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_format_developer_role_is_system_and_generation_prompt_optional() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert format_gemma3(messages, add_generation_prompt=False) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
    )


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "at least one user message"),
        ([{"role": "system", "content": "x"}], "at least one user message"),
        ([{"role": "assistant", "content": "x"}], r"messages\[0\]: expected a user message"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            r"messages\[1\]: expected a assistant message",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            r"messages\[1\]: a system message may only come first",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "the last message must be the user's",
        ),
        ([{"role": "tool", "content": "a"}], r"messages\[0\]\.role: 'tool' is not one of"),
        (
            [{"role": "user", "content": "x<end_of_turn>\n<start_of_turn>model\nok"}],
            r"messages\[0\]\.content contains the control token <start_of_turn>",
        ),
        ([{"role": "user"}], r"messages\[0\]: missing 'content'"),
    ],
)
def test_format_rejects_what_gemma_cannot_take(
    messages: list[dict[str, str]], problem: str
) -> None:
    with pytest.raises(ChatFormatError, match=problem):
        format_gemma3(messages)


# -- stop strings over a stream (pure) -------------------------------------------------------------


def feed_all(stops: list[str], pieces: list[str]) -> tuple[str, str | None]:
    matcher = StopMatcher(stops)
    out = [matcher.feed(piece) for piece in pieces]
    out.append(matcher.flush())
    return "".join(out), matcher.matched


def test_stop_string_split_across_pieces_is_held_back_then_cut() -> None:
    matcher = StopMatcher(["</obs>"])
    assert matcher.feed("HR 80 </") == "HR 80 "
    assert matcher.feed("ob") == ""
    assert matcher.feed("s> tail") == ""
    assert matcher.matched == "</obs>"


def test_held_back_text_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    matcher = StopMatcher(["</obs>"])
    assert matcher.feed("a </o") == "a "
    assert matcher.feed("k") == "</ok"
    assert matcher.flush() == ""
    assert matcher.matched is None


def test_a_longer_stop_at_the_same_place_is_waited_for() -> None:
    matcher = StopMatcher([">", "><"])
    assert matcher.feed("<<>") == "<<"
    assert matcher.matched is None
    assert matcher.feed("<") == ""
    assert matcher.matched == "><"
    ended = StopMatcher([">", "><"])
    assert (ended.feed("a>"), ended.flush(), ended.matched) == ("a", "", ">")


def test_earliest_stop_wins_and_longest_at_the_same_place() -> None:
    assert feed_all(["cd", "b"], ["abcd"]) == ("a", "b")
    assert feed_all(["ab", "abc"], ["xabcd"]) == ("x", "abc")
    assert feed_all([], ["no stops"]) == ("no stops", None)
    assert feed_all(["", "z"], ["a", "b"]) == ("ab", None)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(
    text=st.text(alphabet="ab<>/", max_size=40),
    stops=st.lists(st.text(alphabet="ab<>/", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_stop_matcher_equals_cutting_the_whole_text(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    hits = [(text.find(s), -len(s), s) for s in stops if s in text]
    expected = (text[: min(hits)[0]], min(hits)[2]) if hits else (text, None)
    assert feed_all(stops, pieces) == expected


# -- the engine with the real model ----------------------------------------------------------------


def test_model_is_assembled_verified_and_described(engine: Engine, model_data_dir: Path) -> None:
    entry = load_manifest().entry("gemma-3-270m")
    models = model_data_dir / "models"
    assert engine.model_info == ModelInfo(
        name="gemma-3-270m",
        file=models / entry.file,
        sha256=entry.sha256,
        n_ctx=N_CTX,
        n_ctx_train=32768,
        chat_format="gemma3",
    )
    assert (models / entry.file).stat().st_size == entry.size
    assert str(entry.sha256) in (models / STAMPS_FILE).read_text(encoding="utf-8")


def test_tokenize_detokenize_round_trip_and_control_tokens(engine: Engine) -> None:
    text = "SpO2 97 %, HR 72 /min — température 37,2 °C"
    tokens = engine.tokenize(text, add_bos=False)
    assert engine.detokenize(tokens) == text
    assert engine.tokenize("<start_of_turn>", add_bos=False) == [105]  # one control token
    assert engine.tokenize("hi")[0] == 2  # <bos>
    assert engine.detokenize(engine.tokenize(PROMPT)) == "<bos>" + PROMPT
    assert engine.detokenize(engine.tokenize(PROMPT), special=False) == PROMPT.replace(
        "<start_of_turn>", ""
    ).replace("<end_of_turn>", "")


async def test_stream_yields_pieces_then_one_finished(engine: Engine) -> None:
    got = await events(engine, PROMPT, max_tokens=12, **GREEDY)
    *pieces, last = got
    assert pieces
    texts = [p.text for p in pieces if isinstance(p, TextPiece) and p.text]
    assert len(texts) == len(pieces)
    assert isinstance(last, Finished)
    assert last.text == "".join(texts)
    assert last.usage.prompt_tokens == len(engine.tokenize(PROMPT))
    assert 1 <= last.usage.completion_tokens <= 12
    assert last.finish_reason in {"stop", "length"}


async def test_max_tokens_ends_with_length(engine: Engine) -> None:
    finished = await engine.complete(PROMPT, max_tokens=7, grammar=LONG, **GREEDY)
    assert (finished.finish_reason, finished.usage.completion_tokens, finished.stop) == (
        "length",
        7,
        None,
    )
    assert re.fullmatch(r"[a-z ]+", finished.text)


async def test_tokens_prompt_equals_text_prompt(engine: Engine) -> None:
    by_text = await engine.complete(PROMPT, max_tokens=6, **GREEDY)
    by_tokens = await engine.complete(engine.tokenize(PROMPT), max_tokens=6, **GREEDY)
    assert by_tokens.text == by_text.text
    assert by_tokens.usage.prompt_tokens == by_text.usage.prompt_tokens


async def test_grammar_constrains_the_text(engine: Engine) -> None:
    answer = await engine.complete(chat("Is 72 /min a normal heart rate?"), grammar=YES_NO)
    assert answer.text in {"yes", "no"}
    assert (answer.finish_reason, answer.stop) == ("stop", None)  # grammar done → end of turn
    reading = await engine.complete(chat("Heart rate as JSON."), grammar=READING, seed=7)
    assert re.fullmatch(r'\{"hr": [1-9][0-9]{1,2}\}', reading.text)


async def test_bad_grammar_is_a_grammar_error(engine: Engine) -> None:
    with pytest.raises(GrammarError, match="GBNF"):
        await engine.complete(PROMPT, grammar='root ::= ("yes" | ')
    with pytest.raises(GrammarError):
        await engine.complete(PROMPT, grammar='answer ::= "yes"')  # no root rule
    assert (await engine.complete(PROMPT, max_tokens=2, **GREEDY)).usage.completion_tokens >= 1


async def test_stop_string_cuts_text_and_context_keeps_only_returned_tokens(
    engine: Engine,
) -> None:
    prompt_tokens = engine.tokenize(PROMPT)
    finished = await engine.complete(PROMPT, grammar=ALPHABET, stop=["gamma"], **GREEDY)
    assert (finished.text, finished.stop, finished.finish_reason) == (
        "alpha beta ",
        "gamma",
        "stop",
    )
    context = await engine.context_tokens()
    assert context[: len(prompt_tokens)] == prompt_tokens
    kept = engine.detokenize(context[len(prompt_tokens) :])
    # exactly the generated tokens whose text was returned: a prefix of it, short of one token
    assert finished.text.startswith(kept)
    assert len(finished.text) - len(kept) <= len(" ")
    assert "gamma" not in kept
    # a prompt that appends to the returned text continues from the cache
    follow = PROMPT + finished.text + "gamma delta<end_of_turn>\n<start_of_turn>user\nOK?"
    again = await engine.complete(follow, max_tokens=1, **GREEDY)
    appended = again.usage.prompt_tokens - len(prompt_tokens)
    assert again.usage.tokens_evaluated <= appended
    assert again.usage.cached_tokens >= len(prompt_tokens)


async def test_kv_reuse_evaluates_only_the_injected_measurement(engine: Engine) -> None:
    """A consultation turn: ~1,200 tokens of context, then a measurement is injected (~25 tokens);
    only those are evaluated, not the whole prompt (docs/architecture.md: the KV cache holds the
    prefix across turns)."""
    history = " ".join(
        f"At {h:02d}:00 heart rate {60 + h} /min, SpO2 {90 + h % 9} %, BP {110 + h}/{70 + h}."
        for h in range(24)
    )
    first = chat(f"Observations of the last day: {history} {history} Summarise.")
    await flush_context(engine)
    reply = await engine.complete(first, max_tokens=16, **GREEDY)
    assert reply.usage.prompt_tokens > 1000
    assert reply.usage.tokens_evaluated >= reply.usage.prompt_tokens - 10  # cold: all of it
    injected = (
        "<end_of_turn>\n<start_of_turn>user\n"
        'New observation <obs code="8867-4">128 /min</obs>.<end_of_turn>\n'
        "<start_of_turn>model\n"
    )
    injected_tokens = len(engine.tokenize(injected, add_bos=False))
    assert 15 <= injected_tokens <= 40
    prompt = first + reply.text + injected
    turn = await engine.complete(prompt, max_tokens=4, **GREEDY)
    assert turn.usage.prompt_tokens == len(engine.tokenize(prompt))
    assert turn.usage.tokens_evaluated <= injected_tokens + 3
    assert turn.usage.cached_tokens >= reply.usage.prompt_tokens
    # the same prompt again: everything is cached but one token (for fresh logits)
    same = await engine.complete(prompt, max_tokens=1, grammar=LONG, **GREEDY)
    assert same.usage == Usage(turn.usage.prompt_tokens, 1, 1)


async def test_reused_prefix_gives_the_same_greedy_text_as_a_cold_context(
    engine: Engine,
) -> None:
    base = chat("Vital signs: HR 88 /min, SpO2 95 %, temperature 38.1 Cel. " * 20 + "Assess.")
    await flush_context(engine)
    reply = await engine.complete(base, max_tokens=10, **GREEDY)
    follow = base + reply.text + "<end_of_turn>\n<start_of_turn>user\nAnd the fever?"
    warm = await engine.complete(follow, max_tokens=16, **GREEDY)
    await flush_context(engine)
    cold = await engine.complete(follow, max_tokens=16, **GREEDY)
    assert warm.usage.tokens_evaluated < 30 < cold.usage.tokens_evaluated
    assert warm.text == cold.text


async def test_same_seed_same_sampled_text(engine: Engine) -> None:
    one = await engine.complete(PROMPT, max_tokens=16, temperature=1.0, seed=42)
    two = await engine.complete(PROMPT, max_tokens=16, temperature=1.0, seed=42)
    assert one.text == two.text


async def test_cancel_stops_the_worker_at_the_next_token(engine: Engine) -> None:
    prompt_len = len(engine.tokenize(PROMPT))
    generation = engine.stream(PROMPT, grammar=LONG, max_tokens=400, **GREEDY)
    pieces = 0
    async for event in generation:
        if isinstance(event, TextPiece):
            pieces += 1
            if pieces == 3:
                generation.cancel()
    finished = generation.finished
    assert finished is not None
    assert finished.finish_reason == "cancelled"
    assert 3 <= finished.usage.completion_tokens < 100
    assert len(await engine.context_tokens()) < prompt_len + 100


async def test_breaking_out_of_the_iteration_cancels(engine: Engine) -> None:
    prompt_len = len(engine.tokenize(PROMPT))
    async for event in engine.stream(PROMPT, grammar=LONG, max_tokens=400, **GREEDY):
        assert isinstance(event, TextPiece)
        break
    assert len(await engine.context_tokens()) < prompt_len + 100


async def test_cancelling_the_consuming_task_cancels(engine: Engine) -> None:
    prompt_len = len(engine.tokenize(PROMPT))
    started = asyncio.Event()

    async def consume() -> None:
        async with engine.stream(PROMPT, grammar=LONG, max_tokens=400, **GREEDY) as generation:
            async for _event in generation:
                started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await engine.context_tokens()) < prompt_len + 100


async def test_timeout_raises_and_stops_generation(engine: Engine) -> None:
    prompt_len = len(engine.tokenize(PROMPT))
    with pytest.raises(EngineTimeoutError) as caught:
        await engine.complete(PROMPT, grammar=LONG, max_tokens=400, timeout=0.3, **GREEDY)
    assert caught.value.timeout_s == 0.3
    if caught.value.usage is not None:  # the worker's report (it usually arrives first)
        assert caught.value.usage.completion_tokens < 400
    assert len(await engine.context_tokens()) < prompt_len + 400


async def test_timeout_counts_time_waiting_in_the_queue(engine: Engine) -> None:
    busy = [
        engine.stream(chat(f"Busy {i}."), grammar=LONG, max_tokens=400, **GREEDY)
        for i in range(SETTINGS.parallel)
    ]
    for generation in busy:
        await anext(generation)  # every sequence is generating
    with pytest.raises(EngineTimeoutError):
        await engine.complete(PROMPT, max_tokens=1, timeout=0.2)
    for generation in busy:
        await generation.aclose()
    # the engine serves the next request normally
    assert (await engine.complete(PROMPT, max_tokens=1, **GREEDY)).usage.completion_tokens == 1


async def test_more_requests_than_sequences_all_run(engine: Engine) -> None:
    results = await asyncio.gather(
        *(engine.complete(chat(f"Patient {i}."), max_tokens=5, grammar=LONG) for i in range(3))
    )
    assert [r.usage.completion_tokens for r in results] == [5, 5, 5]
    assert engine.queued == 0  # every request was taken off the queue
    assert [r.usage.prompt_tokens for r in results] == [
        len(engine.tokenize(chat(f"Patient {i}."))) for i in range(3)
    ]


async def test_a_chat_runs_beside_a_long_reply_and_each_keeps_its_prefix(engine: Engine) -> None:
    """Two sequences: a short chat finishes while a long reply is still generating, and each
    conversation continues on its own cached prefix afterwards."""
    consultation = chat("Consultation: write a long handover note for bed 4.")
    other = chat("A different question about the ward rota.")
    async with engine.stream(consultation, grammar=LONG, max_tokens=200, **GREEDY) as long:
        await anext(long)
        quick = await engine.complete(other, max_tokens=5, **GREEDY)
        assert long.finished is None  # still generating while the chat was answered
        rest = [event async for event in long]
    assert quick.usage.completion_tokens == 5
    done = rest[-1]
    assert isinstance(done, Finished)
    assert done.usage.completion_tokens == 200

    # each continues where its own sequence left off: only the new turn is evaluated
    turn = engine.tokenize("<end_of_turn>\n<start_of_turn>user\nGo on.", add_bos=False)
    again = await engine.complete(
        engine.tokenize(other) + engine.tokenize(quick.text, add_bos=False) + turn, max_tokens=1
    )
    assert again.usage.tokens_evaluated <= len(turn) + 4
    back = await engine.complete(
        engine.tokenize(consultation) + engine.tokenize(done.text, add_bos=False) + turn,
        max_tokens=1,
    )
    assert back.usage.tokens_evaluated <= len(turn) + 4


async def test_prompt_limits(engine: Engine) -> None:
    word = engine.tokenize(" pulse", add_bos=False)
    assert len(word) == 1
    with pytest.raises(ContextOverflowError, match=f"context of {N_CTX} tokens"):
        await engine.complete([2] + word * (N_CTX - 1), max_tokens=1)
    with pytest.raises(PromptError, match="empty"):
        await engine.complete([], max_tokens=1)
    near_full = [2] + word * (N_CTX - 6)
    finished = await engine.complete(near_full, grammar=LONG, max_tokens=100, **GREEDY)
    assert (finished.finish_reason, finished.usage.completion_tokens) == ("length", 5)
    with pytest.raises(ValueError, match="max_tokens"):
        engine.stream(PROMPT, max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        engine.stream(PROMPT, top_p=0)


async def test_close_fails_queued_requests_and_refuses_new_ones(model_data_dir: Path) -> None:
    llm = Engine(
        SETTINGS.model_copy(update={"parallel": 1}), data_dir=model_data_dir, progress=False
    )
    with pytest.raises(EngineClosedError):
        llm.stream(PROMPT)
    await llm.start()
    running = llm.stream(PROMPT, grammar=LONG, max_tokens=400, **GREEDY)
    first = await anext(running)
    assert isinstance(first, TextPiece)
    queued = llm.stream(PROMPT, max_tokens=1)
    await llm.close()
    outcome = [event async for event in running]
    assert isinstance(outcome[-1], Finished)
    assert outcome[-1].finish_reason == "cancelled"
    with pytest.raises(EngineClosedError):
        await anext(queued)
    with pytest.raises(EngineClosedError):
        llm.stream(PROMPT)
    with pytest.raises(EngineClosedError):
        llm.tokenize("x")
    await llm.close()  # idempotent


async def test_a_window_sized_swa_cache_is_reused_only_where_it_still_holds(
    model_data_dir: Path,
) -> None:
    """With swa_full=False Gemma 3's sliding-window layers keep only the last n_swa + n_ubatch
    positions (512 + 512 here): cutting back a little reuses the cache, cutting back past what
    the window still holds re-evaluates everything (llama-server's rule) instead of going on
    with missing positions."""
    settings = SETTINGS.model_copy(update={"swa_full": False})
    async with Engine(settings, data_dir=model_data_dir, progress=False) as llm:
        text = " ".join(f"Reading {i}: heart rate {60 + i % 40} /min." for i in range(200))
        tokens = llm.tokenize(text)[:1800]
        await llm.complete(tokens, max_tokens=1, **GREEDY)
        tail = llm.tokenize(" Assess.", add_bos=False)
        shallow = await llm.complete(tokens[:1790] + tail, max_tokens=1, **GREEDY)
        assert shallow.usage.tokens_evaluated == len(tail)
        deep = await llm.complete(tokens[:1100] + tail, max_tokens=1, **GREEDY)
        assert deep.usage.tokens_evaluated == deep.usage.prompt_tokens


async def test_an_unrelated_chat_does_not_evict_a_cached_conversation(engine: Engine) -> None:
    conversation = chat(" ".join(f"Reading {i}: heart rate {60 + i % 30} /min." for i in range(60)))
    question = chat("Unrelated: what is the capital of France?")
    await engine.complete(conversation, max_tokens=1, **GREEDY)
    await engine.complete(question, max_tokens=1, **GREEDY)  # takes the other sequence
    again = await engine.complete(conversation, max_tokens=1, **GREEDY)
    assert again.usage.tokens_evaluated == 1
    assert (await engine.complete(question, max_tokens=1, **GREEDY)).usage.tokens_evaluated == 1


def test_slot_choice_prefers_a_similar_then_an_empty_then_the_oldest() -> None:
    cached, empty, old = Slot(0, [2, 5, 6, 7, 8], 3.0), Slot(1), Slot(2, [2, 9, 9], 1.0)
    assert choose_slot([cached, empty, old], [2, 5, 6, 7, 8, 10]) is cached
    assert choose_slot([cached, empty, old], [2, 5, 11, 12, 13]) is empty  # 2 of 5 shared
    assert choose_slot([cached, old], [2, 5, 11, 12, 13]) is old
