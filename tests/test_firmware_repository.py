"""The firmware repository (gateway/firmware/repository.py): a manifest of imgtool-built images,
every entry checked on load, and which sensors have an update available."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.firmware.image import Version
from gateway.firmware.repository import Repository, RepositoryError
from tests.firmware_images import build_image


def entry(path: Path, model: str, version: str, sha256: str | None = None) -> str:
    digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    return (
        f'[[image]]\nmodel = "{model}"\nversion = "{version}"\n'
        f'file = "{path.name}"\nsha256 = "{digest}"\n'
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    one = build_image(tmp_path, "1.5.0", key="ed25519")
    two = build_image(tmp_path, "1.6.0+2", key="ed25519")
    spo2 = build_image(tmp_path, "2.0.0")
    (tmp_path / "manifest.toml").write_text(
        entry(one, "BS-ECG1", "1.5.0") + entry(two, "BS-ECG1", "1.6.0+2") + entry(spo2, "OX", "2.0")
    )
    return tmp_path


def test_updates_available_per_model(repo: Path) -> None:
    repository = Repository.load(repo)
    assert len(repository.images) == 3
    latest = repository.latest("BS-ECG1")
    assert latest is not None
    assert latest.version == Version(1, 6, 0, 2)
    assert latest.image.sha256 != bytes.fromhex(latest.sha256)  # TLV hash vs file hash
    update = repository.update_for("BS-ECG1", Version.parse("1.4.2"))
    assert update is latest
    assert repository.update_for("BS-ECG1", Version.parse("1.6.0.2")) is None
    assert repository.update_for("BS-THERMO", Version(1, 0, 0)) is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda t: t.replace('version = "2.0"', 'version = "2.1"'), "says version 2.1.0"),
        (lambda t: t.replace('sha256 = "', 'sha256 = "00', 1), "not the one listed"),
        (lambda t: t.replace('file = "image-2.0.0', 'file = "../image-2.0.0'), "outside"),
        (lambda t: t.replace('model = "OX"\n', ""), "image 3: model missing"),
        (lambda t: t + t.split("[[image]]")[1].join(["[[image]]", ""]), "listed twice"),
        (lambda t: t.replace("[[image]]", "[image", 1), "not TOML"),
    ],
)
def test_a_bad_entry_is_named(repo: Path, change: object, fragment: str) -> None:
    manifest = repo / "manifest.toml"
    assert callable(change)
    manifest.write_text(change(manifest.read_text()))
    with pytest.raises(RepositoryError, match=fragment) as caught:
        Repository.load(repo)
    assert "\n" not in str(caught.value)


def test_a_corrupted_image_file_is_refused(repo: Path) -> None:
    """Listed with the sha256 of its corrupted bytes, the file passes the manifest's check and
    fails the image's own."""
    path = next(repo.glob("image-1.5.0-*.bin"))
    listed = hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    data[0x300] ^= 0xFF
    path.write_bytes(bytes(data))
    manifest = repo / "manifest.toml"
    manifest.write_text(manifest.read_text().replace(listed, hashlib.sha256(data).hexdigest()))
    with pytest.raises(RepositoryError, match="image 1: the image's SHA-256"):
        Repository.load(repo)


def test_no_manifest_says_what_a_repository_is(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="a firmware repository is a directory with"):
        Repository.load(tmp_path)
