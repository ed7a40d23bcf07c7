"""``bedside backup`` / ``restore`` (gateway/backup.py): a backup taken while the gateway runs and
streams, restored into a new data directory, starts a gateway with the same identity and signing
key and the outbox where it was; every file is encrypted in the backup, the store's Observations
as much as the keys; a large store goes through in little memory; a wrong passphrase, a non-empty
target, a file that is not a backup, a damaged one and a full disk are one sentence each and
leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.backup import BackupError, backup_size, make_backup, restore_backup
from gateway.store import Store, store_path
from tests.harness import running_gateway, wait_until
from tests.processes import bedside
from tests.sim_central import FAST

PASSPHRASE = "correct horse battery"
UNREACHABLE = {"url": "mqtt://127.0.0.1:9"}  # readings wait in the outbox


def hidden(directory: Path) -> list[Path]:
    return list(directory.glob(".*"))


def pending(data_dir: Path) -> int:
    with Store(store_path(data_dir)) as store:
        return store.outbox_stats().pending


async def test_a_backup_taken_while_running_restores_the_same_gateway(tmp_path: Path) -> None:
    first, second, file = tmp_path / "first", tmp_path / "second", tmp_path / "gw.backup"
    async with running_gateway(first, ("thermo",), overrides=FAST, mqtt=UNREACHABLE) as run:
        await wait_until(lambda: run.status("thermo").observations >= 3, 30, "readings")
        gateway_id, key_id = run.gateway.identity.gateway_id, run.gateway.key_id
        summary = await asyncio.to_thread(make_backup, first, file, PASSPHRASE)
        assert summary.gateway == json.loads((first / "gateway.json").read_text())
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(file) as archive:
        names = archive.getnames()
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        stored = {n: archive.extractfile(n).read() for n in names[1:]}  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    assert manifest["cipher"] == "zstd+aes-256-gcm"
    assert {"gateway.sqlite3", "keys/signing-key.pem", "gateway.json"} <= set(stored)
    assert not [n for n in names if n.endswith(("-wal", "-shm"))]
    for data in stored.values():  # nothing readable without the passphrase
        assert b"PRIVATE KEY" not in data
        assert not data.startswith(b"SQLite format 3")
        assert gateway_id.encode() not in data

    restored = restore_backup(file, second, PASSPHRASE)
    assert restored.gateway == summary.gateway
    assert oct((second / "keys" / "signing-key.pem").stat().st_mode & 0o777) == "0o600"
    assert (second / "keys" / "signing-key.pem").read_bytes() == (
        first / "keys" / "signing-key.pem"
    ).read_bytes()
    assert 0 < pending(second) <= pending(first)  # the outbox where it was (the first went on)
    assert not hidden(tmp_path)  # no scratch or staging directory left
    async with running_gateway(second, ("thermo",), overrides=FAST, mqtt=UNREACHABLE) as run:
        assert run.gateway.identity.gateway_id == gateway_id
        assert run.gateway.key_id == key_id


def test_refusals_write_nothing(tmp_path: Path) -> None:
    data_dir, file = tmp_path / "data", tmp_path / "gw.backup"
    with pytest.raises(BackupError, match="holds no gateway identity"):
        make_backup(data_dir, file, PASSPHRASE)
    data_dir.mkdir()
    (data_dir / "gateway.json").write_text('{"system_id": "02FC00FFFE000001"}')
    (data_dir / "api-token").write_text("secret-token")
    with pytest.raises(BackupError, match="at least 8 characters"):
        make_backup(data_dir, file, "short")
    make_backup(data_dir, file, PASSPHRASE)
    with pytest.raises(BackupError, match="exists: give a new file name"):
        make_backup(data_dir, file, PASSPHRASE)

    target = tmp_path / "new"
    with pytest.raises(BackupError, match="the passphrase does not open this backup"):
        restore_backup(file, target, "not the passphrase")
    assert not target.exists()
    with pytest.raises(BackupError, match="is not empty"):
        restore_backup(file, data_dir, PASSPHRASE)
    not_a_backup = tmp_path / "other.tar"
    with tarfile.open(not_a_backup, "w"):
        pass
    with pytest.raises(BackupError, match="is not a Bedside Gateway backup"):
        restore_backup(not_a_backup, target, PASSPHRASE)
    restore_backup(file, target, PASSPHRASE)
    assert (target / "api-token").read_text() == "secret-token"


async def test_the_commands(tmp_path: Path) -> None:
    data_dir, file, target = tmp_path / "data", tmp_path / "gw.backup", tmp_path / "restored"
    data_dir.mkdir()
    (data_dir / "gateway.json").write_text('{"system_id": "02FC00FFFE000002"}')
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    made = await bedside(
        "backup", str(file), "--data-dir", str(data_dir), "--passphrase-file", str(passphrase)
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["gateway"] == {"system_id": "02FC00FFFE000002"}
    os.environ.pop("BEDSIDE_BACKUP_PASSPHRASE", None)
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong passphrase")
    refused = await bedside(
        "restore", str(file), "--data-dir", str(target), "--passphrase-file", str(wrong)
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: the passphrase does not open this backup"
    done = await bedside(
        "restore", str(file), "--data-dir", str(target), "--passphrase-file", str(passphrase)
    )
    assert done.returncode == 0, done.stderr
    assert (target / "gateway.json").exists()


def _identity_only(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "gateway.json").write_text('{"system_id": "02FC00FFFE000003"}')


def _rewrite(file: Path, out: Path, change: Callable[[str, bytes], bytes]) -> None:
    """A copy of the backup ``file`` with each member's bytes passed through ``change``."""
    with tarfile.open(file) as source, tarfile.open(out, "w") as target:
        for info in source.getmembers():
            data = change(info.name, source.extractfile(info).read())  # type: ignore[union-attr]
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))


def test_a_damaged_backup_restores_nothing(tmp_path: Path) -> None:
    data_dir, file = tmp_path / "data", tmp_path / "gw.backup"
    _identity_only(data_dir)
    (data_dir / "notes.txt").write_bytes(b"the ward's notes " * 1000)
    make_backup(data_dir, file, PASSPHRASE)
    with tarfile.open(file) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]

    def flip(name: str, data: bytes) -> bytes:
        return data[:40] + bytes([data[40] ^ 1]) + data[41:] if name == "notes.txt" else data

    flipped = tmp_path / "flipped.backup"
    _rewrite(file, flipped, flip)
    target = tmp_path / "new"
    with pytest.raises(BackupError, match=r"notes.txt is damaged \(it does not match"):
        restore_backup(flipped, target, PASSPHRASE)
    assert not target.exists()

    # The same change with the manifest's SHA-256 made to match: the authentication tag fails.
    sha = hashlib.sha256(flip("notes.txt", _member(file, "notes.txt"))).hexdigest()

    def forged(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return flip(name, data)
        for entry in manifest["files"]:
            entry["sha256"] = sha if entry["path"] == "notes.txt" else entry["sha256"]
        return json.dumps(manifest).encode()

    forgery = tmp_path / "forged.backup"
    _rewrite(file, forgery, forged)
    with pytest.raises(BackupError, match=r"notes.txt is damaged"):
        restore_backup(forgery, target, PASSPHRASE)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data", "flipped.backup", "forged.backup", "gw.backup"
    ]  # fmt: skip
    restore_backup(file, target, PASSPHRASE)
    assert (target / "notes.txt").read_bytes() == (data_dir / "notes.txt").read_bytes()


def _member(file: Path, name: str) -> bytes:
    with tarfile.open(file) as archive:
        return archive.extractfile(name).read()  # type: ignore[union-attr]


def test_a_large_store_goes_through_in_little_memory(tmp_path: Path) -> None:
    data_dir, file, target = tmp_path / "data", tmp_path / "gw.backup", tmp_path / "new"
    _identity_only(data_dir)
    size = 48 << 20
    with sqlite3.connect(data_dir / "gateway.sqlite3") as db:
        db.execute("CREATE TABLE blob (b BLOB)")
        for _ in range(size >> 20):
            db.execute("INSERT INTO blob VALUES (?)", (os.urandom(1 << 20),))
    db.close()
    told: list[int] = []
    tracemalloc.start()
    try:
        make_backup(data_dir, file, PASSPHRASE, progress=told.append)
        _, backup_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        restore_backup(file, target, PASSPHRASE)
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(told) == backup_size(data_dir) > size
    assert backup_peak < size / 8
    assert restore_peak < size / 8
    with sqlite3.connect(target / "gateway.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM blob").fetchone() == (size >> 20,)
    db.close()


def test_a_full_disk_is_one_sentence_and_leaves_nothing(tmp_path: Path, small_disk: Path) -> None:
    data_dir = tmp_path / "data"
    _identity_only(data_dir)
    (data_dir / "big.bin").write_bytes(os.urandom(12 << 20))  # more than the disk holds
    with pytest.raises(BackupError, match="ran out of space for the backup: free some or write"):
        make_backup(data_dir, small_disk / "gw.backup", PASSPHRASE)
    assert list(small_disk.iterdir()) == []
