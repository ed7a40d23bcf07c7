"""``bedside backup`` / ``restore`` (gateway/backup.py): a backup taken while the gateway runs and
streams, restored into a new data directory, starts a gateway with the same identity and signing
key and the outbox where it was; the keys are encrypted in the file; a wrong passphrase, a
non-empty target and a file that is not a backup are one sentence each and write nothing."""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
from pathlib import Path

import pytest

from gateway.backup import BackupError, make_backup, restore_backup
from gateway.store import Store, store_path
from tests.harness import running_gateway, wait_until
from tests.processes import bedside
from tests.sim_central import FAST

PASSPHRASE = "correct horse battery"
UNREACHABLE = {"url": "mqtt://127.0.0.1:9"}  # readings wait in the outbox


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
        key = archive.extractfile("keys/signing-key.pem")
        assert key is not None
        assert b"ENCRYPTED PRIVATE KEY" in key.read()
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    assert "gateway.sqlite3" in names
    assert not [n for n in names if n.endswith(("-wal", "-shm"))]
    encrypted = {f["path"]: f["encrypted"] for f in manifest["files"]}
    assert encrypted["keys/signing-key.pem"] == "pkcs8"
    assert encrypted.get("bonds.json") in (None, "aes-256-gcm")  # present once a bond exists

    in_backup = pending_in(file)
    restored = restore_backup(file, second, PASSPHRASE)
    assert restored.gateway == summary.gateway
    assert oct((second / "keys" / "signing-key.pem").stat().st_mode & 0o777) == "0o600"
    assert pending(second) == in_backup > 0  # the outbox where it was
    async with running_gateway(second, ("thermo",), overrides=FAST, mqtt=UNREACHABLE) as run:
        assert run.gateway.identity.gateway_id == gateway_id
        assert run.gateway.key_id == key_id


def pending_in(file: Path) -> int:
    """The pending outbox items of the store inside a backup."""
    scratch = file.with_suffix(".check")
    scratch.mkdir()
    with tarfile.open(file) as archive:
        member = archive.extractfile("gateway.sqlite3")
        assert member is not None
        (scratch / "gateway.sqlite3").write_bytes(member.read())
    return pending(scratch)


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
    not_a_backup = tmp_path / "other.tar.gz"
    with tarfile.open(not_a_backup, "w:gz"):
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
