"""Per-user request rate limits by role (docs/contracts.md, "Users and roles"): a token bucket per
caller, refilled at the role's rate; a request finding it empty is answered 429 with
``Retry-After`` (RFC 9110 §10.2.3, whole seconds, at least 1).

Buckets live in memory, keyed by the caller's name (the service token is one caller), and are
forgotten after :data:`IDLE_FORGET_S` without requests so that the table stays small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

IDLE_FORGET_S: Final = 3600.0


class RateLimit(BaseModel):
    """``per_minute`` requests a minute on average, ``burst`` at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_minute: float = Field(gt=0)
    burst: int = Field(ge=1)


DEFAULT_LIMITS: Final = {
    "technician": RateLimit(per_minute=600, burst=120),
    "clinician": RateLimit(per_minute=600, burst=120),
    "admin": RateLimit(per_minute=1200, burst=240),
}


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per caller (see the module text)."""

    def __init__(
        self, limits: Mapping[str, RateLimit], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._swept = clock()

    def take(self, caller: str, role: str) -> float | None:
        """Spend one request; None when allowed, else the seconds until one is."""
        limit = self._limits.get(role)
        if limit is None:
            return None
        now = self._clock()
        self._sweep(now)
        rate = limit.per_minute / 60.0
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(float(limit.burst), now)
        bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate

    def _sweep(self, now: float) -> None:
        if now - self._swept < IDLE_FORGET_S:
            return
        self._swept = now
        for caller in [c for c, b in self._buckets.items() if now - b.updated > IDLE_FORGET_S]:
            del self._buckets[caller]


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
