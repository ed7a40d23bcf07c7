"""The gateways' public keys as the hospital side holds them: a file or a directory that may change
while receivers run (docs/contracts.md, "bedside receive").

A directory holds one ``*.jwk`` / ``*.json`` file per allowed key (a gateway provisioned: drop its
``bedside keys show`` JWK in; a key rotated: add the new one). Its ``revoked/`` subdirectory holds
the keys of gateways taken out of service: a Bundle they signed is refused as ``revoked-key``, not
merely as an unknown key, and counted so. Changes are picked up without a restart: the directory
is looked at again at most every :data:`RELOAD_INTERVAL_S`, and reloaded when a file was added,
removed or changed. A directory that does not load (a half-copied file) leaves the previous keys
in force and is logged; the next change is tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import BedsideError
from gateway.forward.signing import load_keyring

log = logging.getLogger(__name__)

REVOKED_DIR: Final = "revoked"
RELOAD_INTERVAL_S: Final = 1.0
KEY_SUFFIXES: Final = (".jwk", ".json")

Keys = Mapping[str, Ed25519PublicKey]


@dataclass(frozen=True, slots=True)
class Keyring:
    """Allowed keys and revoked keys, by RFC 7638 thumbprint."""

    allowed: Keys
    revoked: Keys


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies the state of a directory's key files (name, size, mtime)."""
    if not folder.is_dir():
        return ()
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix in KEY_SUFFIXES and path.is_file():
            stat = path.stat()
            found.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class KeyDirectory:
    """The keys of a JWK file or a key directory, reloaded when it changes (see the module
    text). ``load`` raises :class:`gateway.errors.BedsideError` when nothing usable is there at
    start."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = RELOAD_INTERVAL_S,
    ) -> None:
        self.path = path
        self._clock = clock
        self._interval_s = interval_s
        self._checked = clock()
        self._seen = self._state()
        self.keyring = self._load()
        self.reloads = 0

    def _state(self) -> tuple[object, ...]:
        if self.path.is_dir():
            return (_signature(self.path), _signature(self.path / REVOKED_DIR))
        stat = self.path.stat() if self.path.exists() else None
        return ((stat.st_size, stat.st_mtime_ns) if stat else None,)

    def _load(self) -> Keyring:
        allowed = load_keyring(self.path)
        revoked_dir = self.path / REVOKED_DIR
        revoked = dict(load_keyring(revoked_dir)) if _signature(revoked_dir) else {}
        return Keyring({k: v for k, v in allowed.items() if k not in revoked}, revoked)

    def current(self) -> Keyring:
        """The keys in force now (looked at again at most every interval)."""
        now = self._clock()
        if now - self._checked < self._interval_s:
            return self.keyring
        self._checked = now
        state = self._state()
        if state == self._seen:
            return self.keyring
        try:
            keyring = self._load()
        except (BedsideError, OSError) as exc:
            log.warning(
                "keys in %s not reloaded (the previous ones stay in force): %s", self.path, exc
            )
            return self.keyring
        self._seen, self.keyring = state, keyring
        self.reloads += 1
        log.info(
            "keys reloaded from %s: %d allowed, %d revoked",
            self.path,
            len(keyring.allowed),
            len(keyring.revoked),
        )
        return keyring


class StaticKeys:
    """Keys given once (tests, embedding): the same keyring always."""

    def __init__(self, allowed: Keys, revoked: Keys | None = None) -> None:
        self.keyring = Keyring(dict(allowed), dict(revoked or {}))

    def current(self) -> Keyring:
        return self.keyring
