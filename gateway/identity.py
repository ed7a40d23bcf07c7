"""Who this gateway is: its EUI-64 system id (made once from the host's MAC address and kept in
``DATA_DIR/gateway.json``) and its id in MQTT topics; and the data directory it keeps them in."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.errors import ConfigError

IDENTITY_FILE: Final = "gateway.json"
EUI48_BITS: Final = 48


@dataclass(frozen=True)
class Identity:
    """Who this gateway is: its EUI-64 system id and its id in MQTT topics."""

    system_id: str
    gateway_id: str


def eui64_from_mac(mac: int) -> str:
    """EUI-48 → EUI-64 by inserting FFFE in the middle (IEEE "EUI-64 from EUI-48")."""
    octets = mac.to_bytes(EUI48_BITS // 8, "big")
    return (octets[:3] + b"\xff\xfe" + octets[3:]).hex().upper()


def load_identity(data_dir: Path, gateway_id: str | None) -> Identity:
    """The identity stored in the data directory, created on first start."""
    path = data_dir / IDENTITY_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            system_id = str(stored["system_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a gateway identity file ({exc})") from exc
    else:
        system_id = eui64_from_mac(uuid.getnode())
        path.write_text(json.dumps({"system_id": system_id}) + "\n", encoding="utf-8")
    return Identity(system_id, gateway_id or f"gw-{system_id.lower()}")


def prepare_data_dir(data_dir: Path) -> Path:
    """Create the data directory (mode 0700): keys and patient data live there."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"data directory {data_dir}: cannot create it ({exc})") from exc
    if not os.access(data_dir, os.W_OK):
        raise ConfigError(f"data directory {data_dir}: not writable by this user")
    return data_dir
