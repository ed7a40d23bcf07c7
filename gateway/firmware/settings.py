"""Sensor firmware settings (nest as ``firmware``): where the images are, how an update proves
itself (docs/architecture.md, "Sensor firmware").

A light module: :mod:`gateway.config` reads it without importing the SMP libraries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CHECK_S: Final = 10.0
DEFAULT_MAX_IMAGE_BYTES: Final = 4 * 1024 * 1024


class FirmwareSettings(BaseModel):
    """Firmware updates of the sensors over MCUmgr SMP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: Path | None = Field(
        default=None,
        description="directory of MCUboot images with a manifest.toml (model, version, file, "
        "sha256): the gateway shows which sensors have an update available and installs it",
    )
    check_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=DEFAULT_CHECK_S,
        description="after restarting into a new image, how long the sensor must stay connected "
        "and deliver valid measurements before the image is confirmed",
    )
    reconnect_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="how long to wait for a sensor to come back after a restart or a dropped link",
    )
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=5.0, description="how long one SMP request may take to be answered"
    )
    max_resumes: Annotated[int, Field(ge=0, le=100)] = Field(
        default=5, description="how often an upload resumes after the link dropped under it"
    )
    max_image_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=DEFAULT_MAX_IMAGE_BYTES, description="the largest image accepted for upload"
    )
