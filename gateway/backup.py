"""``bedside backup`` and ``bedside restore``: the whole gateway in one file, taken while it runs,
put back on a new box with the same identity (docs/contracts.md, "Backup and restore").

A backup is a tar: ``manifest.json`` first, in the clear (format, versions, the gateway's
identity, the key derivation, and every file with its size and the SHA-256 of what the tar holds
for it), then every file of the data directory, each compressed with Zstandard and encrypted with
AES-256-GCM (a random nonce per file, the file's path as associated data) under a key derived from
the passphrase with scrypt: the store's Observations as much as the keys. The SQLite databases are
copied with SQLite's online backup API (a consistent snapshot while the gateway writes). Model
files are left out (they come from packages or ``models/`` and are checked by sha256); so are
run-time files.

Memory stays small whatever the store's size: every file goes through in chunks, sealed into a
scratch directory beside the backup (so the tar knows each member's size), then into the tar.

Restore writes into a new, empty data directory, checking every file against the manifest and its
authentication tag; it builds the directory aside and moves it into place only when all of it
checked out, so a wrong passphrase or a damaged file is one sentence and writes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway import __version__
from gateway.errors import BedsideError

FORMAT: Final = "bedside-backup"
VERSION: Final = 2
MANIFEST: Final = "manifest.json"
CIPHER: Final = "zstd+aes-256-gcm"
SKIPPED_DIRS: Final = frozenset({"models"})
SKIPPED_FILES: Final = frozenset({"api-url"})
SKIPPED_SUFFIXES: Final = ("-wal", "-shm", "-journal")
MIN_PASSPHRASE: Final = 8
SCRYPT_N: Final = 2**15
NONCE: Final = 12
TAG: Final = 16
CHUNK: Final = 1 << 20
ZSTD_LEVEL: Final = 6
NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
WRONG_PASSPHRASE: Final = "the passphrase does not open this backup"  # noqa: S105 - a message

Progress = Callable[[int], None]
"""Told the bytes just done: of the data directory's files (backup), of the backup (restore)."""


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


def _derive(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase)


def _files(data_dir: Path) -> Iterator[Path]:
    """The data directory's files to back up, relative to it."""
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if not path.is_file() or relative.parts[0] in SKIPPED_DIRS:
            continue
        if relative.name in SKIPPED_FILES or relative.name.endswith(SKIPPED_SUFFIXES):
            continue
        yield relative


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(16) == b"SQLite format 3\0"


def _snapshot(path: Path, copy: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API)."""
    source = sqlite3.connect(path)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _identity(data_dir: Path) -> dict[str, Any]:
    try:
        identity: dict[str, Any] = json.loads((data_dir / "gateway.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"{data_dir} holds no gateway identity (gateway.json): is it a gateway's data "
            "directory?"
        ) from exc
    return identity


class _Sealer:
    """A file-like sink: what is written goes out AES-256-GCM encrypted, hashed as stored."""

    def __init__(self, out: IO[bytes], key: bytes, name: str) -> None:
        nonce = os.urandom(NONCE)
        self._encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(name.encode())
        self._out, self.sha256, self.stored = out, hashlib.sha256(), 0
        self._emit(nonce)

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self.sha256.update(data)
        self.stored += len(data)

    def write(self, data: bytes) -> int:
        self._emit(self._encryptor.update(data))
        return len(data)

    def finish(self) -> None:
        self._emit(self._encryptor.finalize())
        self._emit(self._encryptor.tag)


def _seal(source: Path, sealed: Path, key: bytes, name: str, progress: Progress) -> dict[str, Any]:
    """Compress and encrypt ``source`` into ``sealed``; its manifest entry."""
    size = 0
    with source.open("rb") as src, sealed.open("wb") as out:
        sealer = _Sealer(out, key, name)
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        while chunk := src.read(CHUNK):
            sealer.write(compressor.compress(chunk))
            size += len(chunk)
            progress(len(chunk))
        sealer.write(compressor.flush())
        sealer.finish()
    return {
        "path": name,
        "size": size,
        "stored": sealer.stored,
        "sha256": sealer.sha256.hexdigest(),
    }


def backup_size(data_dir: Path, config: Path | None = None) -> int:
    """The bytes a backup of ``data_dir`` reads (for a progress bar; 0 for what is missing)."""
    paths = [data_dir / relative for relative in _files(data_dir)] if data_dir.is_dir() else []
    paths += [config] if config is not None else []
    return sum(path.stat().st_size for path in paths if path.is_file())


def make_backup(
    data_dir: Path,
    out: Path,
    passphrase: str,
    *,
    config: Path | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Write the backup of ``data_dir`` (and ``config``) to ``out`` (a new file)."""
    secret = _check_passphrase(passphrase)
    gateway = _identity(data_dir)
    if out.exists():
        raise BackupError(f"{out} exists: give a new file name")
    salt = os.urandom(16)
    key = _derive(secret, salt)
    told = progress or (lambda _n: None)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:
            sealed = Path(scratch)
            sources = [(relative.as_posix(), data_dir / relative) for relative in _files(data_dir)]
            sources += [(f"config/{config.name}", config)] if config is not None else []
            entries = []
            for index, (name, path) in enumerate(sources):
                entries.append(_backup_one(name, path, sealed, index, key, told))
            nonce = os.urandom(NONCE)
            check = nonce + AESGCM(key).encrypt(nonce, FORMAT.encode(), b"check")
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
                    "check": base64.b64encode(check).decode(),  # opens with the passphrase only
                },
                "cipher": CIPHER,
                "files": entries,
            }
            (sealed / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            partial = out.with_name(out.name + ".partial")
            with tarfile.open(partial, "w") as archive:
                archive.add(sealed / MANIFEST, MANIFEST, filter=_private)
                for index, entry in enumerate(entries):
                    archive.add(sealed / str(index), entry["path"], filter=_private)
            os.chmod(partial, 0o600)
            partial.replace(out)
    except OSError as exc:
        out.with_name(out.name + ".partial").unlink(missing_ok=True)
        if exc.errno in NO_SPACE:
            raise BackupError(
                f"{out.parent} ran out of space for the backup: free some or write it elsewhere"
            ) from exc
        raise BackupError(f"cannot write the backup {out}: {exc.strerror}") from exc
    return Summary(out, gateway, len(entries), out.stat().st_size)


def _backup_one(
    name: str, path: Path, sealed: Path, index: int, key: bytes, progress: Progress
) -> dict[str, Any]:
    what = "the configuration " if name.startswith("config/") else ""
    try:
        if not _is_sqlite(path):
            return _seal(path, sealed / str(index), key, name, progress)
        copy = sealed / f"{index}.sqlite3"
        _snapshot(path, copy)
        try:
            return _seal(copy, sealed / str(index), key, name, progress)
        finally:
            copy.unlink()
    except sqlite3.Error as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc
        raise BackupError(f"cannot copy the database {path}: {exc}") from exc
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise  # writing the scratch copy: said by the caller
        raise BackupError(f"cannot read {what}{path}: {exc.strerror}") from exc


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    return info


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


def restore_size(file: Path) -> int:
    """The bytes of ``file`` a restore reads (for a progress bar; 0 if it cannot be read)."""
    try:
        with tarfile.open(file, "r:") as archive:
            return sum(int(f["stored"]) for f in _read_manifest(archive, file)["files"])
    except (OSError, tarfile.TarError, BackupError, ValueError, KeyError):
        return 0


def restore_backup(
    file: Path, data_dir: Path, passphrase: str, *, progress: Progress | None = None
) -> Summary:
    """Write the backup ``file`` into ``data_dir`` (new or empty)."""
    secret = passphrase.encode()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a new data directory")
    try:
        archive = tarfile.open(file, "r:")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{file} cannot be read as a backup: {exc}") from exc
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}.restoring-"))
    try:
        with archive:
            manifest = _read_manifest(archive, file)
            key = _open_key(manifest, secret)
            written = 0
            for entry in manifest["files"]:
                _restore_one(archive, file, entry, staging, key, progress or (lambda _n: None))
                written += int(entry["size"])
        if data_dir.exists():
            data_dir.rmdir()  # empty, checked above
        staging.replace(data_dir)
    except OSError as exc:
        raise BackupError(f"cannot restore into {data_dir}: {exc.strerror}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Summary(data_dir, dict(manifest["gateway"]), len(manifest["files"]), written)


def _open_key(manifest: dict[str, Any], secret: bytes) -> bytes:
    kdf = manifest["kdf"]
    key = _derive(secret, base64.b64decode(kdf["salt"]))
    check = base64.b64decode(kdf["check"])
    try:
        AESGCM(key).decrypt(check[:NONCE], check[NONCE:], b"check")
    except InvalidTag as exc:
        raise BackupError(WRONG_PASSPHRASE) from exc
    return key


def _restore_one(
    archive: tarfile.TarFile,
    file: Path,
    entry: dict[str, Any],
    staging: Path,
    key: bytes,
    progress: Progress,
) -> None:
    """Check, decrypt and decompress one file into ``staging`` (mode 0600)."""
    name = str(entry["path"])
    if name.startswith(("/", "..")) or ".." in Path(name).parts:
        raise BackupError(f"{file}: {name!r} would land outside the data directory")
    damaged = BackupError(f"{file}: {name} is damaged (it does not match the manifest)")
    try:
        member = archive.extractfile(name)
    except KeyError:
        member = None
    stored = int(entry["stored"])
    if member is None or archive.getmember(name).size != stored or stored < NONCE + TAG:
        raise damaged
    target = staging / name
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256(nonce := member.read(NONCE))
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
    decryptor.authenticate_additional_data(name.encode())
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with (
        os.fdopen(descriptor, "wb") as out,
        zstandard.ZstdDecompressor().stream_writer(out, closefd=False) as decompressor,
    ):
        left = stored - NONCE - TAG
        while left > 0:
            chunk = member.read(min(CHUNK, left))
            if not chunk:
                raise damaged
            digest.update(chunk)
            left -= len(chunk)
            try:
                decompressor.write(decryptor.update(chunk))
            except zstandard.ZstdError as exc:
                raise damaged from exc
            progress(len(chunk))
        digest.update(tag := member.read(TAG))
        if digest.hexdigest() != entry["sha256"]:
            raise damaged
        try:
            decompressor.write(decryptor.finalize_with_tag(tag))
        except (InvalidTag, zstandard.ZstdError) as exc:
            raise damaged from exc
    if target.stat().st_size != int(entry["size"]):
        raise damaged
