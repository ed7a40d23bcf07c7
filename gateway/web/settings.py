"""Settings of the HTTP API (pydantic and the standard library only, so that loading the
configuration imports no web code), nested in the gateway's config model as ``http``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.web.ratelimit import DEFAULT_LIMITS, RateLimit

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024


class HttpSettings(BaseModel):
    """Where the HTTP API listens and how clients authenticate (nest as ``http``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="serve the API (the assistant, when enabled, loads only to be served by it)",
    )
    host: str = Field(default=DEFAULT_HOST, description="listen address (loopback by default)")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=DEFAULT_PORT, description="TCP port (--http-port); 0 picks a free one"
    )
    token: SecretStr | None = Field(default=None, description="the bearer token clients send")
    token_file: Path | None = Field(
        default=None,
        description="a file holding the token (default: DATA_DIR/api-token, created if absent)",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = DEFAULT_MAX_BODY
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate for TLS (default off loopback: a self-signed one in "
        "DATA_DIR/tls/)",
    )
    tls_key_file: Path | None = Field(default=None, description="its PEM private key")
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: dict(DEFAULT_LIMITS),
        description="requests per caller by role: {role: {per_minute, burst}} (429 beyond)",
    )
    zeroconf: bool | None = Field(
        default=None,
        description="advertise _bedside._tcp on the LAN (default: on when host is not loopback)",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self
