"""Settings of the local assistant (pydantic and the standard library only, so that loading the
configuration imports no model code): :class:`AssistantSettings` for the LLM engine, nested in the
gateway's config model as ``assistant`` (``BEDSIDE_ASSISTANT__N_GPU_LAYERS=-1`` and friends), and
:class:`ConsultationSettings` for the consultation loop (``consultation``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# models/manifest.toml: the embedded default (docs/architecture.md, "Embedded defaults")
DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_N_CTX = 8192
MIN_N_CTX = 256
MAX_PARALLEL = 8
LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.h LLAMA_DEFAULT_SEED: "pick a random seed"


def _cpu_count() -> int:
    return os.cpu_count() or 1


class AssistantSettings(BaseModel):
    """Which model the assistant loads and how llama.cpp runs it, or which inference server it
    talks to (``backend = "remote"``: docs/architecture.md, "A remote inference server")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="load the assistant (the model, retrieval, consultations) behind the HTTP API; "
        "false: the gateway and its API run without any model code",
    )
    backend: Literal["local", "remote"] = Field(
        default="local",
        description="'local': llama.cpp in this process; 'remote': an OpenAI-compatible "
        "completion server (llama-server, llama_cpp.server, vLLM) at base_url",
    )
    base_url: str | None = Field(
        default=None,
        description="the remote server's API root as OpenAI clients take it, "
        "e.g. http://gpu-box:8080/v1 (backend = 'remote')",
    )
    api_key: SecretStr | None = Field(
        default=None, description="bearer token for the remote server (backend = 'remote')"
    )
    remote_model: str | None = Field(
        default=None,
        description="the model name the remote server serves (unset: the one it lists, when it "
        "lists exactly one)",
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) that sign an https base_url's certificate (unset: the "
        "system's)",
    )
    connect_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="connecting to the remote server (backend = 'remote')"
    )
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
    parallel: Annotated[int, Field(ge=1, le=MAX_PARALLEL)] = Field(
        default=2,
        description="sequences the local engine serves at once, each with n_ctx tokens and its "
        "own prefix cache (a chat does not wait behind a consultation); KV memory grows with it",
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
    cpu_repack: bool | None = Field(
        default=None,
        description="llama.cpp's extra CPU weight buffers (AMX tiles, repacked layouts); unset: "
        "on, except on a virtual machine whose CPU advertises AMX (its kernels fault there)",
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

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"base_url: expected an http(s) URL such as http://gpu-box:8080/v1, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _remote_needs_url(self) -> Self:
        if self.backend == "remote" and self.base_url is None:
            raise ValueError(
                "assistant.backend is 'remote' but assistant.base_url is not set: give the "
                "server's API root, e.g. http://gpu-box:8080/v1"
            )
        return self


class ConsultationSettings(BaseModel):
    """Limits and sampling of consultations (nest as ``consultation``).

    How long a measurement may take comes from the device profiles (``[measure] timeout_s``, a
    cuff inflates for up to 2 min); ``default_measure_timeout_s`` covers sensor kinds no profile
    describes.
    ``allow_cuff_inflation`` decides whether a consultation may start a measurement of burden
    ``cuff-inflation`` (``[measure] burden``); spot-checks it may always start.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_measurements_per_reply: int = Field(default=3, ge=0)
    max_reply_tokens: int = Field(default=512, ge=1, description="generated tokens per reply")
    reply_timeout_s: float = Field(default=600.0, gt=0, description="a whole reply")
    default_measure_timeout_s: float = Field(
        default=20.0, gt=0, description="measurement timeout of a sensor kind without a profile"
    )
    allow_cuff_inflation: bool = Field(
        default=False,
        description="let a consultation (the model, or the intake of require) start a "
        "blood-pressure cuff inflation; false: such a request fails with not_allowed unless a "
        "cycle is already running, and a clinician starts the cuff",
    )
    temperature: float = Field(default=0.3, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    retrieval_k: int = Field(default=4, ge=0, description="passages per message (0: none)")
    formulary_k: int = Field(
        default=3, ge=1, description="passages retrieved per proposed medication to check it"
    )
    retrieval_threshold: float | None = Field(
        default=None, description="cosine threshold (None: the retriever's, 0.35)"
    )
    recent_observations: int = Field(default=8, ge=0, description="codes in the system prompt")
    recent_scan: int = Field(default=200, ge=1, description="stored Observations looked at")
    max_require: int = Field(default=8, ge=0)
    max_message_chars: int = Field(default=8000, ge=1)
    report_max_tokens: int = Field(default=1024, ge=16)
    report_fallback_max_tokens: int = Field(default=256, ge=16)
    report_temperature: float = Field(default=0.0, ge=0)
    report_timeout_s: float = Field(default=300.0, gt=0)
