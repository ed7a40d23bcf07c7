"""``bedside doctor``: is this box ready to run at a bedside? One line per check, ok / warn / fail,
and for anything not ok what to do (docs/contracts.md, "bedside doctor").

Checks: the BLE transport (opened and scanning), the system clock's NTP synchronisation, the
data directory (writable, free space against the outbox quota), the signing key (present, mode
0600), the assistant's model files (sha256 against the manifest) or its remote inference server
(answers, serves the configured model), the uplinks (reachable, TLS
certificate valid and not near expiry), the time zone, and the systemd watchdog. A failing check
makes the command exit 1. The running gateway answers the same checks at ``GET /api/doctor``,
with its own radio's state instead of opening the radio a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import os
import shutil
import ssl
import stat
import subprocess
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from gateway.config import Settings

CONNECT_TIMEOUT_S: Final = 5.0
SCAN_S: Final = 2.0
CERT_WARN_DAYS: Final = 30
FREE_SPACE_FACTOR: Final = 2  # free space should hold twice the outbox quota
KEY_FILE: Final = Path("keys") / "signing-key.pem"
UNIT: Final = "bedside-gateway.service"


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" — {self.fix}" if self.fix and self.level is not Level.OK else ""
        return f"{self.level:<4}  {self.name}: {self.detail}{fix}"

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "level": str(self.level), "detail": self.detail, "fix": self.fix}


# -- the checks --------------------------------------------------------------------------------


async def check_radio(settings: Settings) -> Check:
    """Open the configured BLE transport and scan for a moment."""
    from bleak import BleakScanner

    from gateway.ble.radio import RADIO_ERRORS, radio_trouble
    from gateway.ble.transport import open_link

    transport = settings.ble.transport
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S + SCAN_S), open_link(transport) as link:
            kwargs: dict[str, Any] = {}
            if link.backends.scanner is not None:
                kwargs["backend"] = link.backends.scanner
            seen = await BleakScanner.discover(timeout=SCAN_S, **kwargs)
    except (TimeoutError, *RADIO_ERRORS) as exc:
        return Check("radio", Level.FAIL, radio_trouble(transport, exc))
    return Check("radio", Level.OK, f"{transport}: scanning, {len(seen)} device(s) in {SCAN_S:g} s")


def radio_status(radio: Mapping[str, Any]) -> Check:
    """The running gateway's radio, as /healthz reports it (``RadioStatus.as_json()``)."""
    transport, state = radio.get("transport"), radio.get("state")
    if state == "up":
        return Check("radio", Level.OK, f"{transport}: up and scanning")
    return Check("radio", Level.FAIL, str(radio.get("reason") or f"{transport}: {state}"))


def check_clock(run: Callable[[list[str]], str | None] | None = None) -> Check:
    """The system clock's NTP synchronisation (systemd-timesyncd, chrony, ntpd via timedatectl)."""
    ask = run or _run
    answer = ask(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if answer is None:
        return Check(
            "clock",
            Level.WARN,
            "cannot tell whether the system clock is synchronised (no timedatectl)",
            "make sure an NTP client runs: readings are dated by this clock",
        )
    if answer.strip() == "yes":
        return Check("clock", Level.OK, "synchronised (NTP)")
    return Check(
        "clock",
        Level.FAIL,
        "the system clock is not synchronised",
        "enable NTP (timedatectl set-ntp true) and check the network reaches a time server",
    )


def check_data_dir(data_dir: Path, quota_bytes: int) -> Check:
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / f".doctor.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check(
            "data directory",
            Level.FAIL,
            f"{data_dir} is not writable ({exc.strerror})",
            "give the service user the directory (chown bedside: it, mode 0700)",
        )
    free = shutil.disk_usage(data_dir).free
    text = f"{data_dir}: {free / 2**30:.1f} GiB free, outbox quota {quota_bytes / 2**20:.0f} MiB"
    if free < quota_bytes:
        return Check(
            "data directory", Level.FAIL, text, "free disk space or lower outbox.quota_bytes"
        )
    if free < FREE_SPACE_FACTOR * quota_bytes:
        return Check(
            "data directory", Level.WARN, text, "free disk space: less than twice the quota"
        )
    return Check("data directory", Level.OK, text)


def check_key(data_dir: Path) -> Check:
    path = data_dir / KEY_FILE
    if not path.exists():
        return Check(
            "signing key", Level.WARN, f"{path} does not exist yet", "it is made at first start"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            "signing key",
            Level.FAIL,
            f"{path} has mode {mode:04o}: others can read the private key",
            f"chmod 600 {path}",
        )
    return Check("signing key", Level.OK, f"{path}, mode 0600")


def check_models(settings: Settings) -> Check:
    if not settings.assistant.enabled:
        return Check("model", Level.OK, "the assistant is disabled (assistant.enabled = false)")
    from gateway.assistant.manifest import FileStatus, load_manifest, verify_models
    from gateway.errors import BedsideError

    name = settings.assistant.model
    try:
        checks = verify_models(
            load_manifest(),
            data_dir=settings.data_dir,
            models_dir=settings.assistant.models_dir,
            names=[name],
        )
    except (BedsideError, OSError) as exc:
        return Check("model", Level.FAIL, str(exc), "check assistant.model and the manifest")
    bad = [c for c in checks if c.status is FileStatus.MISMATCH]
    if bad:
        return Check(
            "model",
            Level.FAIL,
            "; ".join(f"{c.path}: {c.detail}" for c in bad),
            "replace the file with the one the manifest lists",
        )
    missing = [c for c in checks if c.status is FileStatus.MISSING]
    if missing:
        return Check(
            "model",
            Level.WARN,
            f"{name}: {', '.join(str(c.path) for c in missing)} not present",
            "embedded models are assembled at first start; place other models under models/",
        )
    unpinned = [c for c in checks if c.status is FileStatus.UNPINNED]
    if unpinned:
        return Check(
            "model",
            Level.WARN,
            f"{name}: no sha256 in the manifest",
            "record the sha256 (bedside models verify) after checking it with the publisher",
        )
    return Check("model", Level.OK, f"{name}: {len(checks)} file(s), sha256 match")


async def check_remote_model(settings: Settings) -> Check:
    """The remote inference server (``assistant.backend = "remote"``): it answers with the API
    key, and serves the configured model."""
    from gateway.assistant.errors import EngineError
    from gateway.assistant.remote import RemoteEngine

    engine = RemoteEngine(settings.assistant)
    try:
        info = await engine.start()
        served = await engine.models()
    except EngineError as exc:
        return Check(
            "model",
            Level.FAIL,
            str(exc),
            "start the inference server, or fix assistant.base_url, api_key or remote_model",
        )
    finally:
        await engine.close()
    others = [name for name in served if name != info.name]
    also = f" (also: {', '.join(others)})" if others else ""
    return Check("model", Level.OK, f"{info.name} served by {engine.base_url}{also}")


def check_tls(settings: Settings) -> Check:
    """The API's certificate: the configured one, or the self-signed one made at first start."""
    from gateway.errors import ConfigError
    from gateway.hosts import is_loopback
    from gateway.web.tls import CERT_FILE, KEY_FILE, TLS_DIR, load_certificate

    http = settings.http
    if http.tls_cert_file is not None and http.tls_key_file is not None:
        files = (http.tls_cert_file, http.tls_key_file, False)
    elif is_loopback(http.host):
        return Check("tls", Level.OK, f"plain HTTP on the loopback address {http.host} only")
    else:
        folder = settings.data_dir / TLS_DIR
        if not (folder / CERT_FILE).exists():
            return Check(
                "tls", Level.WARN, "no certificate yet", "a self-signed one is made at first start"
            )
        files = (folder / CERT_FILE, folder / KEY_FILE, True)
    try:
        cert = load_certificate(*files[:2], self_signed=files[2])
    except ConfigError as exc:
        return Check("tls", Level.FAIL, str(exc), "give a PEM certificate and its key")
    days = (cert.not_after - dt.datetime.now(dt.UTC)).days
    kind = "self-signed" if cert.self_signed else "configured"
    text = f"{kind} certificate SHA-256 {cert.fingerprint}, valid {days} more days"
    if days < CERT_WARN_DAYS:
        return Check("tls", Level.WARN, text, "renew the certificate")
    return Check("tls", Level.OK, text)


def check_timezone(name: str) -> Check:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return Check(
            "time zone",
            Level.FAIL,
            f"{name!r} is not a time zone here",
            "set timezone to an IANA name (Europe/Berlin) and install tzdata",
        )
    return Check("time zone", Level.OK, f"{name} (the sensors' clocks are set in it)")


def check_watchdog(run: Callable[[list[str]], str | None] | None = None) -> Check:
    if os.environ.get("WATCHDOG_USEC"):
        return Check("watchdog", Level.OK, "running under the systemd watchdog")
    ask = run or _run
    answer = ask(["systemctl", "show", UNIT, "-p", "WatchdogUSec", "--value"])
    if answer is None or not answer.strip():
        return Check(
            "watchdog",
            Level.WARN,
            f"cannot tell: not under systemd, and no {UNIT} known",
            f"install systemd/{UNIT} (WatchdogSec=30) for unattended use",
        )
    if answer.strip() in ("0", "infinity"):
        return Check(
            "watchdog",
            Level.FAIL,
            f"{UNIT} has no watchdog",
            f"use the shipped systemd/{UNIT} (WatchdogSec=30)",
        )
    return Check("watchdog", Level.OK, f"{UNIT}: WatchdogSec {answer.strip()}")


async def check_endpoint(name: str, url: str, ca_file: Path | None = None) -> Check:
    """Reach ``url`` (TCP, and TLS for mqtts/https): certificate valid, not near expiry."""
    parts = urlsplit(url)
    secure = parts.scheme in ("mqtts", "https")
    port = parts.port or {"mqtt": 1883, "mqtts": 8883, "http": 80, "https": 443}.get(
        parts.scheme, 0
    )
    host = parts.hostname or ""
    context = None
    if secure:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLCertVerificationError as exc:
        return Check(
            name,
            Level.FAIL,
            f"{host}:{port}: certificate refused ({exc.verify_message})",
            "check the server's certificate and the configured CA file",
        )
    except (OSError, TimeoutError) as exc:
        return Check(
            name,
            Level.FAIL,
            f"{host}:{port} cannot be reached ({exc})",
            "check the URL, the network and the firewall",
        )
    try:
        if not secure:
            return Check(
                name,
                Level.WARN,
                f"{host}:{port} reachable, without TLS",
                f"use {parts.scheme}s:// off the local host",
            )
        cert = writer.get_extra_info("peercert") or {}
        expires = (
            dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC)
            if "notAfter" in cert
            else None
        )
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if expires is None:
        return Check(name, Level.OK, f"{host}:{port}: TLS")
    days = (expires - dt.datetime.now(dt.UTC)).days
    text = f"{host}:{port}: TLS, certificate valid until {expires:%Y-%m-%d} ({days} days)"
    if days < CERT_WARN_DAYS:
        return Check(name, Level.WARN, text, "renew the server's certificate")
    return Check(name, Level.OK, text)


def check_firmware(repository: Path | None) -> Check | None:
    """The firmware repository loads (every image checked); None when none is configured."""
    if repository is None:
        return None
    from gateway.firmware.repository import Repository, RepositoryError

    try:
        loaded = Repository.load(repository)
    except RepositoryError as exc:
        return Check("firmware", Level.FAIL, str(exc), "fix the manifest or the image it names")
    models = sorted({image.model for image in loaded.images})
    return Check(
        "firmware",
        Level.OK,
        f"{repository}: {len(loaded.images)} image(s) for {', '.join(models) or 'no model'}",
    )


def _run(argv: list[str]) -> str | None:
    """A command's output, or None when it is not here or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# -- all of them -------------------------------------------------------------------------------


async def run_checks(settings: Settings, *, radio: Check | None = None) -> list[Check]:
    """Every check; ``radio`` replaces opening the radio (the running gateway's own state)."""
    checks: list[Check] = [radio if radio is not None else await check_radio(settings)]
    checks.append(await asyncio.to_thread(check_clock))
    checks.append(check_data_dir(settings.data_dir, settings.outbox.quota_bytes))
    checks.append(check_key(settings.data_dir))
    assistant = settings.assistant
    if assistant.enabled and assistant.backend == "remote" and assistant.base_url is not None:
        checks.append(await check_remote_model(settings))
        checks.append(
            await check_endpoint("inference server", assistant.base_url, assistant.ca_file)
        )
    else:
        checks.append(await asyncio.to_thread(check_models, settings))
    if settings.mqtt is not None:
        checks.append(await check_endpoint("MQTT broker", settings.mqtt.url, settings.mqtt.ca_file))
    if settings.https is not None:
        checks.append(
            await check_endpoint(
                "FHIR server", str(settings.https.base_url), settings.https.ca_file
            )
        )
    checks.append(check_tls(settings))
    firmware = await asyncio.to_thread(check_firmware, settings.firmware.repository)
    if firmware is not None:
        checks.append(firmware)
    checks.append(check_timezone(settings.timezone))
    checks.append(await asyncio.to_thread(check_watchdog))
    return checks
