"""Errors and request bodies of every route: the JSON error in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``, :class:`ApiError` (raised by handlers,
answered by the application's error middleware), and reading a JSON body into a strict model
(unknown fields rejected) with its validation errors as one 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "server_error",
    504: "timeout",
}

B = TypeVar("B", bound=BaseModel)


def compact_json(data: object) -> str:
    """JSON text without spaces, non-ASCII kept (the responses' ``dumps``)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error in OpenAI's shape."""
    return web.json_response(
        error_body(status, message, param=param, code=code),
        status=status,
        headers=headers,
        dumps=compact_json,
    )


class ApiError(Exception):
    """Raised by handlers; the app's error middleware answers with :meth:`response`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> web.Response:
        return error_response(
            self.status, self.message, param=self.param, code=self.code, headers=self.headers
        )


class StrictBody(BaseModel):
    """A request body model: unknown fields are a 400 naming them."""

    model_config = ConfigDict(extra="forbid")


def validation_error(exc: ValidationError) -> ApiError:
    """A 400 listing every problem (``field: message``), ``param`` naming the first field."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )
    return ApiError(400, message, param=param)


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body when ``optional``). A body past the
    app's ``client_max_size`` raises ``HTTPRequestEntityTooLarge`` (a 413)."""
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def parse_body(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    """The request's JSON body validated as ``model``; :class:`ApiError` (400) otherwise."""
    try:
        return model.model_validate(await json_body(request, optional=optional))
    except ValidationError as exc:
        raise validation_error(exc) from exc
