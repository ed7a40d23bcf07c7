"""Loading a ``llama_cpp.Llama`` with the model parameters llama-cpp-python does not expose.

llama.cpp's CPU backend can keep weights in "extra" buffer types: layouts repacked for AMX tiles
or for wider SIMD kernels. ggml's AMX kernels fault (general protection on ``ldtilecfg``) on
virtual machines whose CPU advertises AMX without the hypervisor context-switching the tile state
(seen on Firecracker guests), even though the kernel grants the AMX permission. So the extra
buffers are off where the CPU flags say "hypervisor" and "amx_tile"; ``assistant.cpu_repack``
overrides that either way. llama-cpp-python (0.3.x) builds ``llama_model_params`` inside
``Llama.__init__`` without a keyword for ``use_extra_bufts``, so :func:`load_llama` sets it on the
defaults for the duration of that one call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

CPUINFO: Final = Path("/proc/cpuinfo")
_PATCH_LOCK = threading.RLock()  # load_llama nests the two patches


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_repack_default(flags: frozenset[str]) -> bool:
    """Whether llama.cpp's extra CPU buffers are safe to use on a CPU with these flags."""
    return not {"hypervisor", "amx_tile"} <= flags


@contextlib.contextmanager
def model_defaults(*, use_extra_bufts: bool) -> Iterator[None]:
    """Every ``llama_cpp.Llama`` created inside the block gets ``use_extra_bufts``."""
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params

    def defaults() -> Any:
        params = original()
        params.use_extra_bufts = use_extra_bufts
        return params

    with _PATCH_LOCK:
        low_level.llama_model_default_params = defaults
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


@contextlib.contextmanager
def context_defaults(*, n_seq_max: int) -> Iterator[None]:
    """Every ``llama_cpp.Llama`` created inside the block gets a context of ``n_seq_max``
    sequences, each with its own KV cells (``kv_unified`` off: each holds n_ctx / n_seq_max)."""
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_context_default_params

    def defaults() -> Any:
        params = original()
        params.n_seq_max = n_seq_max
        params.kv_unified = False
        return params

    with _PATCH_LOCK:
        low_level.llama_context_default_params = defaults
        try:
            yield
        finally:
            low_level.llama_context_default_params = original


def load_llama(*, cpu_repack: bool | None = None, n_seq_max: int = 1, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)`` with the extra CPU buffers on or off (None: decided from
    the CPU flags, see the module text) and ``n_seq_max`` sequences in its context."""
    import llama_cpp

    use = cpu_repack_default(cpu_flags()) if cpu_repack is None else cpu_repack
    with model_defaults(use_extra_bufts=use):
        if n_seq_max == 1:
            return llama_cpp.Llama(**kwargs)
        with context_defaults(n_seq_max=n_seq_max):
            return llama_cpp.Llama(**kwargs)
