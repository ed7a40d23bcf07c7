"""Forwarding settings (pydantic): MQTT and HTTPS uplinks and the outbox.

These models are meant to be nested in the gateway's config model; every check raises a message
that names the setting and says what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.hosts import is_loopback

MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}  # IANA registered ports for MQTT / MQTT over TLS
_TOPIC_LEVEL = re.compile(r"[^/+#\x00]+")  # MQTT 5 §4.7: no wildcards, no separators, no NUL
DEFAULT_TOPIC_PREFIX = "bedside"
MIB = 1024 * 1024


def validation_message(exc: ValidationError) -> str:
    """One line for a command's error output: each failed setting and what was wrong with it."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'value'}: {error['msg']}" for error in exc.errors()
    )


def _existing_file(value: Path | None, name: str) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"{name}: {value} is not a readable file")
    return value


def _check_client_cert(cert: Path | None, key: Path | None) -> None:
    if key is not None and cert is None:
        raise ValueError("key_file is set without cert_file: give the client certificate too")


class _TlsFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) to verify the server; system CAs when unset."
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS."
    )
    key_file: Path | None = Field(
        default=None, description="Client private key (PEM); may be inside cert_file."
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _existing_file(value, info.field_name or "file")


class MqttSettings(_TlsFiles):
    """The MQTT v5 uplink (and the receiver's broker connection)."""

    url: str = Field(description="mqtt://host[:1883] or mqtts://host[:8883]")
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(
        default=None, description="Stable client id for the persistent session; derived if unset."
    )
    keepalive_s: Annotated[int, Field(ge=5, le=65535)] = 30
    session_expiry_s: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 7 * 24 * 3600
    inflight_window: Annotated[int, Field(ge=1, le=65535)] = 100
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in MQTT_SCHEMES:
            raise ValueError(
                f"{value!r}: expected mqtt://host:port or mqtts://host:port, found scheme "
                f"{parts.scheme or '(none)'!r}"
            )
        if not parts.hostname:
            raise ValueError(f"{value!r}: the URL names no host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r}: the port is not a number in 1..65535") from exc
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: an MQTT URL has no path, query or fragment")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        levels = value.split("/")
        if not value or not all(_TOPIC_LEVEL.fullmatch(level) for level in levels):
            raise ValueError(
                f"{value!r}: a topic prefix is one or more '/'-separated levels without "
                "'+', '#' or empty levels"
            )
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> Self:
        _check_client_cert(self.cert_file, self.key_file)
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file need an mqtts:// URL")
        if self.password is not None and self.username is None:
            raise ValueError("password is set without username")
        return self

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None  # checked by the validator
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or MQTT_SCHEMES[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class HttpsSettings(_TlsFiles):
    """The HTTPS uplink: FHIR transaction Bundles POSTed to a FHIR base URL."""

    base_url: str = Field(description="FHIR base URL, e.g. https://fhir.example.org/r4")
    bearer_token: SecretStr | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{value!r}: expected an https:// FHIR base URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"{value!r}: plain http is only allowed to a loopback host; use https://"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a FHIR base URL has no query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_consistent(self) -> Self:
        _check_client_cert(self.cert_file, self.key_file)
        if urlsplit(self.base_url).scheme == "http" and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file need an https:// base_url")
        return self


class OutboxSettings(BaseModel):
    """The durable outbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quota_bytes: Annotated[int, Field(ge=MIB)] = 512 * MIB
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200


class ForwardSettings(BaseModel):
    """Everything forwarding needs; no uplink configured means data stays in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_id: str = Field(description="This gateway's id in topics (one MQTT topic level).")
    mqtt: MqttSettings | None = None
    https: HttpsSettings | None = None
    outbox: OutboxSettings = OutboxSettings()

    @field_validator("gateway_id")
    @classmethod
    def _gateway_id(cls, value: str) -> str:
        if not _TOPIC_LEVEL.fullmatch(value):
            raise ValueError(
                f"{value!r}: a gateway id is one MQTT topic level: no '/', '+', '#' and not empty"
            )
        return value
