"""Settings of the local LLM engine (pydantic), meant to be nested in the gateway's config model
as ``assistant`` (``BEDSIDE_ASSISTANT__N_GPU_LAYERS=-1`` and friends)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MODEL = "gemma-3-270m"  # models/manifest.toml: the embedded default (DESIGN.md §5)
DEFAULT_N_CTX = 8192
MIN_N_CTX = 256
LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.h LLAMA_DEFAULT_SEED: "pick a random seed"


def _cpu_count() -> int:
    return os.cpu_count() or 1


class AssistantSettings(BaseModel):
    """Which model the assistant loads and how llama.cpp runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default=DEFAULT_MODEL,
        description="a model name from models/manifest.toml ('bedside models list')",
    )
    model_path: Path | None = Field(
        default=None,
        description="a GGUF file to load instead of a manifest model (not checksummed)",
    )
    models_dir: Path | None = Field(
        default=None,
        description="where placed models live (default: the models/ directory of the manifest)",
    )
    n_ctx: Annotated[int, Field(ge=MIN_N_CTX)] = Field(
        default=DEFAULT_N_CTX,
        description="context window in tokens (capped at the model's training context)",
    )
    n_threads: Annotated[int, Field(ge=1)] = Field(
        default_factory=_cpu_count, description="CPU threads for decoding and prompt evaluation"
    )
    n_batch: Annotated[int, Field(ge=1)] = Field(
        default=512, description="prompt tokens evaluated per llama_decode call"
    )
    n_gpu_layers: Annotated[int, Field(ge=-1)] = Field(
        default=0, description="layers offloaded to the GPU: 0 none, -1 all (on a GPU box)"
    )
    flash_attn: bool = Field(default=False, description="flash attention (GPU builds)")
    swa_full: bool = Field(
        default=True,
        description="full-size sliding-window KV cache; Gemma 3 needs it so that a context "
        "cut back (a reply stopped at a stop string) keeps its prefix",
    )
    seed: Annotated[int, Field(ge=0, lt=LLAMA_DEFAULT_SEED)] | None = Field(
        default=None,
        description="sampling seed for requests that give none (unset: a random one each time)",
    )
    request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0, description="default limit for one request, waiting in the queue included"
    )

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model: give a name from models/manifest.toml")
        return value
