"""The running gateway's API as the commands on the same machine reach it.

The gateway writes the address it listens on to ``DATA_DIR/api-url`` (mode 0600) once it
serves, so commands find it even on a port picked at start (``--http-port 0``, the demo). The
token is ``http.token``, else the file ``http.token_file``, else ``DATA_DIR/api-token``, else
``DATA_DIR/demo-token``; it is only read here, never created. Requests use the standard library
(a command needs no event loop); every failure is one sentence.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import BedsideError
from gateway.paths import write_private_file

if TYPE_CHECKING:
    from pathlib import Path

    from gateway.web.settings import HttpSettings

API_URL_FILE: Final = "api-url"
TOKEN_FILES: Final = ("api-token", "demo-token")
REQUEST_TIMEOUT_S: Final = 30.0


class LocalApiError(BedsideError):
    """The running gateway could not be reached or refused the request (one sentence);
    ``status`` is the HTTP status of a refusal (None: nothing answered)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def write_api_url(data_dir: Path, host: str, port: int | None, *, tls: bool = False) -> None:
    """Record where the API listens (a wildcard host is reached on loopback)."""
    if port is None:
        return
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a comparison
    if ":" in reach:
        reach = f"[{reach}]"
    scheme = "https" if tls else "http"
    write_private_file(data_dir / API_URL_FILE, f"{scheme}://{reach}:{port}\n")


class LocalApi:
    """Requests to the gateway serving from ``data_dir``."""

    def __init__(
        self, http: HttpSettings, data_dir: Path, url: str | None = None, token: str | None = None
    ) -> None:
        """``url``, ``token``: given by the user (else as the gateway recorded them)."""
        self.url = (url or self._url(http, data_dir)).rstrip("/")
        self._token = token or self._read_token(http, data_dir)
        self._context: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            # the gateway's own self-signed certificate, where it made one; else the system's CAs
            own = data_dir / "tls" / "cert.pem"
            ca = http.tls_cert_file or (own if own.exists() else None)
            self._context = ssl.create_default_context(cafile=str(ca) if ca else None)
            self._context.check_hostname = ca is None  # our own certificate: pinned by file

    @staticmethod
    def _url(http: HttpSettings, data_dir: Path) -> str:
        recorded = data_dir / API_URL_FILE
        if recorded.exists():
            return recorded.read_text(encoding="utf-8").strip()
        return f"http://{http.host}:{http.port}"

    @staticmethod
    def _read_token(http: HttpSettings, data_dir: Path) -> str:
        if http.token is not None:
            return http.token.get_secret_value().strip()
        paths = [http.token_file] if http.token_file is not None else []
        paths.extend(data_dir / name for name in TOKEN_FILES)
        for path in paths:
            try:
                return path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LocalApiError(f"{path}: cannot read the API token ({exc.strerror})") from exc
        raise LocalApiError(
            f"no API token in {data_dir} (api-token or demo-token); start the gateway once, or "
            "give the data directory it runs with (--data-dir)"
        )

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
    ) -> Any:
        """The JSON answer of ``method path``; LocalApiError with the gateway's own message for
        an error answer, or with what to check when nothing answers."""
        return request_json(
            self.url,
            method,
            path,
            self._token,
            body,
            raw=raw,
            context=self._context,
            unreachable=(
                f"no gateway answers at {self.url}; is it running (bedside run, or bedside demo)"
                " with this data directory?"
            ),
        )


def request_json(
    url: str,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    context: ssl.SSLContext | None = None,
    unreachable: str | None = None,
) -> Any:
    """``method url+path`` with a bearer token and a JSON body (or ``raw`` bytes, sent as
    ``application/octet-stream``); the JSON answer, or :class:`LocalApiError` with the server's
    own message (``status`` set) or ``unreachable``."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    kind = "application/octet-stream" if raw is not None else "application/json"
    request = urllib.request.Request(  # noqa: S310 - the gateway's URL, given by its user
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": kind},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310 - the gateway's URL, given by its user
            request, timeout=REQUEST_TIMEOUT_S, context=context
        ) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise LocalApiError(_message(exc), status=exc.code) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise LocalApiError(unreachable or f"no gateway answers at {url}") from exc


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"the gateway answered {exc.code} {exc.reason}"
