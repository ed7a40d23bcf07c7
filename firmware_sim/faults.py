"""Packet fault injection: which corruption a scenario's ``[faults]`` give the Nth measurement
packet, and the :class:`~firmware_sim.sensor.SensorStats` counter each one adds to."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
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
