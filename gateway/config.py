"""The gateway's configuration: a TOML file, overridden by ``BEDSIDE_*`` environment variables,
overridden by command-line options.

Nested settings use ``__`` in environment names (``BEDSIDE_BLE__TRANSPORT=hci:usb:0``,
``BEDSIDE_MQTT__URL=mqtts://broker:8883``). Every validation error names the file (or
variable) and the field.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.assistant.settings import AssistantSettings, ConsultationSettings
from gateway.ble.settings import BleSettings
from gateway.errors import ConfigError
from gateway.firmware.settings import FirmwareSettings
from gateway.forward.settings import HttpsSettings, MqttSettings, OutboxSettings
from gateway.paths import default_data_dir
from gateway.rag.settings import RagSettings
from gateway.review.settings import ReviewSettings
from gateway.store.settings import StoreSettings
from gateway.web.settings import HttpSettings

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("bedside_config_file", default=None)


class PatientSettings(BaseModel):
    """The patient this bedside gateway serves (optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(description="FHIR reference such as 'Patient/123'")
    identifier_system: str | None = None
    identifier_value: str | None = None


class Settings(BaseSettings):
    """Everything ``bedside run`` needs; every field has a working default except the uplinks."""

    model_config = SettingsConfigDict(
        env_prefix="BEDSIDE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    gateway_id: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = None
    timezone: str = Field(default="UTC", description="IANA zone the sensors' clocks are set in")
    patient: PatientSettings | None = None
    ble: BleSettings = BleSettings()
    mqtt: MqttSettings | None = None
    https: HttpsSettings | None = None
    outbox: OutboxSettings = OutboxSettings()
    rag: RagSettings = RagSettings()
    assistant: AssistantSettings = AssistantSettings()
    consultation: ConsultationSettings = ConsultationSettings()
    http: HttpSettings = HttpSettings()
    review: ReviewSettings = ReviewSettings()
    firmware: FirmwareSettings = FirmwareSettings()
    store: StoreSettings = StoreSettings()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC") from exc
        return value

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (TOML), the environment and ``overrides`` (highest first:
    overrides, environment, file). Raises :class:`ConfigError` naming the source and field."""
    where = str(config_file) if config_file is not None else "configuration"
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"{config_file}: no such configuration file")
        try:
            tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_file}: not valid TOML ({exc})") from exc
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
    finally:
        _CONFIG_FILE.reset(token)
