"""Pairing and bonds on the Bumble host: how the gateway pairs, and bonds that survive a restart.

Pairing is LE Secure Connections with bonding; the gateway says it can type a passkey (IO
capability KeyboardOnly), so a sensor with a display pairs by passkey entry and one without any
input or output by Just Works (Bluetooth Core Specification Vol 3 Part H §2.3.5.1, table 2.8).
The passkey comes from a :class:`PasskeySource` (the CLI or the API, through
:class:`gateway.ble.pairing.PasskeyBroker`); with none the gateway pairs by Just Works only.

Bonds are the Bumble host's key store in ``DATA_DIR/bonds.json`` (0600).

A bond is the keys LE Secure Connections pairing produced (the long-term key, the peer's
identity resolving key and address); with them a bonded sensor's link is encrypted again on the
next connection without pairing (Bluetooth Core Specification Vol 3 Part H §2.4.4). The sensor
keeps its half of the bond under the gateway's identity address, so that address must not change
either: the file also holds the gateway's random static address (Vol 6 Part B §1.3.2.1), made
once. The file holds secret keys: it is written atomically with mode 0600 and never logged.

Layout: ``{"identity": "C5:…", "bonds": {"<peer address>": <Bumble PairingKeys as a dict>}}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bumble import hci
from bumble.keys import MemoryKeyStore, PairingKeys
from bumble.pairing import PairingConfig, PairingDelegate

from gateway.errors import BedsideError
from gateway.paths import write_private_file

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bumble.device import Connection

log = logging.getLogger(__name__)


class BondStoreError(BedsideError):
    """The bond file cannot be read or written (one sentence)."""


class BondStore(MemoryKeyStore):
    """Bumble's in-memory key store, saved to ``path`` on every change."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.identity = self._load()

    def _load(self) -> hci.Address:
        if not self.path.exists():
            identity = hci.Address.generate_static_address()
            self._save(identity)
            return identity
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            identity = hci.Address(data["identity"], hci.Address.RANDOM_DEVICE_ADDRESS)
            for name, keys in data.get("bonds", {}).items():
                self.all_keys[str(name)] = PairingKeys.from_dict(keys)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BondStoreError(
                f"{self.path}: cannot read the sensor bonds ({type(exc).__name__}); move the "
                "file away to start with none (bonded sensors must then be paired again)"
            ) from exc
        return identity

    def _save(self, identity: hci.Address | None = None) -> None:
        who = identity if identity is not None else self.identity
        data: dict[str, Any] = {
            "identity": who.to_string(with_type_qualifier=False),
            "bonds": {name: keys.to_dict() for name, keys in sorted(self.all_keys.items())},
        }
        try:
            write_private_file(self.path, json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise BondStoreError(f"{self.path}: cannot save the sensor bonds ({exc})") from exc

    def addresses(self) -> Iterable[str]:
        """The bonded peers' addresses, upper case, without Bumble's ``/P`` type suffix."""
        return (name.split("/", 1)[0].upper() for name in self.all_keys)

    async def update(self, name: str, keys: PairingKeys) -> None:
        await super().update(name, keys)
        self._save()
        log.info("bonded with %s", name.split("/", 1)[0])

    async def delete(self, name: str) -> None:
        if name in self.all_keys:
            await super().delete(name)
            self._save()


class PasskeySource(Protocol):
    """Where the passkey a sensor shows comes from (None: none came; pairing is refused)."""

    async def passkey(self, address: str) -> int | None: ...


class _Delegate(PairingDelegate):
    """The gateway's side of one pairing: types the passkey the sensor shows."""

    def __init__(self, address: str, passkeys: PasskeySource | None) -> None:
        io = (
            PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY
            if passkeys is not None
            else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
        )
        super().__init__(io)
        self._address = address
        self._passkeys = passkeys

    async def get_number(self) -> int | None:
        if self._passkeys is None:
            return None
        return await self._passkeys.passkey(self._address)


def pairing_config(connection: Connection, passkeys: PasskeySource | None) -> PairingConfig:
    """LE Secure Connections with bonding, MITM protection where the sensor can give it."""
    address = connection.peer_address.to_string(with_type_qualifier=False)
    return PairingConfig(sc=True, mitm=True, bonding=True, delegate=_Delegate(address, passkeys))


async def forget(store: MemoryKeyStore, address: str) -> bool:
    """Delete the bond with ``address`` (public or random); True when there was one."""
    names = [n for n in store.all_keys if n.split("/", 1)[0].upper() == address.upper()]
    for name in names:
        await store.delete(name)
    return bool(names)
