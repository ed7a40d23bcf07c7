"""Fault injection: which corruption a scenario's ``[faults]`` give the Nth measurement packet,
and the :class:`~firmware_sim.sensor.SensorStats` counter each one adds to; and the faults of the
firmware update path (:class:`SmpFaults`), which the SMP server applies to image upload chunks
(MCUmgr SMP group 1, "Image upload")."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from firmware_sim.scenarios import FaultSettings


class Corruption(enum.Enum):
    """What fault injection did to one measurement packet."""

    NONE = "none"
    TRUNCATED = "truncated"
    WRONG_FLAGS = "wrong_flags"
    NAN = "nan"
    NRES = "nres"


# The SensorStats field that counts each corruption actually sent.
CORRUPTION_COUNTERS: Final = {
    Corruption.TRUNCATED: "truncated",
    Corruption.WRONG_FLAGS: "wrong_flags",
    Corruption.NAN: "nan_values",
    Corruption.NRES: "nres_values",
}

# Builds a measurement packet with the corruption asked for; returns it and the corruption it
# applied (NONE where the packet has no such fault, e.g. a uint heart rate has no NaN).
Builder = Callable[[Corruption], tuple[bytes, Corruption]]


class PacketFaults:
    """Chooses the corruption of the Nth measurement packet (first matching rule wins)."""

    def __init__(self, settings: FaultSettings) -> None:
        self._rules = [
            (every, corruption)
            for every, corruption in (
                (settings.truncate_every, Corruption.TRUNCATED),
                (settings.wrong_flags_every, Corruption.WRONG_FLAGS),
                (settings.nan_every, Corruption.NAN),
                (settings.nres_every, Corruption.NRES),
            )
            if every is not None
        ]
        self._count = 0

    def next(self) -> Corruption:
        self._count += 1
        for every, corruption in self._rules:
            if self._count % every == 0:
                return corruption
        return Corruption.NONE


def corrupt(
    corruption: Corruption, clean: bytes, variants: Mapping[Corruption, Callable[[], bytes]]
) -> tuple[bytes, Corruption]:
    """The packet to send for ``corruption`` and the corruption it carries.

    TRUNCATED cuts the last byte off ``clean``; the other corruptions take the kind's own variant
    (a flag announcing a missing field, NaN or NRes in a field). A corruption the kind has no
    variant for sends ``clean`` and counts as NONE.
    """
    if corruption is Corruption.TRUNCATED:
        return clean[:-1], corruption
    variant = variants.get(corruption)
    if variant is None:
        return clean, Corruption.NONE
    return variant(), corruption


@dataclass(slots=True)
class SmpFaults:
    """Faults on the MCUmgr image upload path, each applied once per instance (set a new one to
    arm them again). An upload *chunk* is an image upload request whose data the device writes
    (MCUmgr SMP group 1, "Image upload": a request at the offset the device expects, or the
    ``off`` 0 request that starts an upload; not one answered with the expected offset, nor the
    ``off`` 0 request that continues an upload session).

    - ``drop_at_bytes``: once a chunk brings the upload offset to at least this many bytes, the
      sensor drops the link after writing the chunk and before its response goes out, so the
      client cannot know the chunk arrived; the partial upload stays, and a client resumes it.
    - ``corrupt_chunk``: the data of the Nth chunk (1-based, counted from when this instance was
      set) has one byte flipped as received; the completed image then fails the device's SHA-256
      check.
    """

    drop_at_bytes: int | None = None
    corrupt_chunk: int | None = None
    chunks: int = field(default=0, init=False)  # chunks taken while this instance was set
    dropped: bool = field(default=False, init=False)
    corrupted: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        for name in ("drop_at_bytes", "corrupt_chunk"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    @classmethod
    def from_settings(cls, settings: FaultSettings) -> SmpFaults:
        """The update-path faults a scenario's ``[faults]`` configure."""
        return cls(
            drop_at_bytes=settings.smp_drop_at_bytes, corrupt_chunk=settings.smp_corrupt_chunk
        )

    def take_chunk(self, data: bytes) -> bytes:
        """Count one chunk the device writes; returns its data as received (one byte of the
        ``corrupt_chunk``-th flipped: the middle one, inverted)."""
        self.chunks += 1
        if self.corrupted or self.chunks != self.corrupt_chunk or not data:
            return data
        self.corrupted = True
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        return bytes(flipped)

    def drop_after(self, offset: int) -> bool:
        """Whether the link drops now that a chunk brought the upload to ``offset`` (once)."""
        if self.dropped or self.drop_at_bytes is None or offset < self.drop_at_bytes:
            return False
        self.dropped = True
        return True
