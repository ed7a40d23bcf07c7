"""Which sensors the gateway may connect to: the configured allow-list plus what a technician
accepted or forgot at run time, kept in ``DATA_DIR/sensors.json`` (mode 0600).

``bedside sensors accept|forget`` and ``POST /api/sensors/{address}/accept`` /
``DELETE /api/sensors/{address}`` change it while the gateway runs; the file survives restarts.
The rules (docs/contracts.md, "Sensors"):

- A sensor is accepted when it is in ``ble.allow`` or was accepted at run time, or, with
  ``ble.auto_accept`` (demo mode), when it matches a profile and was not forgotten since.
- Forgetting removes a run-time acceptance and, in demo mode, keeps the sensor out until it is
  accepted again. An address in ``ble.allow`` cannot be forgotten here: the configuration says to
  connect to it, so the technician is told to remove it there.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.errors import BedsideError
from gateway.paths import write_private_file

log = logging.getLogger(__name__)

SENSORS_FILE: Final = "sensors.json"
_ADDRESS: Final = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){5}")


class SensorListError(BedsideError):
    """A sensor address or a sensor list change that cannot be made (one sentence)."""


def check_address(text: str) -> str:
    """A Bluetooth device address in its canonical form (``AA:BB:CC:DD:EE:FF``, upper case)."""
    address = text.strip().upper()
    if _ADDRESS.fullmatch(address) is None:
        raise SensorListError(
            f"sensor address {text!r}: expected six hex bytes separated by colons, "
            "e.g. F0:12:34:56:78:9A"
        )
    return address


@dataclass
class SensorRegistry:
    """The configured allow-list and the run-time changes, persisted in ``path`` (None: in
    memory only, for tests and tools)."""

    path: Path | None
    configured: frozenset[str] = frozenset()
    auto_accept: bool = False
    accepted: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)

    @classmethod
    def load(
        cls, path: Path | None, configured: frozenset[str], *, auto_accept: bool = False
    ) -> SensorRegistry:
        """The registry with the changes stored in ``path``; a file that cannot be read is
        reported and ignored (the configured allow-list still applies)."""
        registry = cls(path, frozenset(a.upper() for a in configured), auto_accept)
        if path is None or not path.exists():
            return registry
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            registry.accepted = {check_address(a) for a in data.get("accepted", ())}
            registry.forgotten = {check_address(a) for a in data.get("forgotten", ())}
        except (OSError, ValueError, AttributeError, TypeError, SensorListError) as exc:
            log.warning(
                "%s: cannot read the accepted sensors (%s); using ble.allow only", path, exc
            )
        return registry

    def allows(self, address: str) -> bool:
        """May the gateway connect to the sensor at ``address`` (upper case)?"""
        if address in self.configured or address in self.accepted:
            return True
        return self.auto_accept and address not in self.forgotten

    def source(self, address: str) -> str | None:
        """Why the sensor is accepted: ``"configured"``, ``"accepted"``, ``"auto"`` or None."""
        if address in self.configured:
            return "configured"
        if address in self.accepted:
            return "accepted"
        if self.auto_accept and address not in self.forgotten:
            return "auto"
        return None

    def accept(self, address: str) -> bool:
        """Accept the sensor; False when it already was (nothing changed)."""
        address = check_address(address)
        if self.source(address) in ("configured", "accepted"):
            return False
        self.accepted.add(address)
        self.forgotten.discard(address)
        self._save()
        return True

    def forget(self, address: str) -> None:
        """Stop accepting the sensor (see the module text)."""
        address = check_address(address)
        if address in self.configured:
            raise SensorListError(
                f"sensor {address} is in the configuration file (ble.allow); remove it there "
                "and restart the gateway to forget it"
            )
        self.accepted.discard(address)
        if self.auto_accept:
            self.forgotten.add(address)
        self._save()

    def as_json(self) -> dict[str, Any]:
        return {"accepted": sorted(self.accepted), "forgotten": sorted(self.forgotten)}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_private_file(self.path, json.dumps(self.as_json(), indent=2) + "\n")
        except OSError as exc:
            raise SensorListError(f"{self.path}: cannot save the accepted sensors ({exc})") from exc
