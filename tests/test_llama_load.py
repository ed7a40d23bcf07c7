"""Which CPUs get llama.cpp's extra weight buffers, and that the choice reaches the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.assistant.llama_load import cpu_flags, cpu_repack_default, model_defaults

XEON_VM = "processor\t: 0\nflags\t\t: fpu sse2 avx512f hypervisor amx_bf16 amx_tile amx_int8\n"


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(XEON_VM, encoding="utf-8")
    assert cpu_flags(cpuinfo) >= {"hypervisor", "amx_tile", "avx512f"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(
    ("flags", "repack"),
    [
        ({"hypervisor", "amx_tile", "amx_int8"}, False),  # AMX advertised in a VM: faults
        ({"amx_tile", "amx_int8"}, True),  # bare metal with AMX
        ({"hypervisor", "avx2"}, True),  # a VM without AMX
        (set(), True),
    ],
)
def test_extra_buffers_only_where_amx_can_run(flags: set[str], repack: bool) -> None:
    assert cpu_repack_default(frozenset(flags)) is repack


@pytest.mark.parametrize("use", [True, False])
def test_the_choice_reaches_llama_model_params(use: bool) -> None:
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params
    with model_defaults(use_extra_bufts=use):
        assert low_level.llama_model_default_params().use_extra_bufts is use
    assert low_level.llama_model_default_params is original
