"""Capped exponential backoff with "equal jitter", shared by every reconnecting edge.

Delay for the n-th consecutive failure (n ≥ 1): ``d = min(cap, base × 2^(n-1))``, then uniformly in
``[d/2, d]``: a fleet of gateways (or of sensors on one gateway) does not retry in lockstep after a
shared outage, while each one still waits at least half the nominal time. The BLE sessions, the
radio and the uplinks each keep their own policy (see docs/architecture.md, "Rules of the house").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_EXPONENT = 32  # 2^32 × any sane base is far past every cap; keeps the float finite


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait after consecutive failures: base, doubled each time, capped."""

    base_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 < base ≤ cap, got {self.base_s}, {self.cap_s}")

    def nominal(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (≥ 1)."""
        exponent = min(max(failures, 1) - 1, MAX_EXPONENT)
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The jittered delay after ``failures`` consecutive failures: in [nominal/2, nominal]."""
        nominal = self.nominal(failures)
        return (rng or _RNG).uniform(nominal / 2, nominal)


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography
