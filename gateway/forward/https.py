"""HTTPS uplink: each outbox item POSTed as a FHIR transaction Bundle to the FHIR base URL.

FHIR R4 RESTful API §3.1.0.11 (transaction): ``POST [base]`` with the Bundle; the server answers
200 with a transaction-response Bundle. The Bundle's entries use ``ifNoneExist`` on the PHD
identifiers (conditional create), so sending the same Bundle twice creates nothing twice: retries
are idempotent.

Outcome of a POST, by class:

- 2xx: delivered.
- 429 (and 503) with ``Retry-After`` (RFC 9110 §10.2.3: seconds or an HTTP date): retry then.
- 408, 5xx, network errors, timeouts: retry with the backoff of their class.
- TLS failures (certificate, handshake): retry slowly (an operator must fix them).
- 3xx and other 4xx (400, 401, 403, 404, 412 multiple matches for ``ifNoneExist``, 422 …): dead
  letter with the server's reason (OperationOutcome ``diagnostics`` / ``details.text``); such an
  item is retried only by ``bedside outbox retry-dead``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Final

import aiohttp

from gateway.forward.errors import (
    ErrorClass,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.forward.settings import HttpsSettings
from gateway.store.models import OutboxItem

FHIR_JSON: Final = "application/fhir+json"
REASON_MAX_CHARS: Final = 500
_RETRY_STATUS: Final[dict[int, ErrorClass]] = {
    HTTPStatus.REQUEST_TIMEOUT: ErrorClass.SERVER,
    HTTPStatus.TOO_MANY_REQUESTS: ErrorClass.RATE_LIMITED,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def outcome_text(body: bytes) -> str:
    """The server's reason: OperationOutcome issue texts, else the start of the body."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in document.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            details = issue.get("details")
            detail_text = details.get("text") if isinstance(details, dict) else None
            text = issue.get("diagnostics") or detail_text or issue.get("code")
            if text:
                texts.append(str(text))
        if texts:
            return "; ".join(texts)[:REASON_MAX_CHARS]
    return body.decode("utf-8", errors="replace").strip()[:REASON_MAX_CHARS] or "(empty body)"


def https_ssl_context(settings: HttpsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=None if settings.ca_file is None else str(settings.ca_file)
    )
    if settings.cert_file is not None:
        context.load_cert_chain(
            str(settings.cert_file), None if settings.key_file is None else str(settings.key_file)
        )
    return context


class FhirClient:
    """POSTs Bundles to a FHIR base URL; one aiohttp session, opened with ``async with``."""

    def __init__(self, settings: HttpsSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FhirClient:
        ssl_context: ssl.SSLContext | bool = (
            https_ssl_context(self.settings)
            if self.settings.base_url.startswith("https")
            else False
        )
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON, "Prefer": "return=minimal"}
        if self.settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.bearer_token.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            headers=headers,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_bundle(self, payload: bytes, bundle_id: str) -> None:
        """POST one Bundle; raises Transient-/PermanentDeliveryError (see the module text)."""
        if self._session is None:
            raise RuntimeError("FhirClient used outside `async with`")
        url = self.settings.base_url
        try:
            async with self._session.post(
                url, data=payload, headers={"X-Request-ID": bundle_id}, allow_redirects=False
            ) as response:
                body = await response.read()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                reason = response.reason or ""
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise TransientDeliveryError(ErrorClass.TLS, f"{url}: TLS failure: {exc}") from exc
        except TimeoutError as exc:
            raise TransientDeliveryError(
                ErrorClass.NETWORK, f"{url}: no answer within {self.settings.timeout_s} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(ErrorClass.NETWORK, f"{url}: {exc}") from exc
        if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
            return
        text = f"{url}: HTTP {status} {reason}: {outcome_text(body)}"
        if status in _RETRY_STATUS:
            raise TransientDeliveryError(_RETRY_STATUS[status], text, retry_after=retry_after)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise TransientDeliveryError(ErrorClass.SERVER, text, retry_after=retry_after)
        raise PermanentDeliveryError(text)


class HttpsUplink:
    """The HTTPS uplink for the pump: one item at a time, in order. Run :meth:`run` as a task."""

    def __init__(self, settings: HttpsSettings, *, name: str = "https") -> None:
        self.settings = settings
        self._name = name
        self._client: FhirClient | None = None
        self._ready = asyncio.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def window(self) -> int:
        return 1

    async def run(self) -> None:
        """Hold the HTTP session open until cancelled."""
        async with FhirClient(self.settings) as client:
            self._client = client
            self._ready.set()
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                self._ready.clear()
                self._client = None

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def send(self, item: OutboxItem) -> None:
        await self._ready.wait()
        assert self._client is not None  # set together with _ready
        await self._client.post_bundle(item.payload.encode("utf-8"), item.id)
