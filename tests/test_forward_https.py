"""HTTPS uplink against a local aiohttp TLS FHIR endpoint with injected failures."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.fhir import jsonio
from gateway.forward.errors import ErrorClass, PermanentDeliveryError, TransientDeliveryError
from gateway.forward.https import FhirClient, HttpsUplink, outcome_text, parse_retry_after
from gateway.forward.settings import HttpsSettings
from gateway.forward.signing import SigningKey, verify_bundle
from gateway.store import OutboxState
from tests import fixtures_mqtt
from tests.fixtures_mqtt import (
    FhirServer,
    Gateway,
    Reply,
    TlsFiles,
    forwarding_gateway,
    make_signer,
    operation_outcome,
)

tls_files = fixtures_mqtt.tls_files
fhir_server = fixtures_mqtt.fhir_server
mtls_fhir_server = fixtures_mqtt.mtls_fhir_server

TIMEOUT_S = 30.0
KEY = SigningKey.generate()


@contextlib.asynccontextmanager
async def gateway(directory: Path, settings: HttpsSettings) -> AsyncIterator[Gateway[HttpsUplink]]:
    uplink = HttpsUplink(settings)
    async with forwarding_gateway(
        directory, uplink, make_signer(KEY), rescan_interval_s=0.1
    ) as running:
        yield running


def settings_for(server: FhirServer, tls: TlsFiles, **extra: object) -> HttpsSettings:
    return HttpsSettings.model_validate(
        {"base_url": server.url, "ca_file": tls.ca_cert, "timeout_s": 0.5, **extra}
    )


def identifiers(body: bytes) -> list[str]:
    bundle = jsonio.loads(body)
    return [e["resource"]["identifier"][0]["value"] for e in bundle["entry"]]


async def test_5xx_and_timeouts_are_retried_with_the_same_bundle(
    tmp_path: Path, fhir_server: FhirServer, tls_files: TlsFiles
) -> None:
    fhir_server.script = [Reply(500), Reply(hang=True), Reply(503), Reply(429)]
    fhir_server.token = "s3cret"
    settings = settings_for(fhir_server, tls_files, bearer_token="s3cret")
    async with asyncio.timeout(TIMEOUT_S), gateway(tmp_path, settings) as gw:
        await gw.add("a")
        await gw.recorded(1)
        assert await gw.store.outbox_stats() == {
            "pending": 0,
            "delivered": 1,
            "dead": 0,
            "quota_alarm": False,
        }
        (item,) = await gw.store.outbox_items()
    assert len(fhir_server.requests) == 5
    bodies = {body for _, body in fhir_server.requests}
    assert bodies == {item.payload.encode()}  # idempotent: the very same signed Bundle
    headers = fhir_server.requests[-1][0]
    assert headers["Content-Type"] == "application/fhir+json"
    assert headers["Accept"] == "application/fhir+json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Request-ID"] == item.id
    accepted = jsonio.loads(fhir_server.accepted[0])
    assert accepted["type"] == "transaction"
    assert accepted["entry"][0]["request"]["ifNoneExist"].startswith("identifier=")
    assert verify_bundle(accepted, {KEY.kid: KEY.public_key}) == KEY.kid
    assert item.attempts == 4  # four failed attempts before the 200
    assert item.last_error is not None
    assert "429" in item.last_error


async def test_412_goes_dead_with_the_server_reason_and_retry_dead_revives_it(
    tmp_path: Path, fhir_server: FhirServer, tls_files: TlsFiles
) -> None:
    reason = "Multiple resources match identifier=…|a (ifNoneExist)"
    fhir_server.script = [Reply(412, body=operation_outcome(reason, "duplicate"))]
    async with (
        asyncio.timeout(TIMEOUT_S),
        gateway(tmp_path, settings_for(fhir_server, tls_files)) as gw,
    ):
        await gw.add("a", "b", "c")
        await gw.recorded(3)
        (dead,) = await gw.store.outbox_items(state=OutboxState.DEAD)
        assert dead.last_error == f"{fhir_server.url}: HTTP 412 Precondition Failed: {reason}"
        assert [identifiers(b) for b in fhir_server.accepted] == [["b"], ["c"]]  # in order
        assert await gw.store.retry_dead() == 1
        await gw.recorded(4)
        assert (await gw.store.outbox_stats())["delivered"] == 3
    assert [identifiers(b) for b in fhir_server.accepted] == [["b"], ["c"], ["a"]]


async def test_bundles_go_in_order_one_at_a_time(
    tmp_path: Path, fhir_server: FhirServer, tls_files: TlsFiles
) -> None:
    async with (
        asyncio.timeout(TIMEOUT_S),
        gateway(tmp_path, settings_for(fhir_server, tls_files)) as gw,
    ):
        await gw.add(*(f"o{i:02d}" for i in range(12)))
        await gw.recorded(12)
    assert [identifiers(b)[0] for b in fhir_server.accepted] == [f"o{i:02d}" for i in range(12)]


async def test_mtls_endpoint(
    tmp_path: Path, mtls_fhir_server: FhirServer, tls_files: TlsFiles
) -> None:
    with_cert = settings_for(
        mtls_fhir_server, tls_files, cert_file=tls_files.client_cert, key_file=tls_files.client_key
    )
    async with asyncio.timeout(TIMEOUT_S):
        async with FhirClient(settings_for(mtls_fhir_server, tls_files)) as client:
            with pytest.raises(TransientDeliveryError):  # no client certificate: refused
                await client.post_bundle(b"{}", "x")
        async with gateway(tmp_path, with_cert) as gw:
            await gw.add("a")
            await gw.recorded(1)
    assert len(mtls_fhir_server.accepted) == 1


async def test_failure_classes(fhir_server: FhirServer, tls_files: TlsFiles) -> None:
    untrusted = HttpsSettings(base_url=fhir_server.url, timeout_s=2)
    async with FhirClient(untrusted) as client:
        with pytest.raises(TransientDeliveryError) as caught:
            await client.post_bundle(b"{}", "x")
    assert caught.value.error_class is ErrorClass.TLS

    fhir_server.script = [
        Reply(429, headers={"Retry-After": "7"}),
        Reply(500),
        Reply(408),
        Reply(401),
        Reply(302, headers={"Location": "https://elsewhere.example/"}),
    ]
    expected: list[tuple[type[Exception], ErrorClass | None, float | None]] = [
        (TransientDeliveryError, ErrorClass.RATE_LIMITED, 7.0),
        (TransientDeliveryError, ErrorClass.SERVER, None),
        (TransientDeliveryError, ErrorClass.SERVER, None),
        (PermanentDeliveryError, None, None),
        (PermanentDeliveryError, None, None),
    ]
    async with FhirClient(settings_for(fhir_server, tls_files)) as client:
        for kind, error_class, retry_after in expected:
            with pytest.raises(kind) as caught_any:
                await client.post_bundle(b"{}", "x")
            if isinstance(caught_any.value, TransientDeliveryError):
                assert (caught_any.value.error_class, caught_any.value.retry_after) == (
                    error_class,
                    retry_after,
                )

    closed_port = HttpsSettings(base_url="https://127.0.0.1:9/fhir", timeout_s=2)
    async with FhirClient(closed_port) as client:
        with pytest.raises(TransientDeliveryError) as caught:
            await client.post_bundle(b"{}", "x")
    assert caught.value.error_class is ErrorClass.NETWORK


def test_retry_after_forms() -> None:
    # RFC 9110 §10.2.3, its two examples: "Fri, 31 Dec 1999 23:59:59 GMT" and "120".
    now = dt.datetime(1999, 12, 31, 23, 59, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", now) == 59.0
    assert parse_retry_after("Fri, 31 Dec 1999 23:58:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_outcome_text() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": "bad unit"},
            {"severity": "error", "code": "required", "details": {"text": "no subject"}},
            {"severity": "error", "code": "conflict"},
        ],
    }
    assert outcome_text(jsonio.dumps(outcome).encode()) == "bad unit; no subject; conflict"
    assert outcome_text(b"<html>Bad gateway</html>") == "<html>Bad gateway</html>"
    assert outcome_text(b"") == "(empty body)"
