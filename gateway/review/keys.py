"""A clinician's signing key: an Ed25519 key pair as JWKs (RFC 8037), made and kept on the
clinician's own machine (``bedside review keygen``); only the public half is registered with the
gateway (``bedside users key``). The private JWK file is written once, mode 0600, never
overwritten."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.forward.signing import (
    ED25519_KEY_BYTES,
    JWK_CRV,
    JWK_KTY,
    SigningKey,
    b64url_decode,
    b64url_encode,
)
from gateway.review.errors import ReviewRefusedError

PRIVATE_MODE = 0o600


class KeyFileError(ReviewRefusedError):
    """A key file that cannot be made or read (one sentence naming the file)."""


def generate() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def private_jwk(key: SigningKey) -> dict[str, str]:
    raw = key.private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return {**key.public_jwk, "d": b64url_encode(raw)}


def write_private(path: Path, key: SigningKey) -> None:
    """Write the private JWK to a new file (0600); an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError as exc:
        raise KeyFileError(
            f"{path}: exists already; choose another file (keys are never overwritten)"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create it ({exc.strerror})") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(private_jwk(key)) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_private(path: Path) -> SigningKey:
    """The key pair of a private JWK file written by :func:`write_private`."""
    try:
        jwk: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read it ({exc.strerror})") from exc
    except ValueError as exc:
        raise KeyFileError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(jwk, dict) or jwk.get("kty") != JWK_KTY or jwk.get("crv") != JWK_CRV:
        raise KeyFileError(f"{path}: expected an Ed25519 JWK (kty OKP, crv Ed25519)")
    if not isinstance(jwk.get("d"), str):
        raise KeyFileError(f"{path}: holds no private key (member d); give the file keygen wrote")
    try:
        raw = b64url_decode(jwk["d"])
    except ValueError:
        raw = b""
    if len(raw) != ED25519_KEY_BYTES:
        raise KeyFileError(f"{path}: member d must be 32 bytes in base64url (RFC 8037 §2)")
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(raw))
    if jwk.get("x") not in (None, key.public_jwk["x"]):
        raise KeyFileError(f"{path}: its public part (x) does not match its private key (d)")
    return key
