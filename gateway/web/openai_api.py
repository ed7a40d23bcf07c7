"""The OpenAI-compatible API: ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions`` (streamed as server-sent events, or not) and ``POST /v1/embeddings``.

The official ``openai`` client works against it unchanged (``base_url=http://host:port/v1``,
``api_key`` = the gateway's bearer token). Chat messages are put in the Gemma 3 turn format
(:func:`gateway.assistant.chatformat.format_gemma3`) and run on the engine; a conversation that
grows turn by turn reuses the KV cache of its common prefix (``usage.prompt_tokens_details.
cached_tokens`` says how many prompt tokens came from it).

Supported request fields: ``model``, ``messages`` (text content), ``stream``,
``stream_options.include_usage``, ``max_tokens`` / ``max_completion_tokens``, ``temperature``,
``top_p``, ``stop`` (up to 4), ``seed``, ``presence_penalty``, ``frequency_penalty``,
``response_format`` ``text`` or ``json_object`` (grammar-constrained JSON), ``n`` = 1; ``user``,
``metadata``, ``store``, ``service_tier`` and ``parallel_tool_calls`` are accepted and ignored.
Anything else (tools, logprobs, logit_bias, images, n > 1) is a 400 naming the parameter.
Every error has OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from gateway.assistant.chatformat import format_gemma3
from gateway.assistant.errors import (
    ChatFormatError,
    EngineClosedError,
    EngineError,
    EngineTimeoutError,
    PromptError,
    RemoteEngineError,
)
from gateway.assistant.stream import Finished, StreamEvent, TextPiece
from gateway.web.errors import ApiError, compact_json, parse_body
from gateway.web.openai_models import ChatCompletionRequest, ChatMessage, EmbeddingRequest
from gateway.web.services import ASSISTANT, STARTED_AT
from gateway.web.sse import sse_frame, start_stream

if TYPE_CHECKING:
    from gateway.assistant.backend import LlmEngine

log = logging.getLogger(__name__)

OWNER: Final = "bedside"
MAX_STOP_STRINGS: Final = 4  # OpenAI API reference: "Up to 4 sequences"
MAX_EMBEDDING_INPUTS: Final = 2048  # OpenAI API reference: "must not exceed ... 2048 dimensions"
DEFAULT_TEMPERATURE: Final = 1.0  # OpenAI API reference default
DEFAULT_TOP_P: Final = 1.0
SEED_MODULUS: Final = 0xFFFFFFFF  # llama.cpp seeds are u32 below LLAMA_DEFAULT_SEED
FINISH_REASONS: Final = {"stop": "stop", "length": "length"}


# -- errors ----------------------------------------------------------------------------------------


def _engine_error(exc: EngineError) -> ApiError:
    if isinstance(exc, PromptError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, EngineTimeoutError):
        return ApiError(504, str(exc), code="timeout")
    if isinstance(exc, EngineClosedError):
        return ApiError(503, f"the assistant is not available: {exc}")
    if isinstance(exc, RemoteEngineError):
        return ApiError(502, str(exc), code="inference_server_failed")
    return ApiError(500, str(exc))


# -- models ----------------------------------------------------------------------------------------


def _model_cards(app: web.Application) -> list[dict[str, Any]]:
    """The models ready now: none while the assistant loads or is disabled."""
    cards: list[dict[str, Any]] = []
    assistant = app[ASSISTANT]
    engine = assistant.running()
    if engine is not None:
        info = engine.model_info
        try:
            created = int(info.file.stat().st_mtime) if info.file is not None else None
        except OSError:
            created = None
        if created is None:  # a remote model, or its file gone
            created = int(app[STARTED_AT])
        cards.append({"id": info.name, "object": "model", "created": created, "owned_by": OWNER})
    embeddings = assistant.ready_embeddings()
    if embeddings is not None:
        cards.append(
            {
                "id": embeddings.name,
                "object": "model",
                "created": int(app[STARTED_AT]),
                "owned_by": OWNER,
            }
        )
    return cards


def _model_not_found(name: str, cards: Sequence[dict[str, Any]]) -> ApiError:
    known = ", ".join(card["id"] for card in cards) or "none"
    return ApiError(
        404,
        f"the model {name!r} does not exist here; available: {known}",
        param="model",
        code="model_not_found",
    )


async def list_models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": _model_cards(request.app)}, dumps=compact_json
    )


async def retrieve_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    cards = _model_cards(request.app)
    for card in cards:
        if card["id"] == name:
            return web.json_response(card, dumps=compact_json)
    raise _model_not_found(name, cards)


# -- chat completions ------------------------------------------------------------------------------


def _unsupported(request: ChatCompletionRequest) -> ApiError | None:
    if request.n not in {None, 1}:
        return ApiError(400, "n: only 1 choice per request is supported", param="n")
    if request.logprobs or request.top_logprobs:
        return ApiError(400, "logprobs are not supported", param="logprobs")
    if request.logit_bias:
        return ApiError(400, "logit_bias is not supported", param="logit_bias")
    if request.tools or request.tool_choice not in {None, "none"}:
        return ApiError(400, "tools are not supported by this server", param="tools")
    return None


def _stop_strings(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop: at most {MAX_STOP_STRINGS} sequences", param="stop")
    if any(not s for s in stops):
        raise ApiError(400, "stop: sequences must not be empty", param="stop")
    return stops


def _message_text(index: int, message: ChatMessage) -> str:
    content = message.content
    if content is None:
        raise ApiError(400, f"messages[{index}].content is required", param=f"messages.{index}")
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part_index, part in enumerate(content):
        kind = part.get("type")
        text = part.get("text")
        if kind != "text" or not isinstance(text, str):
            raise ApiError(
                400,
                f"messages[{index}].content[{part_index}]: only text parts are supported "
                f"(got type {kind!r})",
                param=f"messages.{index}.content.{part_index}",
            )
        texts.append(text.strip())
    return "".join(texts)


def chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """The Gemma 3 prompt for OpenAI chat messages (text parts joined as Gemma's template does)."""
    plain = [{"role": m.role, "content": _message_text(i, m)} for i, m in enumerate(messages)]
    try:
        return format_gemma3(plain)
    except ChatFormatError as exc:
        raise ApiError(400, str(exc), param="messages") from exc


def _usage(finished: Finished) -> dict[str, Any]:
    usage = finished.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _timings(finished: Finished) -> dict[str, Any]:
    """llama-server's ``timings`` (milliseconds), and the part of them spent in llama.cpp."""
    usage = finished.usage
    return {
        "cache_n": usage.cached_tokens,
        "prompt_n": usage.tokens_evaluated,
        "prompt_ms": round(finished.prompt_s * 1000, 3),
        "predicted_n": usage.completion_tokens,
        "predicted_ms": round(finished.decode_s * 1000, 3),
        "compute_ms": round(finished.compute_s * 1000, 3),
    }


def _finish_reason(finished: Finished) -> str:
    reason = FINISH_REASONS.get(finished.finish_reason)
    if reason is None:  # cancelled under us: the engine is shutting down
        raise ApiError(503, "the request was cancelled: the assistant is shutting down")
    return reason


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatCompletionRequest)
    if (problem := _unsupported(body)) is not None:
        raise problem
    engine = request.app[ASSISTANT].running_engine()
    if body.model != engine.model_info.name:
        raise _model_not_found(body.model, _model_cards(request.app))
    prompt = chat_prompt(body.messages)
    options: dict[str, Any] = {
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        "top_p": DEFAULT_TOP_P if body.top_p is None else body.top_p,
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "stop": _stop_strings(body.stop),
        "seed": None if body.seed is None else body.seed % SEED_MODULUS,
    }
    if body.response_format is not None and body.response_format.type == "json_object":
        from llama_cpp.llama_grammar import JSON_GBNF

        options["grammar"] = JSON_GBNF
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = engine.model_info.name
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await _stream_chat(
            request, engine, prompt, options, completion_id, created, model, include_usage
        )
    async with engine.stream(prompt, **options) as generation:
        try:
            finished = None
            async for event in generation:
                if isinstance(event, Finished):
                    finished = event
        except EngineError as exc:
            raise _engine_error(exc) from exc
    if finished is None:  # pragma: no cover - the iteration always ends with Finished
        raise ApiError(500, "the generation ended without a result")
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": finished.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": _finish_reason(finished),
                }
            ],
            "usage": _usage(finished),
            "timings": _timings(finished),
        },
        dumps=compact_json,
    )


def sse(data: object) -> bytes:
    return sse_frame(data if isinstance(data, str) else compact_json(data))


async def _stream_chat(
    request: web.Request,
    engine: LlmEngine,
    prompt: str,
    options: dict[str, Any],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> web.StreamResponse:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    # A text chunk differs from the next only in its text: the frame around it is rendered once.
    marker = "\u0000"
    before, after = sse(chunk({"content": marker})).split(compact_json(marker).encode())

    def text_frame(text: str) -> bytes:
        return before + compact_json(text).encode() + after

    async with engine.stream(prompt, **options) as generation:
        try:  # errors before the first event are still plain JSON errors with a status
            event = await anext(generation)
        except EngineError as exc:
            raise _engine_error(exc) from exc
        response = await start_stream(request)

        try:
            batch: list[StreamEvent] = [event]
            frames = [sse(chunk({"role": "assistant", "content": ""}))]
            finished = False
            failed: EngineError | None = None
            while True:
                for item in batch:
                    if isinstance(item, TextPiece):
                        frames.append(text_frame(item.text))
                        continue
                    frames.append(
                        sse(chunk({}, _finish_reason(item)) | {"timings": _timings(item)})
                    )
                    if include_usage:
                        usage_chunk = chunk({}) | {"choices": [], "usage": _usage(item)}
                        frames.append(sse(usage_chunk))
                    finished = True
                await response.write(b"".join(frames))  # one write per batch of events
                if failed is not None:
                    raise failed
                if finished:
                    break
                batch = [await anext(generation)]
                try:  # the events already here go out in the same write
                    while generation.pending():
                        batch.append(await anext(generation))
                except EngineError as exc:
                    failed = exc
                frames = []
        except (EngineError, ApiError) as exc:
            # Headers are sent: report in the stream, as OpenAI does ("error" in a data event).
            error = exc if isinstance(exc, ApiError) else _engine_error(exc)
            await response.write(sse(error.body()))
        except ConnectionResetError:
            log.debug("client went away during a streamed completion; generation cancelled")
            return response
        await response.write(sse("[DONE]"))
        await response.write_eof()
    return response


# -- embeddings ------------------------------------------------------------------------------------


def _embedding_texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise ApiError(400, "input: give at least one text", param="input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise ApiError(400, f"input: at most {MAX_EMBEDDING_INPUTS} texts", param="input")
    strings: list[str] = []
    for item in texts:
        if not isinstance(item, str):
            raise ApiError(400, "input: token arrays are not supported; send text", param="input")
        if not item:
            raise ApiError(400, "input: texts must not be empty", param="input")
        strings.append(item)
    return strings


async def embeddings(request: web.Request) -> web.Response:
    body = await parse_body(request, EmbeddingRequest)
    service = request.app[ASSISTANT].embedding_service()
    if body.model != service.name:
        raise _model_not_found(body.model, _model_cards(request.app))
    texts = _embedding_texts(body.input)
    try:
        vectors, tokens = await service.embed(texts)
    except EngineError as exc:
        raise ApiError(500, str(exc)) from exc
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise ApiError(
            400,
            f"dimensions: {body.model} produces {vectors.shape[1]}-dimensional embeddings",
            param="dimensions",
        )
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        encoded: str | list[float] = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else [float(x) for x in vector]
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": service.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        dumps=compact_json,
    )


def add_routes(app: web.Application) -> None:
    """Register the ``/v1`` routes."""
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
