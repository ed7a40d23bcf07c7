"""Shared fixtures and builders of the store-and-forward tests.

Test modules bind the fixtures they use by assignment (``broker = fixtures_mqtt.broker``), which
registers them with pytest without a conftest.

- Data: realistic PHD Observations (heart rate, ``Decimal`` values) and transaction Bundles with
  ``ifNoneExist`` on the PHD identifier, as gateway.fhir builds them (docs/standards.md).
- TLS: a CA, a server certificate for 127.0.0.1/localhost and a client certificate, generated with
  ``cryptography`` per test session.
- mosquitto: a private broker from :mod:`tests.mosquitto`, plain, TLS or mTLS.
- FHIR endpoint: an aiohttp TLS server whose answers are scripted (500, 429, 412, hang …).
- A forwarding gateway (store + uplink + pump as tasks) and :func:`until` to wait on its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.forward.backoff import Backoff, fast_policies
from gateway.forward.pump import OutboxPump
from gateway.forward.service import RunnableUplink
from gateway.forward.signing import Signer, SigningKey
from gateway.store import AsyncStore
from gateway.store.models import ObservationRecord
from tests.mosquitto import BrokerTls, Mosquitto

PHD_SYSTEM = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
DEVICE = "C0:FF:EE:00:00:01"
GATEWAY_WHO = {"reference": "urn:uuid:7d5b7a3e-8a6f-5f5e-9c1e-3f1f2b0b6c01", "type": "Device"}
EFFECTIVE = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
U = TypeVar("U", bound=RunnableUplink)


# -- data ------------------------------------------------------------------------------------------


def heart_rate(identifier: str, value: str, effective: dt.datetime = EFFECTIVE) -> dict[str, Any]:
    """A PhdNumericObservation of heart rate (MDC 147842 / LOINC 8867-4) with a Decimal value."""
    return {
        "resourceType": "Observation",
        "meta": {
            "profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"]
        },
        "identifier": [{"system": PHD_SYSTEM, "value": identifier}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": "urn:iso:std:iso:11073:10101", "code": "147842"},
                {"system": "http://loinc.org", "code": "8867-4"},
            ]
        },
        "effectiveDateTime": effective.isoformat().replace("+00:00", "Z"),
        "valueQuantity": {
            "value": Decimal(value),
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def record(
    identifier: str, value: str = "72.0", *, effective: dt.datetime | None = EFFECTIVE
) -> ObservationRecord:
    return ObservationRecord(
        identifier=identifier,
        code="8867-4",
        device_address=DEVICE,
        effective=effective,
        resource=heart_rate(identifier, value, effective or EFFECTIVE),
    )


def transaction_bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle: POST with ifNoneExist on the PHD identifier (docs/standards.md)."""
    entries = []
    for observation in observations:
        value = observation["identifier"][0]["value"]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, value)}",
                "resource": observation,
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": f"identifier={PHD_SYSTEM}|{value}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def make_signer(key: SigningKey | None = None) -> Signer:
    return Signer(key or SigningKey.generate(), GATEWAY_WHO)


# -- TLS material ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from a CA the server does not trust
    stranger_key: Path

    def broker(self, *, require_client_cert: bool) -> BrokerTls:
        return BrokerTls(self.ca_cert, self.server_cert, self.server_key, require_client_cert)

    def server_context(self, *, require_client_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_cert))
        context.load_cert_chain(str(self.server_cert), str(self.server_key))
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
        return context


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)

    def pem(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Bedside Test CA", ca_key, None, ca=True)
    ca_issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca = _cert("Stranger CA", stranger_ca_key, None, ca=True)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    files = TlsFiles(
        directory=directory,
        ca_cert=pem(directory / "ca.pem", ca),
        server_cert=pem(
            directory / "server.pem", _cert("127.0.0.1", server_key, ca_issuer, server=True)
        ),
        server_key=directory / "server.key",
        client_cert=pem(directory / "client.pem", _cert("gateway-1", client_key, ca_issuer)),
        client_key=directory / "client.key",
        stranger_cert=pem(
            directory / "stranger.pem",
            _cert("intruder", stranger_key, (stranger_ca.subject, stranger_ca_key)),
        ),
        stranger_key=directory / "stranger.key",
    )
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    _write_key(files.stranger_key, stranger_key)
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# -- mosquitto ---------------------------------------------------------------------------------


def _running_broker(directory: Path, tls: BrokerTls | None = None) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed (make test installs it)")
    with Mosquitto(directory, tls=tls) as running:
        yield running


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A plain mosquitto on a free port (persistence in tmp_path)."""
    yield from _running_broker(tmp_path / "broker")


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    """mosquitto with TLS (server certificate only)."""
    tls = tls_files.broker(require_client_cert=False)
    yield from _running_broker(tmp_path / "tls-broker", tls)


@pytest.fixture
def mtls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    """mosquitto requiring a client certificate from the test CA."""
    tls = tls_files.broker(require_client_cert=True)
    yield from _running_broker(tmp_path / "mtls-broker", tls)


# -- a scripted FHIR endpoint ------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer: a status with body/headers, or ``hang`` (never answer)."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


def operation_outcome(text: str, code: str = "processing") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


@dataclass
class FhirServer:
    """Answers POST [base] from ``script`` in order, then 200; records every request."""

    url: str
    script: list[Reply] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    token: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        self.changed.set()
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return web.json_response(operation_outcome("bad token", "security"), status=401)
        reply = self.script.pop(0) if self.script else Reply()
        if reply.hang:
            await self.release.wait()
        if 200 <= reply.status < 300:
            self.accepted.append(body)
            self.changed.set()
            return web.json_response(
                {"resourceType": "Bundle", "type": "transaction-response"}, status=reply.status
            )
        return web.json_response(
            reply.body or operation_outcome(f"scripted {reply.status}"),
            status=reply.status,
            headers=reply.headers,
        )

    async def wait_accepted(self, count: int) -> None:
        """Until ``count`` Bundles were accepted (callers bound it with asyncio.timeout)."""
        while len(self.accepted) < count:
            self.changed.clear()
            await self.changed.wait()


async def start_fhir_server(
    ssl_context: ssl.SSLContext | None,
) -> tuple[FhirServer, Callable[[], Any]]:
    app = web.Application()
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    server = FhirServer(url="")
    app.router.add_post("/fhir", server.handle)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/fhir"

    async def stop() -> None:
        server.release.set()
        await runner.cleanup()

    return server, stop


@pytest.fixture
async def fhir_server(tls_files: TlsFiles) -> AsyncIterator[FhirServer]:
    """A TLS FHIR endpoint (server certificate from the test CA)."""
    server, stop = await start_fhir_server(tls_files.server_context(require_client_cert=False))
    yield server
    await stop()


@pytest.fixture
async def mtls_fhir_server(tls_files: TlsFiles) -> AsyncIterator[FhirServer]:
    """A TLS FHIR endpoint that requires a client certificate from the test CA."""
    server, stop = await start_fhir_server(tls_files.server_context(require_client_cert=True))
    yield server
    await stop()


# -- a forwarding gateway ----------------------------------------------------------------------


async def until(event: asyncio.Event, predicate: Callable[[], bool]) -> None:
    """Wait, event by event, until ``predicate`` holds (bounded by the caller's timeout)."""
    while not predicate():
        event.clear()
        await event.wait()


@dataclass
class Gateway(Generic[U]):
    """The forwarding half of a gateway: its store, one uplink and the uplink's pump."""

    store: AsyncStore
    uplink: U
    pump: OutboxPump

    async def add(self, *identifiers: str) -> None:
        """Store one heart rate per identifier (each enqueues its signed Bundle)."""
        for identifier in identifiers:
            await self.store.add_observations(DEVICE, [record(identifier)], transaction_bundle)

    async def recorded(self, count: int) -> None:
        """Until the pump has recorded ``count`` items as delivered or dead."""
        await until(self.pump.progress, lambda: self.pump.stats.recorded >= count)


@contextlib.asynccontextmanager
async def forwarding_gateway(
    directory: Path, uplink: U, signer: Signer, *, rescan_interval_s: float
) -> AsyncIterator[Gateway[U]]:
    """A store in ``directory`` enqueueing for ``uplink``, with the uplink and pump running."""
    store = await AsyncStore.open(
        directory / "gateway.sqlite3", signer=signer, uplinks=[uplink.name]
    )
    pump = OutboxPump(
        store, uplink, backoff=Backoff(fast_policies()), rescan_interval_s=rescan_interval_s
    )
    tasks = [
        asyncio.create_task(uplink.run(), name="test-uplink"),
        asyncio.create_task(pump.run(), name="test-pump"),
    ]
    try:
        yield Gateway(store, uplink, pump)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
