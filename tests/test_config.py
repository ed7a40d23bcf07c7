"""Settings: TOML file < environment < explicit overrides, and errors that name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_work_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.ble.transport == "bluez"
    assert settings.mqtt is None
    assert settings.timezone == "UTC"


def test_file_then_environment_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        'timezone = "Europe/Berlin"\n'
        "[ble]\n"
        'transport = "hci:usb:0"\n'
        'allow = ["aa:bb:cc:dd:ee:ff"]\n'
        "[mqtt]\n"
        'url = "mqtt://127.0.0.1:1883"\n',
    )
    settings = load_settings(path, data_dir=tmp_path)
    assert settings.timezone == "Europe/Berlin"
    assert settings.ble.transport == "hci:usb:0"
    assert settings.ble.allow == ("AA:BB:CC:DD:EE:FF",)
    assert settings.mqtt is not None
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"

    monkeypatch.setenv("BEDSIDE_TIMEZONE", "America/New_York")
    assert load_settings(path, data_dir=tmp_path).timezone == "America/New_York"
    assert load_settings(path, data_dir=tmp_path, timezone="Asia/Tokyo").timezone == "Asia/Tokyo"


def test_nested_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDSIDE_BLE__TRANSPORT", "hci:tcp-client:127.0.0.1:9411")
    assert load_settings(data_dir=tmp_path).ble.transport == "hci:tcp-client:127.0.0.1:9411"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('timezone = "Mars/Olympus"', "timezone: Value error, unknown time zone 'Mars/Olympus'"),
        ('[ble]\ntransport = "carrier-pigeon"', "ble.transport"),
        ("[ble]\nunknown_key = 1", "ble.unknown_key: Extra inputs are not permitted"),
        ('gateway_id = "has space"', "gateway_id: String should match pattern"),
        ("timezone = ", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, data_dir=tmp_path)
    assert str(info.value).startswith(str(path))
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml")
