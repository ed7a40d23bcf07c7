"""Errors of signing, key handling and delivery.

Callers match on the class and on the ``reason`` / ``error_class`` attributes, never on the text.
"""

from __future__ import annotations

import enum

from gateway.errors import BedsideError


class ForwardError(BedsideError):
    """Root of the errors of the ``gateway.forward`` package."""


class KeyStoreError(ForwardError, OSError):
    """The gateway's key directory or a key file cannot be used (names the file and the fix)."""


class KeyFormatError(ForwardError, ValueError):
    """A JWK (file) that is not an Ed25519 public key as RFC 8037 §2 defines it."""


class VerifyFailure(enum.StrEnum):
    """Why a signed Bundle was not accepted; values are stable (metrics, logs, exit messages)."""

    UNSIGNED = "unsigned"  # no Bundle.signature at all
    MALFORMED_SIGNATURE = "malformed-signature"  # Signature element misses type/when/who/data
    UNSUPPORTED_FORMAT = "unsupported-format"  # sigFormat other than application/jose
    MALFORMED_JWS = "malformed-jws"  # data is not base64 of a compact JWS with a JSON header
    PAYLOAD_NOT_DETACHED = "payload-not-detached"  # RFC 7515 App. F: the payload part is empty
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"  # alg other than EdDSA
    UNSUPPORTED_HEADER = "unsupported-header"  # crit / b64 (RFC 7797) are not implemented
    UNKNOWN_KEY = "unknown-key"  # kid missing or not among the allowed keys
    NOT_CANONICALIZABLE = "not-canonicalizable"  # the Bundle has no RFC 8785 form (NaN, 2^60)
    BAD_SIGNATURE = "bad-signature"  # the signature does not match: tampered or wrong key


class SignatureError(ForwardError, ValueError):
    """A Bundle whose signature does not verify; ``reason`` says which check failed."""

    def __init__(self, reason: VerifyFailure, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class ErrorClass(enum.StrEnum):
    """Classes of delivery failure; each has its own backoff (see ``backoff.POLICIES``)."""

    NETWORK = "network"  # refused, reset, unreachable, timed out
    TLS = "tls"  # certificate verification or handshake failure: needs an operator
    AUTH = "auth"  # credentials refused by the broker (CONNACK 0x86/0x87)
    SERVER = "server"  # 5xx, 408, broker-side failure: the far end is unwell
    RATE_LIMITED = "rate-limited"  # 429, MQTT quota exceeded / server busy


class DeliveryError(ForwardError):
    """Sending one outbox item failed."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying after a backoff for ``error_class`` (or the server's ``retry_after``)."""

    def __init__(
        self, error_class: ErrorClass, message: str, *, retry_after: float | None = None
    ) -> None:
        self.error_class = error_class
        self.retry_after = retry_after
        super().__init__(message)


class ConnectionLostError(TransientDeliveryError):
    """The uplink's connection dropped before the acknowledgement; resend after reconnecting."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorClass.NETWORK, message)


class PermanentDeliveryError(DeliveryError):
    """The far end refused the item for good (HTTP 4xx, MQTT reason ≥ 0x80 other than quota).

    The item goes to the dead-letter state with ``reason`` (the server's own words) and stays there
    until ``bedside outbox retry-dead``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
