"""Bundle signatures: the gateway's Ed25519 key, JWS with detached payload, FHIR ``Signature``.

The format is the contract with every receiver (``docs/contracts.md``, signature format). What is
signed: the RFC 8785 canonical JSON of the Bundle with ``signature`` removed, written by
:func:`gateway.fhir.jsonio.canonical` (which also says how ``Decimal`` values are canonicalised).

How: a JWS (RFC 7515) in compact serialization with detached content (RFC 7515 Appendix F), made
and checked by ``joserfc``: the signing input is ``BASE64URL(header) "." BASE64URL(payload)``
(§5.1) and the transmitted form leaves the payload part empty: ``BASE64URL(header) ".."
BASE64URL(signature)``. The protected header is exactly ``{"alg":"EdDSA","kid":<RFC 7638
thumbprint>}`` (alg and key type from RFC 8037 §3.1 / §2). RFC 7797's unencoded payload
(``"b64":false``) is deliberately not used: it needs ``"crit":["b64"]``, which JOSE libraries that
do not implement RFC 7797 must reject, while App. F detached content is verified by any of them;
base64url-encoding a few kilobytes costs microseconds. Verification also accepts
``"alg":"Ed25519"``, the name RFC 9864 gives the same algorithm while deprecating the polymorphic
``EdDSA``. Before the signature is checked, the verifier applies its own policy to the header
(allowed algorithms, no ``crit`` / ``b64``, a known ``kid``) so that a refusal names its reason.

The FHIR R4 ``Bundle.signature`` (Signature datatype) carries it: ``type`` = ASTM E1762-95
"Source Signature" (``urn:iso-astm:E1762-95:2013`` / ``1.2.840.10065.1.12.1.14``), ``when``,
``who`` = the gateway Device, ``sigFormat`` = ``application/jose``, ``data`` = base64 (RFC 4648 §4)
of the ASCII compact JWS.

Keys live in ``<data dir>/keys/``: ``signing-key.pem`` (PKCS#8, mode 0600, created at first start)
and ``public/<kid>.jwk`` for the current and every earlier public key, so that a rotation keeps
older Bundles verifiable. That ``public`` directory is what a receiver's ``--keys`` can point at.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import OKPKey, thumbprint

from gateway.fhir import jsonio
from gateway.forward.errors import KeyFormatError, KeyStoreError, SignatureError, VerifyFailure

# -- standards constants ---------------------------------------------------------------------------
JWS_ALG = "EdDSA"  # RFC 8037 §3.1: what we sign with (docs/contracts.md)
JWS_ALG_FULLY_SPECIFIED = "Ed25519"  # RFC 9864: the same algorithm under its fully-specified name
# Verification takes both names.
ACCEPTED_ALGS = frozenset({JWS_ALG, JWS_ALG_FULLY_SPECIFIED})
JWK_KTY = "OKP"  # RFC 8037 §2
JWK_CRV = "Ed25519"  # RFC 8037 §2
ED25519_KEY_BYTES = 32  # RFC 8032 §5.1.5
THUMBPRINT_MEMBERS = ("crv", "kty", "x")  # RFC 7638 §3.2 with RFC 8037 §2 required members
JWS_COMPACT_PARTS = 3  # RFC 7515 §7.1: header.payload.signature
UNSUPPORTED_HEADERS = ("crit", "b64")  # RFC 7515 §4.1.11: we implement no extension
SIG_FORMAT = "application/jose"  # FHIR Signature.sigFormat for JWS
SIGNATURE_TYPE_SYSTEM = "urn:iso-astm:E1762-95:2013"  # FHIR R4 valueset signature-type
SIGNATURE_TYPE_SOURCE = "1.2.840.10065.1.12.1.14"  # ASTM E1762-95 "Source Signature"
SIGNATURE_TYPE = {
    "system": SIGNATURE_TYPE_SYSTEM,
    "code": SIGNATURE_TYPE_SOURCE,
    "display": "Source Signature",
}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")  # RFC 7515 §2: base64url without padding

# -- key files -------------------------------------------------------------------------------------
KEYS_DIRNAME = "keys"
PRIVATE_KEY_FILENAME = "signing-key.pem"
PUBLIC_DIRNAME = "public"
PUBLIC_SUFFIX = ".jwk"
PRIVATE_KEY_MODE = 0o600
KEYS_DIR_MODE = 0o700
_GROUP_OTHER_BITS = 0o077


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`; ``ValueError`` for anything else."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding (RFC 7515 §2)")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- JWK -----------------------------------------------------------------------------------------


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The RFC 8037 §2 JWK members of an Ed25519 public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": JWK_KTY, "crv": JWK_CRV, "x": b64url_encode(raw)}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: hash of the required members, sorted, compact."""
    return thumbprint({name: jwk[name] for name in THUMBPRINT_MEMBERS})


def public_key_from_jwk(jwk: object, source: str) -> Ed25519PublicKey:
    """Check and load one public JWK; ``source`` names where it came from for the error text."""
    if not isinstance(jwk, Mapping):
        raise KeyFormatError(f"{source}: expected a JWK object, found {type(jwk).__name__}")
    if "d" in jwk:
        raise KeyFormatError(
            f"{source}: this JWK holds a private key; give receivers the public key "
            "(`bedside keys show`)"
        )
    if jwk.get("kty") != JWK_KTY or jwk.get("crv") != JWK_CRV:
        raise KeyFormatError(
            f"{source}: expected an Ed25519 key (kty {JWK_KTY!r}, crv {JWK_CRV!r}), found "
            f"kty {jwk.get('kty')!r}, crv {jwk.get('crv')!r}"
        )
    x = jwk.get("x")
    try:
        raw = b64url_decode(x) if isinstance(x, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != ED25519_KEY_BYTES:
        raise KeyFormatError(f"{source}: member x must be 32 bytes in base64url (RFC 8037 §2)")
    return Ed25519PublicKey.from_public_bytes(raw)


def _jwks_members(document: object, source: str) -> list[object]:
    if isinstance(document, Mapping) and "keys" in document:
        keys = document["keys"]
        if not isinstance(keys, list):
            raise KeyFormatError(f"{source}: member keys of a JWK Set must be an array")
        return keys
    return [document]


def load_keyring(path: Path) -> dict[str, Ed25519PublicKey]:
    """Allowed public keys by thumbprint, from a JWK / JWK Set file or a directory of them.

    In a directory every ``*.jwk`` and ``*.json`` file is read. The thumbprint is computed from
    the key itself; a ``kid`` member in the file is not trusted.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (PUBLIC_SUFFIX, ".json"))
    elif path.exists():
        files = [path]
    else:
        raise KeyFormatError(f"{path}: no such key file or directory")
    keys: dict[str, Ed25519PublicKey] = {}
    for file in files:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyFormatError(f"{file}: not a readable JSON JWK: {exc}") from exc
        for i, member in enumerate(_jwks_members(document, str(file))):
            key = public_key_from_jwk(member, f"{file} key {i}")
            keys[jwk_thumbprint(public_jwk(key))] = key
    if not keys:
        raise KeyFormatError(f"{path}: no *.jwk or *.json public keys found")
    return keys


# -- the gateway's key -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The gateway's private key with its RFC 7638 key id."""

    private_key: Ed25519PrivateKey
    kid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kid", jwk_thumbprint(public_jwk(self.private_key.public_key())))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public JWK as ``bedside keys show`` prints it (with kid, alg and use)."""
        return {**public_jwk(self.public_key), "kid": self.kid, "alg": JWS_ALG, "use": "sig"}

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (must not exist) with ``mode`` from the start, write and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class KeyStore:
    """The key directory ``<data dir>/keys``; see the module text for its layout."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / KEYS_DIRNAME
        self.private_path = self.directory / PRIVATE_KEY_FILENAME
        self.public_directory = self.directory / PUBLIC_DIRNAME

    def _ensure_dirs(self) -> None:
        try:
            self.public_directory.mkdir(mode=KEYS_DIR_MODE, parents=True, exist_ok=True)
            self.directory.chmod(KEYS_DIR_MODE)
        except OSError as exc:
            raise KeyStoreError(f"{self.directory}: cannot create key directory: {exc}") from exc

    def _publish(self, key: SigningKey) -> None:
        """Write ``public/<kid>.jwk`` when missing (public keys are kept forever)."""
        path = self.public_directory / f"{key.kid}{PUBLIC_SUFFIX}"
        if path.exists():
            return
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        _write_new_file(tmp, (json.dumps(key.public_jwk) + "\n").encode(), 0o644)
        tmp.replace(path)
        _fsync_dir(self.public_directory)

    def load(self) -> SigningKey:
        """The current key; ``KeyStoreError`` when missing, unreadable or readable by others."""
        try:
            info = self.private_path.stat()
            pem = self.private_path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyStoreError(
                f"{self.private_path}: no gateway key yet; `bedside keys show` creates one"
            ) from exc
        except OSError as exc:
            raise KeyStoreError(f"{self.private_path}: cannot read the gateway key: {exc}") from exc
        if info.st_mode & _GROUP_OTHER_BITS:
            raise KeyStoreError(
                f"{self.private_path}: private key is accessible to group/others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {self.private_path}`"
            )
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(f"{self.private_path}: not an unencrypted PKCS#8 PEM key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyStoreError(f"{self.private_path}: not an Ed25519 key")
        key = SigningKey(private)
        self._ensure_dirs()
        self._publish(key)
        return key

    def load_or_create(self) -> SigningKey:
        """The current key, created (mode 0600, atomically) on first use."""
        if not self.private_path.exists():
            self._ensure_dirs()
            key = SigningKey.generate()
            tmp = self.directory / f".{PRIVATE_KEY_FILENAME}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            _write_new_file(tmp, _pem(key), PRIVATE_KEY_MODE)
            try:
                os.link(tmp, self.private_path)  # fails if a concurrent start created one first
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            _fsync_dir(self.directory)
        return self.load()

    def rotate(self) -> tuple[SigningKey | None, SigningKey]:
        """Replace the current key by a new one; earlier public keys stay in ``public/``.

        The old private key is overwritten (atomic rename); returns (old or None, new).
        """
        old = self.load() if self.private_path.exists() else None
        self._ensure_dirs()
        new = SigningKey.generate()
        self._publish(new)  # public first: a crash in between leaves an extra public key only
        tmp = self.directory / f".{PRIVATE_KEY_FILENAME}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        _write_new_file(tmp, _pem(new), PRIVATE_KEY_MODE)
        tmp.replace(self.private_path)
        _fsync_dir(self.directory)
        return old, new

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Current and earlier public keys by kid (what verification of old Bundles needs)."""
        return load_keyring(self.public_directory)


def _pem(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- signing ---------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def fhir_instant(moment: datetime) -> str:
    """FHIR ``instant`` (milliseconds, ``Z`` for UTC); ``moment`` must be timezone-aware."""
    if moment.tzinfo is None:
        raise ValueError("a FHIR instant needs a timezone-aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _EdDSA(EdDSAAlgorithm):
    """RFC 8037 ``EdDSA`` as joserfc implements it, without its RFC 9864 deprecation warning.

    joserfc warns (``SecurityWarning``) at every use of ``EdDSA``; the signature contract fixes that
    name for what the gateway signs (receivers also accept ``Ed25519``). The warning is dropped
    here only, for :data:`_REGISTRY`: joserfc's default registry, and every other use of joserfc in
    the process, still warn.
    """

    security_warning = None  # type: ignore[assignment]  # JWSAlgModel declares str | None


# The algorithms a signature may use: ours, and RFC 9864's fully-specified name for it. Header
# parameters the verifier does not know are ignored (the policy checks in
# :func:`_header_kid` refuse the ones that matter: crit, b64).
_REGISTRY = jws.JWSRegistry(algorithms=sorted(ACCEPTED_ALGS), strict_check_header=False)
_REGISTRY.algorithms = {
    JWS_ALG: _EdDSA(),
    JWS_ALG_FULLY_SPECIFIED: jws.JWSRegistry.algorithms[JWS_ALG_FULLY_SPECIFIED],
}


class Signer:
    """Signs Bundles with the gateway key; ``who`` is the FHIR Reference to the gateway Device."""

    def __init__(
        self,
        key: SigningKey,
        who: Mapping[str, Any],
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.key = key
        self.who = dict(who)
        self._clock = clock
        self._header = {"alg": JWS_ALG, "kid": key.kid}
        self._jwk = OKPKey.import_key(key.private_key)

    @property
    def kid(self) -> str:
        return self.key.kid

    def sign_detached(self, payload: bytes) -> str:
        """Compact JWS of ``payload`` with the payload part left empty (RFC 7515 App. F)."""
        compact = jws.serialize_compact(self._header, payload, self._jwk, registry=_REGISTRY)
        return jws.detach_content(compact)

    def sign_bundle(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``bundle`` with ``signature`` (re)made over the rest of it.

        Raises :class:`~gateway.fhir.jsonio.FhirJsonError` when the Bundle has no canonical form
        (a non-finite number, an integer beyond ±(2^53-1), a non-JSON value).
        """
        body = {name: value for name, value in bundle.items() if name != "signature"}
        jws_text = self.sign_detached(jsonio.canonical(body))
        body["signature"] = {
            "type": [dict(SIGNATURE_TYPE)],
            "when": fhir_instant(self._clock()),
            "who": dict(self.who),
            "sigFormat": SIG_FORMAT,
            "data": base64.b64encode(jws_text.encode("ascii")).decode("ascii"),
        }
        return body


# -- verification ----------------------------------------------------------------------------------


def _fail(reason: VerifyFailure, detail: str) -> SignatureError:
    return SignatureError(reason, detail)


def _signature_element(bundle: Mapping[str, Any]) -> Mapping[str, Any]:
    signature = bundle.get("signature")
    if signature is None:
        raise _fail(VerifyFailure.UNSIGNED, "the Bundle has no signature element")
    if not isinstance(signature, Mapping):
        raise _fail(VerifyFailure.MALFORMED_SIGNATURE, "Bundle.signature is not an object")
    types = signature.get("type")
    if not isinstance(types, list) or not any(
        isinstance(t, Mapping)
        and t.get("system") == SIGNATURE_TYPE_SYSTEM
        and t.get("code") == SIGNATURE_TYPE_SOURCE
        for t in types
    ):
        raise _fail(
            VerifyFailure.MALFORMED_SIGNATURE,
            f"Signature.type lacks {SIGNATURE_TYPE_SYSTEM}#{SIGNATURE_TYPE_SOURCE} (source)",
        )
    for member in ("when", "who", "data"):
        if not signature.get(member):
            raise _fail(VerifyFailure.MALFORMED_SIGNATURE, f"Signature.{member} is missing")
    if signature.get("sigFormat") != SIG_FORMAT:
        raise _fail(
            VerifyFailure.UNSUPPORTED_FORMAT,
            f"Signature.sigFormat is {signature.get('sigFormat')!r}, expected {SIG_FORMAT!r}",
        )
    return signature


def _detached_parts(compact: str) -> tuple[str, str]:
    """Header and signature parts of ``header..signature``; the payload part must be empty."""
    parts = compact.split(".")
    if len(parts) != JWS_COMPACT_PARTS:
        raise _fail(
            VerifyFailure.MALFORMED_JWS,
            f"compact JWS has {len(parts)} parts, expected {JWS_COMPACT_PARTS}",
        )
    header, payload, signature = parts
    if payload:
        raise _fail(
            VerifyFailure.PAYLOAD_NOT_DETACHED,
            "the JWS carries its payload; expected detached content (RFC 7515 App. F)",
        )
    return header, signature


def _compact_jws(data: object) -> str:
    """The compact JWS that ``Signature.data`` carries, checked to be ``header..signature``."""
    if not isinstance(data, str):
        raise _fail(VerifyFailure.MALFORMED_JWS, "Signature.data is not a base64 string")
    try:
        compact = base64.b64decode(data, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _fail(VerifyFailure.MALFORMED_JWS, "Signature.data is not base64 of ASCII") from exc
    _detached_parts(compact)
    return compact


def _header_kid(header_b64: str) -> str:
    """The verifier's policy on the protected header; returns its kid."""
    try:
        header = json.loads(b64url_decode(header_b64))
    except ValueError as exc:
        raise _fail(VerifyFailure.MALFORMED_JWS, "JWS header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise _fail(VerifyFailure.MALFORMED_JWS, "JWS header is not a JSON object")
    if header.get("alg") not in ACCEPTED_ALGS:
        raise _fail(
            VerifyFailure.UNSUPPORTED_ALGORITHM,
            f"JWS alg is {header.get('alg')!r}, expected {JWS_ALG!r}",
        )
    for name in UNSUPPORTED_HEADERS:
        if name in header:
            raise _fail(VerifyFailure.UNSUPPORTED_HEADER, f"JWS header parameter {name!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _fail(VerifyFailure.UNKNOWN_KEY, "JWS header has no kid")
    return kid


def verify_detached(compact: str, payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Verify a detached compact JWS over ``payload``; returns the kid. Raises SignatureError."""
    if len(parts := compact.split(".")) != JWS_COMPACT_PARTS or parts[1]:
        raise _fail(VerifyFailure.MALFORMED_JWS, "expected header..signature")
    header_b64, _, signature_b64 = parts
    kid = _header_kid(header_b64)
    key = keys.get(kid)
    if key is None:
        raise _fail(VerifyFailure.UNKNOWN_KEY, f"kid {kid!r} is not among the allowed keys")
    try:
        b64url_decode(signature_b64)
    except ValueError as exc:
        raise _fail(VerifyFailure.MALFORMED_JWS, "JWS signature is not base64url") from exc
    try:
        jws.deserialize_compact(
            compact, OKPKey.import_key(key), payload=payload, registry=_REGISTRY
        )
    except BadSignatureError as exc:
        raise _fail(
            VerifyFailure.BAD_SIGNATURE,
            f"signature by {kid} does not match the Bundle (altered after signing?)",
        ) from exc
    except JoseError as exc:  # a header value of the wrong type, a part beyond joserfc's limits
        raise _fail(VerifyFailure.MALFORMED_JWS, f"JWS refused: {exc}") from exc
    return kid


def verify_bundle(bundle: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Check ``bundle``'s signature against the allowed ``keys`` (kid → key); returns the kid.

    Raises :class:`SignatureError` whose ``reason`` names the failed check.
    """
    compact = _compact_jws(_signature_element(bundle)["data"])
    body = {name: value for name, value in bundle.items() if name != "signature"}
    try:
        canonical = jsonio.canonical(body)
    except jsonio.FhirJsonError as exc:
        raise _fail(VerifyFailure.NOT_CANONICALIZABLE, str(exc)) from exc
    return verify_detached(compact, canonical, keys)


def public_key_file_text(key: SigningKey) -> str:
    """One line of JSON: the public JWK (what ``bedside keys show`` prints last)."""
    return json.dumps(key.public_jwk, separators=(",", ":"))
