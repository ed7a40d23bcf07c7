"""What a technician sends to support: ``GET /api/logs`` (the recent log lines) and
``GET /api/diagnostics``, one zip file with no patient data and no secrets:

- ``configuration.json``: the settings, secrets (tokens, passwords) and the patient redacted;
- ``checks.json``: the ``bedside doctor`` checks;
- ``versions.json``: the gateway's, Python's and the libraries' versions, the platform;
- ``gateway.json``: the gateway's state without the patient's reference;
- ``sensors.json``: the sensor rows (state, counters, device information);
- ``metrics.txt``: the Prometheus metrics;
- ``log.txt``: the recent log lines (patient references already taken out).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import io
import json
import platform
import sys
import zipfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from pydantic import SecretStr

from gateway import __version__
from gateway.doctor import radio_status, run_checks
from gateway.fhir import jsonio
from gateway.logbuffer import RecentLog

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.web.metrics import GatewayMetrics
    from gateway.web.status import GatewayState

LIBRARIES: Final = (
    "aiohttp",
    "bleak",
    "bumble",
    "paho-mqtt",
    "llama_cpp_python",
    "sqlite-vec",
    "fhir.resources",
    "pydantic",
    "cryptography",
    "zeroconf",
    "prometheus-client",
)
SECRET_WORDS: Final = ("token", "password", "secret", "key_file", "api_key")
REDACTED: Final = "[redacted]"
DEFAULT_LINES: Final = 100
MAX_LINES: Final = 500


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON, with every secret and the patient taken out."""

    def clean(value: Any, key: str = "") -> Any:
        if isinstance(value, SecretStr):
            return REDACTED
        if isinstance(value, Mapping):
            return {k: clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if value is not None and any(word in key for word in SECRET_WORDS):
            return REDACTED
        return value

    data = clean(settings.model_dump(mode="python"))
    if data.get("patient") is not None:
        data["patient"] = REDACTED
    text: dict[str, Any] = json.loads(json.dumps(data, default=str))  # paths, zones as text
    return text


def versions() -> dict[str, Any]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return {
        "gateway": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libraries": found,
    }


class Diagnostics:
    """The sources of the bundle."""

    def __init__(
        self,
        settings: Settings,
        log: RecentLog,
        state: GatewayState,
        sensors: Callable[[], list[dict[str, Any]]],
        metrics: GatewayMetrics,
        radio: Callable[[], Mapping[str, Any]] | None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.state = state
        self.sensors = sensors
        self.metrics = metrics
        self.radio = radio

    async def bundle(self) -> bytes:
        from prometheus_client import generate_latest

        radio = radio_status(self.radio()) if self.radio is not None else None
        checks = await run_checks(self.settings, radio=radio)
        state = dict(await self.state())
        if isinstance(state.get("patient"), Mapping):
            patient = dict(state["patient"])
            patient["reference"] = REDACTED if patient.get("reference") else None
            state["patient"] = patient
        files = {
            "configuration.json": json.dumps(redacted_settings(self.settings), indent=2),
            "checks.json": json.dumps([c.as_json() for c in checks], indent=2),
            "versions.json": json.dumps(versions(), indent=2),
            "gateway.json": jsonio.dumps(state),
            "sensors.json": jsonio.dumps(self.sensors()),
            "metrics.txt": generate_latest(self.metrics.registry).decode(),
            "log.txt": "\n".join(self.log.tail(MAX_LINES)) + "\n",
        }
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, text in files.items():
                archive.writestr(name, text)
        return out.getvalue()


DIAGNOSTICS: Final[web.AppKey[Diagnostics]] = web.AppKey("diagnostics", Diagnostics)


async def logs(request: web.Request) -> web.Response:
    try:
        count = min(int(request.query.get("lines", DEFAULT_LINES)), MAX_LINES)
    except ValueError:
        count = DEFAULT_LINES
    return web.json_response({"lines": request.app[DIAGNOSTICS].log.tail(count)})


async def diagnostics(request: web.Request) -> web.Response:
    source = request.app[DIAGNOSTICS]
    body = await source.bundle()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"bedside-diagnostics-{stamp}.zip"
    return web.Response(
        body=body,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def setup_diagnostics(source: Diagnostics) -> Callable[[web.Application], None]:
    def setup(app: web.Application) -> None:
        app[DIAGNOSTICS] = source
        app.router.add_get("/api/logs", logs)
        app.router.add_get("/api/diagnostics", diagnostics)

    return setup
