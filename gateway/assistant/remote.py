"""The assistant's model on a remote OpenAI-compatible completion server (``assistant.backend =
"remote"``): llama.cpp's ``llama-server``, ``llama_cpp.server`` or vLLM on a GPU box, reached at
``assistant.base_url`` (``http://gpu-box:8080/v1``) with ``assistant.api_key``.

The same API as the local :class:`~gateway.assistant.engine.Engine` (:mod:`.backend`), over
``POST {base_url}/completions`` with ``stream: true``:

- prompts are text (:class:`~gateway.assistant.context.TextContext`); the server adds ``<bos>``
  and tokenizes. ``cache_prompt: true`` asks llama-server to reuse the KV of the longest common
  prefix (llama_cpp.server does so by itself, vLLM with prefix caching on).
- stop strings are matched here, as the text arrives (:class:`~.stops.StopMatcher`), so that the
  consultation knows *which* stop ended a reply; the response is then closed and the server stops
  generating at its next token. The server's own end of generation arrives as ``finish_reason``.
- a grammar goes as ``grammar`` (GBNF: llama-server and llama_cpp.server apply it); a server that
  ignores it is held to it by the caller's check (the consultation keeps only well-formed tags and
  only allow-listed codes reach a sensor; a report must parse against its schema).
- usage comes from the server: ``usage`` in the last chunk (``stream_options.include_usage``),
  cached prompt tokens from ``usage.prompt_tokens_details.cached_tokens`` (the OpenAI field, vLLM
  and llama-server) or llama-server's ``timings.cache_n``. A server that sends no usage while
  streaming (llama_cpp.server) is asked for the prompt's token count at its tokenize endpoint, and
  the completion tokens are the chunks received; a server that does not say what it took from its
  cache has ``tokens_evaluated`` equal to the prompt tokens (all of it counted as evaluated).
- timeouts: ``assistant.connect_timeout_s`` to connect, the request's own deadline for the rest;
  cancelling closes the response. A server that cannot be reached, breaks off mid-reply or answers
  with an error raises :class:`~.errors.RemoteEngineError` with one sentence saying what happened;
  the next request tries again (the consultation keeps what was said so far).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Final, Unpack

import aiohttp

from gateway.assistant.backend import EngineBase
from gateway.assistant.context import TextContext
from gateway.assistant.errors import (
    ContextOverflowError,
    EngineClosedError,
    EngineError,
    EngineTimeoutError,
    ModelLoadError,
    PromptError,
    RemoteEngineError,
    RemoteUnreachableError,
)
from gateway.assistant.settings import AssistantSettings
from gateway.assistant.stops import StopMatcher
from gateway.assistant.stream import (
    Finished,
    FinishReason,
    Generation,
    ModelInfo,
    Request,
    StreamOptions,
    TextPiece,
    Usage,
    build_request,
)

__all__ = ["RemoteEngine", "server_root"]

log = logging.getLogger(__name__)

CHAT_FORMAT: Final = "gemma3"  # the consultation writes Gemma 3 turns (chatformat.py)
ERROR_TEXT_MAX: Final = 200  # characters of a server's error message repeated to the user
# Where servers count a text's tokens: llama_cpp.server, then llama-server and vLLM.
TOKENIZE_PATHS: Final = ("/extras/tokenize/count", "/tokenize")
SSE_DATA: Final = b"data:"
SSE_DONE: Final = "[DONE]"


def server_root(base_url: str) -> str:
    """The server's root (``http://gpu:8080`` for ``http://gpu:8080/v1``): its tokenize
    endpoints live there, outside the OpenAI API."""
    return base_url.removesuffix("/v1")


class RemoteEngine(EngineBase):
    """An OpenAI-compatible completion server as the assistant's engine (module text)."""

    def __init__(self, settings: AssistantSettings) -> None:
        if settings.base_url is None:
            raise ValueError("assistant.base_url: the remote server's URL is required")
        self.settings = settings
        self.base_url = settings.base_url
        self.on_finished: Callable[[Finished], None] | None = None
        """Told of every finished request (metrics)."""
        self._session: aiohttp.ClientSession | None = None
        self._info: ModelInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting = 0  # requests sent, no response yet
        self._count_paths: tuple[str, ...] = TOKENIZE_PATHS  # narrowed to the one that answers

    # -- lifecycle --

    async def start(self) -> ModelInfo:
        """Open the connection pool and ask the server which models it serves: the configured
        one must be among them (or, none configured, the server must serve exactly one)."""
        if self._session is not None:
            raise EngineError("the engine is already started")
        headers = {"Accept": "application/json"}
        if self.settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self.settings.api_key.get_secret_value()}"
        ca_file = self.settings.ca_file
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
            ),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_s),
        )
        try:
            name = await self._model_name()
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        self._info = ModelInfo(
            name=name,
            file=None,
            sha256=None,
            n_ctx=self.settings.n_ctx,
            n_ctx_train=None,
            chat_format=CHAT_FORMAT,
            endpoint=self.base_url,
        )
        log.info("assistant model %s served by %s", name, self.base_url)
        return self._info

    async def _model_name(self) -> str:
        configured = self.settings.remote_model
        try:
            served = await self.models()
        except RemoteUnreachableError as exc:
            if configured is None:
                raise ModelLoadError(
                    f"{exc}; with the server down, set assistant.remote_model to the name of "
                    "the model it serves"
                ) from exc
            log.warning("%s; requests fail until it answers", exc)
            return configured
        if configured is None:
            if len(served) != 1:
                raise ModelLoadError(
                    f"the inference server at {self.base_url} serves {len(served)} models "
                    f"({', '.join(served) or 'none'}): set assistant.remote_model to one"
                )
            return served[0]
        if configured not in served:
            raise ModelLoadError(
                f"the inference server at {self.base_url} does not serve {configured!r} "
                f"(assistant.remote_model); it serves: {', '.join(served) or 'nothing'}"
            )
        return configured

    async def models(self) -> list[str]:
        """The model names the server lists at ``GET {base_url}/models``."""
        body = await self._get_json("/models")
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, list):
            raise RemoteEngineError(
                f"the inference server at {self.base_url} answered /models without a model "
                "list: is base_url the OpenAI API root (…/v1)?"
            )
        return [str(card["id"]) for card in data if isinstance(card, Mapping) and "id" in card]

    async def close(self) -> None:
        """Cancel the running requests and close the connections."""
        session, self._session = self._session, None
        self._info = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if session is not None:
            await session.close()

    @property
    def running(self) -> bool:
        return self._session is not None and self._info is not None

    @property
    def model_info(self) -> ModelInfo:
        if self._info is None:
            raise EngineClosedError("the engine is not running: await engine.start() first")
        return self._info

    @property
    def queued(self) -> int:
        """Requests sent that the server has not started answering."""
        return self._waiting

    def context(self) -> TextContext:
        """A new, empty conversation prompt (text: the server tokenizes)."""
        return TextContext()

    # -- generation --

    def stream(self, prompt: str | list[int], **options: Unpack[StreamOptions]) -> Generation:
        """Send a request; iterate the returned :class:`Generation` for its events."""
        if self._session is None or self._info is None:
            raise EngineClosedError("the engine is not running: await engine.start() first")
        if not isinstance(prompt, str):
            raise PromptError("prompt: a remote inference server takes text, not token ids")
        request = build_request(self.settings, prompt, **options)
        loop = request.sink.loop
        task = loop.create_task(self._serve(request), name="remote-completion")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def interrupt() -> None:  # from Generation, on any thread (a dropped one: the GC's)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to stop
                loop.call_soon_threadsafe(task.cancel)

        request.on_cancel = interrupt
        return Generation.of(request)

    async def _serve(self, request: Request) -> None:
        """Run ``request`` on the server, handing its events to the request's sink."""
        run = _Run(request)
        try:
            async with asyncio.timeout(request.deadline - time.monotonic()):
                await self._generate(run)
                if run.server_usage is None and isinstance(request.prompt, str):
                    run.prompt_tokens = await self.count_tokens(request.prompt)
                finished = run.finish()
        except asyncio.CancelledError:
            if not request.cancel.is_set():  # the engine is closing
                request.sink.put(EngineClosedError("the engine closed during the request"))
                raise
            finished = run.finish(cancelled=True)
        except TimeoutError:
            request.sink.put(EngineTimeoutError(request.timeout_s, run.usage()))
            return
        except EngineError as exc:
            request.sink.put(exc)
            return
        request.sink.put(finished)
        if self.on_finished is not None:
            self.on_finished(finished)

    async def _generate(self, run: _Run) -> None:
        request = run.request
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model_info.name,
            "prompt": request.prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "seed": sampling.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
            "cache_prompt": True,
        }
        if request.grammar is not None:
            body["grammar"] = request.grammar
        async with contextlib.aclosing(self._events("/completions", body, run)) as chunks:
            async for chunk in chunks:
                run.take(chunk)
                if run.matcher.matched is not None or request.cancel.is_set():
                    return  # closing the response stops the server at its next token

    # -- HTTP --

    def _session_or_closed(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise EngineClosedError("the engine is not running: await engine.start() first")
        return self._session

    def _unreachable(self, exc: BaseException) -> RemoteUnreachableError:
        reason = str(exc) or type(exc).__name__
        return RemoteUnreachableError(
            f"the inference server at {self.base_url} cannot be reached ({reason}); check that "
            "it runs and the URL (assistant.base_url, bedside doctor)"
        )

    def _broken(self, exc: BaseException) -> RemoteEngineError:
        """One sentence for a reply that broke off."""
        if isinstance(exc, ValueError):
            return RemoteEngineError(
                f"the inference server at {self.base_url} sent an event that is not JSON ({exc})"
            )
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return RemoteEngineError(
                f"the inference server at {self.base_url} went away mid-reply "
                f"({str(exc) or type(exc).__name__}); the text so far is kept, and the next "
                "message tries again"
            )
        return self._unreachable(exc)

    async def _refusal(self, response: aiohttp.ClientResponse) -> EngineError:
        """One sentence for an error status, with the server's own message where it gave one."""
        status = response.status
        try:
            body = await response.json(content_type=None)
        except (aiohttp.ClientError, ValueError):
            body = None
        message = _error_message(body) or response.reason or ""
        if status in {401, 403}:
            return RemoteEngineError(
                f"the inference server at {self.base_url} refused the API key (HTTP {status}); "
                "check assistant.api_key"
            )
        if status == 404 and "model" in message.lower():
            name = self._info.name if self._info is not None else self.settings.remote_model
            return RemoteEngineError(
                f"the inference server at {self.base_url} does not serve {name!r}: {message}"
            )
        if status == 400 and "context" in message.lower():
            numbers = sorted({int(n) for n in re.findall(r"\d+", message)})
            if len(numbers) == 2:  # "requested N tokens, the context holds M" in some words
                return ContextOverflowError(numbers[1], numbers[0])
            return PromptError(f"the prompt does not fit the server's context: {message}")
        return RemoteEngineError(
            f"the inference server at {self.base_url} answered HTTP {status}: {message}".rstrip(
                ": "
            )
        )

    async def _get_json(self, path: str) -> Any:
        session = self._session_or_closed()
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                async with session.get(self.base_url + path) as response:
                    if response.status >= 400:
                        raise await self._refusal(response)
                    return await response.json(content_type=None)
        except EngineError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise self._unreachable(exc) from exc

    async def _events(
        self, path: str, body: Mapping[str, Any], run: _Run
    ) -> AsyncGenerator[Mapping[str, Any]]:
        """The JSON data of the server-sent events of ``POST {base_url}{path}``."""
        session = self._session_or_closed()
        self._waiting += 1
        try:
            response = await session.post(self.base_url + path, json=body)
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unreachable(exc) from exc
        finally:
            self._waiting -= 1
        read_all = False
        try:
            if response.status >= 400:
                raise await self._refusal(response)
            async for line in response.content:
                chunk = self._event_data(line)
                if chunk is SSE_DONE:
                    read_all = run.done = True
                    return
                if isinstance(chunk, Mapping):
                    yield chunk
            read_all = True
        except (ValueError, aiohttp.ClientError, OSError) as exc:
            raise self._broken(exc) from exc
        finally:  # stopped here, cancelled or broken: drop the connection, the server stops
            if read_all:
                response.release()
            else:
                response.close()
        if not run.done:
            raise RemoteEngineError(
                f"the inference server at {self.base_url} ended the reply without finishing it"
            )

    def _event_data(self, line: bytes) -> Mapping[str, Any] | str | None:
        """A server-sent event line's JSON data, :data:`SSE_DONE` at the end, None for other
        lines (comments such as ``: ping``, event names, blank separators)."""
        if not line.startswith(SSE_DATA):
            return None
        data = line[len(SSE_DATA) :].strip().decode("utf-8", errors="replace")
        if data == SSE_DONE:
            return SSE_DONE
        chunk = json.loads(data)
        if not isinstance(chunk, Mapping):
            return None
        if "error" in chunk:
            raise RemoteEngineError(
                f"the inference server at {self.base_url} failed mid-reply: "
                f"{_error_message(chunk) or 'no reason given'}"
            )
        return chunk

    async def count_tokens(self, text: str) -> int | None:
        """The server's token count of ``text`` as a prompt (``<bos>`` included), from its
        tokenize endpoint; None when it has none."""
        session = self._session_or_closed()
        root = server_root(self.base_url)
        paths = self._count_paths
        body = {"input": text, "content": text, "prompt": text, "model": self.model_info.name}
        for path in paths:
            try:
                async with session.post(root + path, json=body) as response:
                    if response.status >= 400:
                        continue
                    answer = await response.json(content_type=None)
            except (aiohttp.ClientError, OSError, ValueError):
                continue
            count = _token_count(answer)
            if count is not None:
                self._count_paths = (path,)
                return count
        if paths == TOKENIZE_PATHS:  # none answers: this server counts no tokens
            self._count_paths = ()
        return None


class _Run:
    """What one request has received so far."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.matcher = StopMatcher(request.stop)
        self.returned: list[str] = []
        self.chunks = 0  # chunks with text: one per token on the servers named in the module text
        self.server_usage: Mapping[str, Any] | None = None
        self.timings: Mapping[str, Any] | None = None
        self.prompt_tokens: int | None = None  # counted at the tokenize endpoint
        self.finish_reason: FinishReason | None = None
        self.done = False

    def _release(self, text: str) -> None:
        if text:
            self.returned.append(text)
            self.request.sink.put(TextPiece(text))

    def take(self, chunk: Mapping[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.server_usage = usage
        timings = chunk.get("timings")
        if isinstance(timings, Mapping):
            self.timings = timings
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or self.done:
            return
        choice = choices[0]
        text = choice.get("text") or ""
        if text:
            if self.first_at is None:
                self.first_at = time.monotonic()
            self.chunks += 1
            self._release(self.matcher.feed(text))
            if self.matcher.matched is not None:
                self.finish_reason, self.done = "stop", True
                return
        reason = choice.get("finish_reason")
        if reason is not None:
            self.finish_reason = "length" if reason == "length" else "stop"
            self._release(self.matcher.flush())
            self.done = True

    def usage(self) -> Usage:
        usage = self.server_usage or {}
        prompt = _int(usage.get("prompt_tokens"))
        if prompt is None:
            prompt = self.prompt_tokens or 0
        completion = _int(usage.get("completion_tokens"))
        if completion is None:
            completion = self.chunks
        cached = _cached_tokens(usage, self.timings)
        evaluated = prompt - cached if cached is not None else prompt
        return Usage(prompt, max(evaluated, 0), completion)

    def finish(self, *, cancelled: bool = False) -> Finished:
        ended = time.monotonic()
        first = self.first_at if self.first_at is not None else ended
        usage = self.usage()
        return Finished(
            finish_reason="cancelled" if cancelled else (self.finish_reason or "stop"),
            usage=usage,
            stop=self.matcher.matched,
            text="".join(self.returned),
            queued_s=0.0,
            prompt_s=first - self.started,
            decode_s=ended - first,
        )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cached_tokens(usage: Mapping[str, Any], timings: Mapping[str, Any] | None) -> int | None:
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping) and (cached := _int(details.get("cached_tokens"))) is not None:
        return cached
    if timings is not None:
        return _int(timings.get("cache_n"))
    return None


def _token_count(answer: object) -> int | None:
    if not isinstance(answer, Mapping):
        return None
    if (count := _int(answer.get("count"))) is not None:
        return count
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _error_message(body: object) -> str | None:
    """The message of an OpenAI-style error body (``{"error": {"message": …}}``), or FastAPI's
    ``{"detail": …}``, cut to one line of reasonable length."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error", body.get("detail"))
    if isinstance(error, Mapping):
        error = error.get("message")
    if isinstance(error, list) and error and isinstance(error[0], Mapping):
        error = error[0].get("msg")
    if not isinstance(error, str) or not error.strip():
        return None
    line = error.strip().splitlines()[0]
    return line if len(line) <= ERROR_TEXT_MAX else line[: ERROR_TEXT_MAX - 1] + "…"
