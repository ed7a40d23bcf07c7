"""The API off the local host: TLS (a self-signed certificate made once, or a configured one) and
the zeroconf announcement a technician's laptop finds."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from typer.testing import CliRunner, Result
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from gateway.cli import app
from gateway.config import load_settings
from gateway.doctor import Level, check_tls
from gateway.errors import ConfigError
from gateway.web.advertise import HTTPS_SERVICE, SERVICE
from gateway.web.settings import HttpSettings
from gateway.web.tls import (
    CERT_FILE,
    KEY_FILE,
    TLS_DIR,
    ServerCertificate,
    make_self_signed,
    server_certificate,
)
from tests.harness import running_gateway, wait_until

TOKEN = "lan-test-service-token-0123456789ab"


def test_a_lan_address_gets_a_self_signed_certificate_made_once(tmp_path: Path) -> None:
    assert server_certificate(HttpSettings(host="127.0.0.1"), tmp_path) is None  # loopback
    lan = HttpSettings(host="192.0.2.10")
    made = server_certificate(lan, tmp_path)
    assert made is not None
    assert made.self_signed
    assert stat.S_IMODE((tmp_path / TLS_DIR / KEY_FILE).stat().st_mode) == 0o600
    again = server_certificate(lan, tmp_path)
    assert again is not None
    assert again.fingerprint == made.fingerprint  # kept across restarts
    cert = x509.load_pem_x509_certificate((tmp_path / TLS_DIR / CERT_FILE).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.0.2.10" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert len(made.fingerprint.split(":")) == 32
    settings = load_settings(data_dir=tmp_path, http={"host": "192.0.2.10"})
    shown = check_tls(settings)
    assert shown.level is Level.OK
    assert made.fingerprint in shown.detail


def test_a_configured_certificate_must_be_usable(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    http = HttpSettings(tls_cert_file=tmp_path / "cert.pem", tls_key_file=tmp_path / "key.pem")
    with pytest.raises(ConfigError, match="not a usable certificate"):
        server_certificate(http, tmp_path)
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        HttpSettings(tls_cert_file=tmp_path / "cert.pem")


async def test_the_api_over_tls_is_announced_with_its_fingerprint(tmp_path: Path) -> None:
    """Served over TLS with a configured certificate, announced over mDNS with the certificate's
    fingerprint in TXT; the CLI on the box reaches it over https; plain HTTP is refused."""
    made = make_self_signed(tmp_path / "certs", "127.0.0.1")
    http = {
        "enabled": True,
        "port": 0,
        "token": TOKEN,
        "tls_cert_file": str(made.cert_file),
        "tls_key_file": str(made.key_file),
        "zeroconf": True,
    }
    data_dir = tmp_path / "data"
    async with running_gateway(
        data_dir, ["thermo"], seed=41, http=http, assistant={"enabled": False}
    ) as run:
        port = run.gateway.http_port
        context = ssl.create_default_context(cafile=str(made.cert_file))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://localhost:{port}/healthz", ssl=context) as answer:
                assert answer.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as plain:
                    await plain.read()

        browser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            gateway_id = run.gateway.identity.gateway_id
            for kind in (SERVICE, HTTPS_SERVICE):
                info = AsyncServiceInfo(kind, f"{gateway_id}.{kind}")
                assert await info.async_request(browser.zeroconf, 3000), kind
                assert info.port == port
                txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
                assert txt["id"] == gateway_id
                assert txt["tls"] == made.fingerprint
                assert txt["kid"] == run.gateway.key_id
        finally:
            await browser.async_close()

        assert (data_dir / "api-url").read_text().startswith("https://")
        await wait_until(lambda: "thermo" in run.states(), 30, "the thermometer to be found")
        result = await _cli(["sensors", "list", "--json", "--data-dir", str(data_dir)], made)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["kind"] == "thermo"


async def _cli(args: list[str], made: ServerCertificate) -> Result:
    """``bedside ARGS`` in a thread (the API runs on this loop), configured as the gateway is."""
    env = {
        "BEDSIDE_HTTP__TOKEN": TOKEN,
        "BEDSIDE_HTTP__TLS_CERT_FILE": str(made.cert_file),
        "BEDSIDE_HTTP__TLS_KEY_FILE": str(made.key_file),
    }
    return await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
