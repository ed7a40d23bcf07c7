"""TLS for the API and the page off the local host (docs/contracts.md, "HTTP API").

The API listens in plain HTTP only on a loopback address. Any other ``http.host`` is served over
TLS: with ``http.tls_cert_file`` + ``http.tls_key_file`` when configured, else with a
self-signed certificate the gateway makes at first start in ``DATA_DIR/tls/`` (EC P-256, 825
days, names: the host name, ``localhost`` and the listen address), kept across restarts. Its
SHA-256 fingerprint is what a technician compares in the browser's warning: the start log,
``bedside doctor`` and the zeroconf TXT record show it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.errors import ConfigError
from gateway.hosts import is_loopback
from gateway.paths import write_private_file

if TYPE_CHECKING:
    from gateway.web.settings import HttpSettings

TLS_DIR: Final = "tls"
CERT_FILE: Final = "cert.pem"
KEY_FILE: Final = "key.pem"
VALID_DAYS: Final = 825  # the longest validity browsers accept for a server certificate


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex
    self_signed: bool
    not_after: dt.datetime

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def fingerprint_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def load_certificate(cert_file: Path, key_file: Path, *, self_signed: bool) -> ServerCertificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{cert_file} / {key_file}: not a usable certificate and key ({exc}); give a PEM "
            "certificate and its private key (http.tls_cert_file, http.tls_key_file)"
        ) from exc
    return ServerCertificate(
        cert_file, key_file, fingerprint_of(cert), self_signed, cert.not_valid_after_utc
    )


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified:
            names.append(x509.IPAddress(address))
    except ValueError:
        if host and host not in (hostname, "localhost"):
            names.append(x509.DNSName(host))
    return names


def make_self_signed(directory: Path, host: str, *, days: int = VALID_DAYS) -> ServerCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bedside Gateway {host}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / CERT_FILE, directory / KEY_FILE
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(key_file, key_pem.decode())
    write_private_file(cert_file, cert.public_bytes(serialization.Encoding.PEM).decode())
    return ServerCertificate(
        cert_file, key_file, fingerprint_of(cert), True, cert.not_valid_after_utc
    )


def server_certificate(http: HttpSettings, data_dir: Path) -> ServerCertificate | None:
    """The certificate to serve with, or None for plain HTTP (a loopback host, none given)."""
    if http.tls_cert_file is not None and http.tls_key_file is not None:
        return load_certificate(http.tls_cert_file, http.tls_key_file, self_signed=False)
    if is_loopback(http.host):
        return None
    directory = data_dir / TLS_DIR
    if (directory / CERT_FILE).exists() and (directory / KEY_FILE).exists():
        return load_certificate(directory / CERT_FILE, directory / KEY_FILE, self_signed=True)
    return make_self_signed(directory, http.host)
