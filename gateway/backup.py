"""``bedside backup`` and ``bedside restore``: the whole gateway in one file, taken while it runs,
put back on a new box with the same identity (docs/contracts.md, "Backup and restore").

A backup is a gzip'd tar: ``manifest.json`` first (format, versions, the gateway's identity, the
key derivation, and every file with its size and SHA-256), then the data directory's files. The
SQLite databases are copied with SQLite's online backup API (a consistent snapshot while the
gateway writes); the signing key is stored as encrypted PKCS#8 (any OpenSSL reads it with the
passphrase); the other secrets (bond keys, API tokens, the TLS key, the demo's passwords) are
sealed with AES-256-GCM under a key derived from the passphrase with scrypt. Model files are left
out (they come from packages or ``models/`` and are checked by sha256); so are run-time files.

Restore writes into a new, empty data directory, checking every file against the manifest; a
wrong passphrase or a damaged file is one sentence and writes nothing of the secrets.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway import __version__
from gateway.errors import BedsideError

FORMAT: Final = "bedside-backup"
VERSION: Final = 1
MANIFEST: Final = "manifest.json"
SIGNING_KEY: Final = "keys/signing-key.pem"
SECRETS: Final = frozenset(
    {"bonds.json", "api-token", "demo-token", "demo-users.json", "tls/key.pem"}
)
SKIPPED_DIRS: Final = frozenset({"models"})
SKIPPED_FILES: Final = frozenset({"api-url"})
SKIPPED_SUFFIXES: Final = ("-wal", "-shm", "-journal")
MIN_PASSPHRASE: Final = 8
SCRYPT_N: Final = 2**15
NONCE: Final = 12


class BackupError(BedsideError):
    """A backup that cannot be made or restored (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """What a backup holds (or a restore wrote)."""

    path: Path
    gateway: dict[str, Any]
    files: int
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "gateway": self.gateway, "files": self.files,
                "bytes": self.bytes}  # fmt: skip


def _check_passphrase(passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    return passphrase.encode()


def _derive(passphrase: bytes, salt: bytes) -> AESGCM:
    key = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase)
    return AESGCM(key)


def _files(data_dir: Path) -> Iterator[Path]:
    """The data directory's files to back up, relative to it."""
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if not path.is_file() or relative.parts[0] in SKIPPED_DIRS:
            continue
        if relative.name in SKIPPED_FILES or relative.name.endswith(SKIPPED_SUFFIXES):
            continue
        yield relative


def _snapshot(path: Path) -> bytes:
    """A consistent copy of a live SQLite database (the online backup API)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.sqlite3"
        source = sqlite3.connect(path)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return copy.read_bytes()


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(16) == b"SQLite format 3\0"


def _identity(data_dir: Path) -> dict[str, Any]:
    try:
        identity: dict[str, Any] = json.loads((data_dir / "gateway.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"{data_dir} holds no gateway identity (gateway.json): is it a gateway's data "
            "directory?"
        ) from exc
    return identity


def make_backup(
    data_dir: Path, out: Path, passphrase: str, *, config: Path | None = None
) -> Summary:
    """Write the backup of ``data_dir`` (and ``config``) to ``out`` (a new file)."""
    secret = _check_passphrase(passphrase)
    gateway = _identity(data_dir)
    if out.exists():
        raise BackupError(f"{out} exists: give a new file name")
    salt = os.urandom(16)
    sealer = _derive(secret, salt)
    entries: list[tuple[str, bytes, str | None]] = []
    for relative in _files(data_dir):
        path = data_dir / relative
        name = relative.as_posix()
        try:
            if name == SIGNING_KEY:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
                data = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(secret),
                )
                entries.append((name, data, "pkcs8"))
            elif name in SECRETS:
                nonce = os.urandom(NONCE)
                data = nonce + sealer.encrypt(nonce, path.read_bytes(), name.encode())
                entries.append((name, data, "aes-256-gcm"))
            elif _is_sqlite(path):
                entries.append((name, _snapshot(path), None))
            else:
                entries.append((name, path.read_bytes(), None))
        except OSError as exc:
            raise BackupError(f"cannot read {path}: {exc.strerror}") from exc
    if config is not None:
        try:
            entries.append((f"config/{config.name}", config.read_bytes(), None))
        except OSError as exc:
            raise BackupError(f"cannot read the configuration {config}: {exc.strerror}") from exc
    nonce = os.urandom(NONCE)
    check = nonce + sealer.encrypt(nonce, FORMAT.encode(), b"check")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gateway_version": __version__,
        "gateway": gateway,
        "kdf": {
            "name": "scrypt",
            "n": SCRYPT_N,
            "r": 8,
            "p": 1,
            "salt": base64.b64encode(salt).decode(),
            "check": base64.b64encode(check).decode(),  # opens with the right passphrase only
        },
        "files": [
            {
                "path": name,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "encrypted": how,
            }
            for name, data, how in entries
        ],
    }
    partial = out.with_name(out.name + ".partial")
    now = int(dt.datetime.now(dt.UTC).timestamp())
    with tarfile.open(partial, "w:gz") as archive:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode())] + [
            (name, data) for name, data, _ in entries
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, now
            archive.addfile(info, io.BytesIO(data))
    os.chmod(partial, 0o600)
    partial.replace(out)
    return Summary(out, gateway, len(entries), out.stat().st_size)


def _read_manifest(archive: tarfile.TarFile, file: Path) -> dict[str, Any]:
    member = archive.extractfile(MANIFEST) if MANIFEST in archive.getnames() else None
    if member is None:
        raise BackupError(f"{file} is not a Bedside Gateway backup (no {MANIFEST})")
    manifest: dict[str, Any] = json.loads(member.read())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise BackupError(
            f"{file}: backup format {manifest.get('format')} {manifest.get('version')} is not "
            f"one this gateway reads ({FORMAT} {VERSION})"
        )
    return manifest


def restore_backup(file: Path, data_dir: Path, passphrase: str) -> Summary:
    """Write the backup ``file`` into ``data_dir`` (new or empty)."""
    secret = passphrase.encode()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a new data directory")
    try:
        archive = tarfile.open(file, "r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{file} cannot be read as a backup: {exc}") from exc
    with archive:
        manifest = _read_manifest(archive, file)
        kdf = manifest["kdf"]
        opener = _derive(secret, base64.b64decode(kdf["salt"]))
        check = base64.b64decode(kdf["check"])
        try:
            opener.decrypt(check[:NONCE], check[NONCE:], b"check")
        except InvalidTag as exc:
            raise BackupError("the passphrase does not open this backup") from exc
        contents: list[tuple[str, bytes]] = []
        for entry in manifest["files"]:
            name = str(entry["path"])
            if name.startswith(("/", "..")) or ".." in Path(name).parts:
                raise BackupError(f"{file}: {name!r} would land outside the data directory")
            member = archive.extractfile(name)
            data = member.read() if member is not None else b""
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise BackupError(f"{file}: {name} is damaged (its SHA-256 does not match)")
            contents.append((name, _open(name, data, entry.get("encrypted"), secret, opener)))
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = 0
    for name, data in contents:
        target = data_dir / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(target, data)
        written += len(data)
    return Summary(data_dir, dict(manifest["gateway"]), len(contents), written)


def _write(target: Path, data: bytes) -> None:
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def _open(name: str, data: bytes, how: str | None, secret: bytes, opener: AESGCM) -> bytes:
    wrong = "the passphrase does not open this backup"
    if how == "pkcs8":
        try:
            key = serialization.load_pem_private_key(data, password=secret)
        except (ValueError, TypeError) as exc:
            raise BackupError(wrong) from exc
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    if how == "aes-256-gcm":
        try:
            return opener.decrypt(data[:NONCE], data[NONCE:], name.encode())
        except InvalidTag as exc:
            raise BackupError(wrong) from exc
    return data
