"""The firmware repository: a directory of MCUboot images and ``manifest.toml`` listing them, so
the gateway knows which sensors have an update available::

    [[image]]
    model = "BS-ECG1"            # DIS Model Number of the sensors it is for
    version = "1.5.0"            # as in the image header (checked)
    file = "ecg-1.5.0.bin"       # relative to the directory
    sha256 = "9f86d0…"           # of the whole file (checked)

Loading checks every entry: the file exists inside the directory, its sha256 is the one listed,
it is an intact MCUboot image (:func:`~.image.inspect_image`) whose header has the listed version.
A bad entry is a :class:`RepositoryError` naming the entry and what is wrong.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import BedsideError
from gateway.firmware.image import FirmwareImage, ImageError, Version, inspect_image

MANIFEST: Final = "manifest.toml"
FIELDS: Final = ("model", "version", "file", "sha256")


class RepositoryError(BedsideError, ValueError):
    """A manifest or an image of the repository that cannot be used (the message says which)."""


@dataclass(frozen=True, slots=True)
class RepositoryImage:
    """One checked image of the repository."""

    model: str
    version: Version
    path: Path
    sha256: str  # of the file
    image: FirmwareImage


def _entry(directory: Path, number: int, raw: Any) -> RepositoryImage:
    where = f"{directory / MANIFEST}: image {number}"
    if not isinstance(raw, dict):
        raise RepositoryError(f"{where}: expected a table with {', '.join(FIELDS)}")
    missing = [name for name in FIELDS if not isinstance(raw.get(name), str) or not raw[name]]
    if missing:
        raise RepositoryError(f"{where}: {', '.join(missing)} missing (text expected)")
    path = (directory / raw["file"]).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise RepositoryError(f"{where}: file {raw['file']!r} is outside the repository")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RepositoryError(f"{where}: cannot read {raw['file']}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != raw["sha256"].lower():
        raise RepositoryError(f"{where}: {raw['file']} has sha256 {digest}, not the one listed")
    try:
        version = Version.parse(raw["version"])
        image = inspect_image(data)
    except ImageError as exc:
        raise RepositoryError(f"{where}: {exc}") from exc
    if image.version != version:
        raise RepositoryError(
            f"{where}: the manifest says version {version}, the image header {image.version}"
        )
    return RepositoryImage(raw["model"], version, path, digest, image)


@dataclass(frozen=True, slots=True)
class Repository:
    """The checked images, by model."""

    images: tuple[RepositoryImage, ...]

    @classmethod
    def load(cls, directory: Path) -> Repository:
        """Read and check ``directory/manifest.toml`` and every image it lists."""
        try:
            manifest = tomllib.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RepositoryError(
                f"{directory / MANIFEST}: cannot read it ({exc.strerror}); a firmware repository "
                "is a directory with a manifest.toml"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise RepositoryError(f"{directory / MANIFEST}: not TOML ({exc})") from exc
        entries = manifest.get("image", [])
        if not isinstance(entries, list):
            raise RepositoryError(f"{directory / MANIFEST}: expected [[image]] tables")
        images = tuple(_entry(directory, n, raw) for n, raw in enumerate(entries, start=1))
        seen: set[tuple[str, Version]] = set()
        for item in images:
            if (item.model, item.version) in seen:
                raise RepositoryError(
                    f"{directory / MANIFEST}: {item.model} {item.version} is listed twice"
                )
            seen.add((item.model, item.version))
        return cls(images)

    def latest(self, model: str) -> RepositoryImage | None:
        """The newest image for ``model``."""
        candidates = [item for item in self.images if item.model == model]
        return max(candidates, key=lambda item: item.version, default=None)

    def update_for(self, model: str, running: Version) -> RepositoryImage | None:
        """The newest image for ``model`` if it is newer than ``running`` (an update available)."""
        newest = self.latest(model)
        return newest if newest is not None and newest.version > running else None
