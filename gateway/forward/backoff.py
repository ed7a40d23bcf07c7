"""The uplinks' backoff: one :class:`~gateway.backoff.BackoffPolicy` per class of error.

Each class keeps its own streak of consecutive failures; the delay is the policy's capped,
equal-jittered one (see :mod:`gateway.backoff`). A server's own ``Retry-After`` wins over the
policy (capped by :data:`MAX_RETRY_AFTER_S`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from gateway.backoff import BackoffPolicy
from gateway.forward.errors import ErrorClass

MAX_RETRY_AFTER_S = 600.0  # never park an uplink longer than this on a server's word


POLICIES: Mapping[ErrorClass, BackoffPolicy] = {
    # Fast first retries for a flapping network, but not faster than a broker restarts.
    ErrorClass.NETWORK: BackoffPolicy(base_s=0.5, cap_s=30.0),
    # Certificates and credentials need a person: retry slowly, keep trying.
    ErrorClass.TLS: BackoffPolicy(base_s=10.0, cap_s=300.0),
    ErrorClass.AUTH: BackoffPolicy(base_s=10.0, cap_s=300.0),
    ErrorClass.SERVER: BackoffPolicy(base_s=1.0, cap_s=60.0),
    ErrorClass.RATE_LIMITED: BackoffPolicy(base_s=2.0, cap_s=120.0),
}


class Backoff:
    """Counts consecutive failures per error class and turns them into delays."""

    def __init__(
        self,
        policies: Mapping[ErrorClass, BackoffPolicy] = POLICIES,
        *,
        rng: random.Random | None = None,
    ) -> None:
        missing = set(ErrorClass) - set(policies)
        if missing:
            raise ValueError(f"backoff policies missing for {sorted(missing)}")
        self._policies = dict(policies)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._failures: dict[ErrorClass, int] = {}

    def failure(self, error_class: ErrorClass, retry_after: float | None = None) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        count = self._failures.get(error_class, 0) + 1
        self._failures[error_class] = count
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return self._policies[error_class].delay(count, self._rng)

    def success(self) -> None:
        """A success ends every streak."""
        self._failures.clear()

    def failures(self, error_class: ErrorClass) -> int:
        return self._failures.get(error_class, 0)


def fast_policies(base_s: float = 0.05, cap_s: float = 0.5) -> dict[ErrorClass, BackoffPolicy]:
    """One short policy for every class: for tests, benchmarks and the local demo."""
    return dict.fromkeys(ErrorClass, BackoffPolicy(base_s=base_s, cap_s=cap_s))
