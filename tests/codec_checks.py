"""Checks shared by the codec tests."""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode


def decodes_exactly_or_rejects(uuid: int, data: bytes) -> None:
    """Hostile bytes give a value whose bytes are the input, or a DecodeError; nothing else."""
    try:
        value = decode(uuid, data)
    except DecodeError as exc:
        rejected = exc
    else:
        assert uuid == value.UUID
        assert bytes(value) == data
        return
    assert rejected.characteristic.endswith(f"(0x{uuid:04X})")
    assert 0 <= rejected.offset <= len(data)


def near_length(flags: int, length: int) -> st.SearchStrategy[bytes]:
    """The flags byte, then about the ``length`` bytes (flags included) the flags announce."""
    size = length - 1
    return st.binary(min_size=max(0, size - 2), max_size=size + 2).map(lambda b: bytes([flags]) + b)
