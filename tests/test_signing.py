"""Signing: canonical JSON, JWS with detached payload, FHIR Signature, keys on disk."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import stat
import struct
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey

from gateway.fhir import jsonio
from gateway.forward.errors import KeyFormatError, KeyStoreError, SignatureError, VerifyFailure
from gateway.forward.signing import (
    SIGNATURE_TYPE,
    KeyStore,
    Signer,
    SigningKey,
    b64url_decode,
    b64url_encode,
    jwk_thumbprint,
    load_keyring,
    public_jwk,
    public_key_from_jwk,
    verify_bundle,
    verify_detached,
)
from tests.fixtures_mqtt import GATEWAY_WHO, heart_rate, transaction_bundle

# RFC 8037 Appendix A.1: the example Ed25519 key.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
# RFC 8037 Appendix A.3: its RFC 7638 thumbprint.
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
# RFC 8037 Appendix A.4: JWS of "Example of Ed25519 signing" with header {"alg":"EdDSA"}.
RFC8037_HEADER = "eyJhbGciOiJFZERTQSJ9"
RFC8037_PAYLOAD = "RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIGNATURE = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def rfc8037_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D)))


def fixed_signer(key: SigningKey | None = None) -> Signer:
    return Signer(key or rfc8037_key(), GATEWAY_WHO, clock=lambda: WHEN)


def bundle() -> dict[str, Any]:
    b = transaction_bundle([heart_rate("C0FFEE0000000001--147842-20240501120000.00", "72.0")])
    b["id"] = "5f0c7d84-1c3c-4c1b-9b8e-0d3f0d5a6e01"
    return b


def keyring(key: SigningKey) -> dict[str, Any]:
    return {key.kid: key.public_key}


# -- golden output ---------------------------------------------------------------------------------
# The exact bytes this code signed before JCS moved to the ``rfc8785`` package and the JWS to
# ``joserfc`` (Ed25519 is deterministic, RFC 8032 §5.1.6): a change of library must not change a
# single signature, or receivers' stored Bundles would stop verifying.

GOLDEN_PRIVATE_KEY = bytes(range(32))
GOLDEN_WHEN = dt.datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=dt.UTC)
GOLDEN_SIGNED_JSON = (
    '{"resourceType":"Bundle","id":"golden-1","type":"collection","entry":[{"resource":{"'
    'resourceType":"Observation","status":"final","code":{"text":"Température corporelle '
    '— 体温 🌡"},"valueQuantity":{"value":36.60,"unit":"°C"},"component":[{"valueQuantity":{'
    '"value":1.2E+2}},{"valueQuantity":{"value":-0.000001}},{"valueSampledData":{"data":"'
    '1 2 3","factor":0.1}}],"note":[{"text":"tab\\there, quote \\" and backslash \\\\ and \\u0'
    '001"}],"extension":[[1,[2,[3,[]]]],{"€":true,"a":null,"😀":9007199254740991}]}}],"sig'
    'nature":{"type":[{"system":"urn:iso-astm:E1762-95:2013","code":"1.2.840.10065.1.12.1'
    '.14","display":"Source Signature"}],"when":"2024-05-01T12:30:15.250Z","who":{"refere'
    'nce":"urn:uuid:7d5b7a3e-8a6f-5f5e-9c1e-3f1f2b0b6c01","type":"Device"},"sigFormat":"a'
    'pplication/jose","data":"ZXlKaGJHY2lPaUpGWkVSVFFTSXNJbXRwWkNJNklqRkpSekowVFVnM1NqSjN'
    "Za3BhYms5bU9FeEtlbEZwZEV0bU4weE5kbTlCUld4emRVUk5WazAxTkZraWZRLi4xdXdjZzZHTFlMTHcycl9"
    "TREtITWxzMHBTVlNuOXVXZkZieW5PNFdVVzlJYlBwdEZTRzlKWjdjV1o4MVljTkR1SVZLOEoxSFJNYlpMZWI"
    'yd0ExNVhCQQ=="}}'
)
GOLDEN_JWS = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6IjFJRzJ0TUg3SjJ3Ykpabk9mOExKelFpdEtmN0xNdm9BRWxzdURNVk01"
    "NFkifQ..1uwcg6GLYLLw2r_SDKHMls0pSVSn9uWfFbynO4WUW9IbPptFSG9JZ7cWZ81YcNDuIVK8J1HRMbZL"
    "eb2wA15XBA"
)
GOLDEN_CANONICAL = (
    '{"entry":[{"resource":{"code":{"text":"Température corporelle — 体温 🌡"},"component":['
    '{"valueQuantity":{"value":120}},{"valueQuantity":{"value":-0.000001}},{"valueSampled'
    'Data":{"data":"1 2 3","factor":0.1}}],"extension":[[1,[2,[3,[]]]],{"a":null,"€":true'
    ',"😀":9007199254740991}],"note":[{"text":"tab\\there, quote \\" and backslash \\\\ and \\u'
    '0001"}],"resourceType":"Observation","status":"final","valueQuantity":{"unit":"°C","'
    'value":36.6}}}],"id":"golden-1","resourceType":"Bundle","type":"collection"}'
)
GOLDEN_KID = "1IG2tMH7J2wbJZnOf8LJzQitKf7LMvoAElsuDMVM54Y"


def golden_bundle() -> dict[str, Any]:
    """Decimals (trailing zeros, exponent, tiny), unicode (BMP, astral, escapes), nested arrays."""
    return {
        "resourceType": "Bundle",
        "id": "golden-1",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "Température corporelle — 体温 🌡"},
                    "valueQuantity": {"value": Decimal("36.60"), "unit": "°C"},
                    "component": [
                        {"valueQuantity": {"value": Decimal("1.2E+2")}},
                        {"valueQuantity": {"value": Decimal("-0.000001")}},
                        {"valueSampledData": {"data": "1 2 3", "factor": Decimal("0.1")}},
                    ],
                    "note": [{"text": 'tab\there, quote " and backslash \\ and \u0001'}],
                    "extension": [
                        [1, [2, [3, []]]],
                        {"€": True, "a": None, "\U0001f600": 9007199254740991},
                    ],
                }
            }
        ],
    }


def test_golden_signature_is_unchanged() -> None:
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(GOLDEN_PRIVATE_KEY))
    signed = Signer(key, GATEWAY_WHO, clock=lambda: GOLDEN_WHEN).sign_bundle(golden_bundle())
    assert key.kid == GOLDEN_KID
    assert jsonio.canonical(golden_bundle()) == GOLDEN_CANONICAL.encode()
    assert base64.b64decode(signed["signature"]["data"]).decode() == GOLDEN_JWS
    assert jsonio.dumps(signed) == GOLDEN_SIGNED_JSON
    assert verify_bundle(jsonio.loads(GOLDEN_SIGNED_JSON), keyring(key)) == GOLDEN_KID


# -- RFC vectors -------------------------------------------------------------------------------


def test_thumbprint_of_rfc8037_key() -> None:
    # RFC 8037 Appendix A.3
    assert jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == RFC8037_THUMBPRINT
    assert rfc8037_key().kid == RFC8037_THUMBPRINT
    assert public_jwk(rfc8037_key().public_key) == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}


def test_ed25519_signature_matches_rfc8037_a4() -> None:
    # RFC 8037 Appendix A.4 (signing) and A.5 (verification)
    assert b64url_encode(b'{"alg":"EdDSA"}') == RFC8037_HEADER
    assert b64url_encode(b"Example of Ed25519 signing") == RFC8037_PAYLOAD
    signing_input = f"{RFC8037_HEADER}.{RFC8037_PAYLOAD}".encode()
    signature = rfc8037_key().private_key.sign(signing_input)
    assert b64url_encode(signature) == RFC8037_SIGNATURE
    public = public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}, "rfc")
    public.verify(b64url_decode(RFC8037_SIGNATURE), signing_input)


def test_rfc8785_sample_canonicalises_byte_for_byte() -> None:
    # RFC 8785 §3.2.3 (input) and §3.2.4 (output)
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], '
        '"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", '
        '"literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert jsonio.canonical(jsonio.loads(text)) == expected.encode()


@pytest.mark.parametrize(
    ("ieee_hex", "text"),
    [
        # RFC 8785 Appendix B: IEEE-754 doubles and their JCS text
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ],
)
def test_rfc8785_numbers(ieee_hex: str, text: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(ieee_hex))
    assert jsonio.canonical(number) == text.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("2.00"), b"2"),
        (Decimal("2.0"), b"2"),
        (Decimal("72.5"), b"72.5"),
        (Decimal("0.1"), b"0.1"),
        (Decimal("1.2E+2"), b"120"),
        (Decimal("-0"), b"0"),
        (Decimal("36.60"), b"36.6"),
    ],
)
def test_decimal_canonicalises_as_nearest_double(value: Decimal, text: bytes) -> None:
    assert jsonio.canonical(value) == text


@pytest.mark.parametrize(
    "value",
    [Decimal("NaN"), Decimal("1E+400"), 2**60, float("inf"), {1: "x"}, b"bytes", {"a": object()}],
)
def test_values_without_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(jsonio.FhirJsonError):
        jsonio.canonical(value)


def test_wire_json_keeps_decimal_digits_and_refuses_bad_text() -> None:
    assert jsonio.dumps({"v": Decimal("2.00"), "t": "é"}) == '{"v":2.00,"t":"é"}'
    assert jsonio.loads('{"v":2.00,"n":3}') == {"v": Decimal("2.00"), "n": 3}
    for text in ('{"a":1,"a":2}', '{"a":NaN}', '{"a":Infinity}', "{", b"\xff"):
        with pytest.raises(jsonio.FhirJsonError):
            jsonio.loads(text)
    with pytest.raises(jsonio.NotAnObjectError):  # FHIR JSON text is one resource
        jsonio.loads("[1]")


jcs_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
jcs_tree = st.recursive(
    jcs_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(value=jcs_tree)
def test_canonical_matches_the_rfc8785_package(value: object) -> None:
    # Differential check against the reference implementation (pypi rfc8785, trail of bits),
    # including non-BMP member names (UTF-16 order) and every float layout.
    assert jsonio.canonical(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


def test_a_fhir_bundle_takes_the_fast_path_and_matches_the_reference() -> None:
    bundle = transaction_bundle([heart_rate("fast-1", "72.0"), heart_rate("fast-2", "0.25")])
    assert jsonio._fast(bundle)  # no fallback for what the gateway signs every second
    reference = rfc8785.dumps(jsonio._doubles(bundle))  # type: ignore[arg-type]
    assert jsonio.canonical(bundle) == reference
    with pytest.raises(jsonio._NotFastError):  # edge cases take the reference path
        jsonio._fast(golden_bundle())
    assert jsonio.canonical(golden_bundle()) == GOLDEN_CANONICAL.encode()


@settings(derandomize=True, max_examples=500, deadline=None)
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_decimal_of_any_double_canonicalises_as_that_double(number: float) -> None:
    # The wire text parses to a Decimal; its canonical form is the ECMAScript layout of the double.
    assert jsonio.canonical(Decimal(repr(number))) == rfc8785.dumps(number)


# -- signing and verifying -----------------------------------------------------------------------


def test_signed_bundle_has_the_fhir_signature() -> None:
    signed = fixed_signer().sign_bundle(bundle())
    header = b64url_encode(b'{"alg":"EdDSA","kid":"' + RFC8037_THUMBPRINT.encode() + b'"}')
    compact = base64.b64decode(signed["signature"]["data"]).decode()
    head, payload, signature = compact.split(".")
    assert (head, payload) == (header, "")  # detached: RFC 7515 Appendix F
    assert signed == {
        **bundle(),
        "signature": {
            "type": [SIGNATURE_TYPE],
            "when": "2024-05-01T12:30:00.000Z",
            "who": GATEWAY_WHO,
            "sigFormat": "application/jose",
            "data": signed["signature"]["data"],
        },
    }
    # Ed25519 is deterministic (RFC 8032 §5.1.6): the same key and Bundle give the same signature.
    assert fixed_signer().sign_bundle(bundle()) == signed
    assert len(b64url_decode(signature)) == 64
    assert verify_bundle(signed, keyring(rfc8037_key())) == RFC8037_THUMBPRINT
    Bundle.model_validate(json.loads(jsonio.dumps(signed)))  # FHIR R4 Bundle with Signature


def test_joserfc_verifies_our_detached_jws() -> None:
    # An independent JOSE implementation checks the same bytes (interoperability).
    key = SigningKey.generate()
    signed = fixed_signer(key).sign_bundle(bundle())
    compact = base64.b64decode(signed["signature"]["data"]).decode()
    payload = jsonio.canonical({k: v for k, v in signed.items() if k != "signature"})
    public = OKPKey.import_key(public_jwk(key.public_key))
    assert public.thumbprint() == key.kid
    # joserfc flags "EdDSA" as deprecated by RFC 9864 (fully-specified "Ed25519"); the signature
    # contract (docs/contracts.md) fixes "EdDSA" for the signer.
    with pytest.warns(SecurityWarning, match="RFC 9864"):
        token = jws.deserialize_compact(compact, public, payload=payload, algorithms=["EdDSA"])
    assert token.protected == {"alg": "EdDSA", "kid": key.kid}
    assert token.payload == payload


def test_resigning_replaces_the_old_signature() -> None:
    signer = fixed_signer()
    once = signer.sign_bundle(bundle())
    assert signer.sign_bundle(once) == once


def test_wire_round_trip_verifies() -> None:
    key = SigningKey.generate()
    signed = fixed_signer(key).sign_bundle(bundle())
    assert verify_bundle(jsonio.loads(jsonio.dumps(signed)), keyring(key)) == key.kid


def test_precision_only_change_is_not_detected() -> None:
    # Documented limitation of JCS numbers (see gateway.fhir.jsonio): 72.0 and 72.00 are
    # one double. Any change of value is detected (test_tampering below).
    key = rfc8037_key()
    signed = fixed_signer(key).sign_bundle(bundle())
    signed["entry"][0]["resource"]["valueQuantity"]["value"] = Decimal("72.00")
    assert verify_bundle(signed, keyring(key)) == key.kid


def _set_jws(b: dict[str, Any], header: dict[str, Any], payload: str = "") -> None:
    compact = base64.b64decode(b["signature"]["data"]).decode()
    signature = compact.split(".")[2]
    head = b64url_encode(json.dumps(header).encode())
    b["signature"]["data"] = base64.b64encode(f"{head}.{payload}.{signature}".encode()).decode()


def _value(b: dict[str, Any], value: object) -> None:
    b["entry"][0]["resource"]["valueQuantity"]["value"] = value


TAMPERING: list[tuple[str, Callable[[dict[str, Any]], None], VerifyFailure]] = [
    ("no signature", lambda b: b.pop("signature"), VerifyFailure.UNSIGNED),
    ("signature a string", lambda b: b.update(signature="x"), VerifyFailure.MALFORMED_SIGNATURE),
    (
        "author signature type",
        lambda b: b["signature"].update(
            type=[{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}]
        ),
        VerifyFailure.MALFORMED_SIGNATURE,
    ),
    ("no who", lambda b: b["signature"].pop("who"), VerifyFailure.MALFORMED_SIGNATURE),
    ("no data", lambda b: b["signature"].pop("data"), VerifyFailure.MALFORMED_SIGNATURE),
    (
        "pkcs7",
        lambda b: b["signature"].update(sigFormat="application/pkcs7-signature"),
        VerifyFailure.UNSUPPORTED_FORMAT,
    ),
    ("data not base64", lambda b: b["signature"].update(data="%%%"), VerifyFailure.MALFORMED_JWS),
    (
        "two parts",
        lambda b: b["signature"].update(data=base64.b64encode(b"a.b").decode()),
        VerifyFailure.MALFORMED_JWS,
    ),
    (
        "header not JSON",
        lambda b: b["signature"].update(data=base64.b64encode(b"bm90anNvbg..c2ln").decode()),
        VerifyFailure.MALFORMED_JWS,
    ),
    (
        "attached payload",
        lambda b: _set_jws(b, {"alg": "EdDSA", "kid": RFC8037_THUMBPRINT}, "e30"),
        VerifyFailure.PAYLOAD_NOT_DETACHED,
    ),
    (
        "alg none",
        lambda b: _set_jws(b, {"alg": "none", "kid": RFC8037_THUMBPRINT}),
        VerifyFailure.UNSUPPORTED_ALGORITHM,
    ),
    (
        "HS256",
        lambda b: _set_jws(b, {"alg": "HS256", "kid": RFC8037_THUMBPRINT}),
        VerifyFailure.UNSUPPORTED_ALGORITHM,
    ),
    (
        "b64 false",
        lambda b: _set_jws(
            b, {"alg": "EdDSA", "kid": RFC8037_THUMBPRINT, "b64": False, "crit": ["b64"]}
        ),
        VerifyFailure.UNSUPPORTED_HEADER,
    ),
    ("no kid", lambda b: _set_jws(b, {"alg": "EdDSA"}), VerifyFailure.UNKNOWN_KEY),
    (
        "other kid",
        lambda b: _set_jws(b, {"alg": "EdDSA", "kid": "someone-else"}),
        VerifyFailure.UNKNOWN_KEY,
    ),
    ("value changed", lambda b: _value(b, Decimal("73.0")), VerifyFailure.BAD_SIGNATURE),
    ("bundle id changed", lambda b: b.update(id="other"), VerifyFailure.BAD_SIGNATURE),
    (
        "entry added",
        lambda b: b["entry"].append(copy.deepcopy(b["entry"][0])),
        VerifyFailure.BAD_SIGNATURE,
    ),
    ("member added", lambda b: b.update(timestamp="2024-05-01"), VerifyFailure.BAD_SIGNATURE),
    ("value NaN", lambda b: _value(b, float("nan")), VerifyFailure.NOT_CANONICALIZABLE),
]


@pytest.mark.parametrize(
    ("change", "reason"), [(c, r) for _, c, r in TAMPERING], ids=[n for n, _, _ in TAMPERING]
)
def test_tampering(change: Callable[[dict[str, Any]], None], reason: VerifyFailure) -> None:
    signed = fixed_signer().sign_bundle(bundle())
    change(signed)
    with pytest.raises(SignatureError) as caught:
        verify_bundle(signed, keyring(rfc8037_key()))
    assert caught.value.reason is reason


def test_fully_specified_ed25519_alg_is_accepted() -> None:
    # RFC 9864 registers "Ed25519" for the same algorithm; a verifier may meet it.
    key = rfc8037_key()
    payload = b'{"a":1}'
    head = b64url_encode(json.dumps({"alg": "Ed25519", "kid": key.kid}).encode())
    signature = key.private_key.sign(f"{head}.{b64url_encode(payload)}".encode())
    assert verify_detached(f"{head}..{b64url_encode(signature)}", payload, keyring(key)) == key.kid


def test_signature_from_another_key_with_our_kid_fails() -> None:
    stranger = SigningKey.generate()
    signed = fixed_signer(stranger).sign_bundle(bundle())
    compact = base64.b64decode(signed["signature"]["data"]).decode()
    with pytest.raises(SignatureError) as caught:
        verify_detached(
            compact, b"{}", {stranger.kid: SigningKey.generate().public_key}
        )  # right kid, wrong key
    assert caught.value.reason is VerifyFailure.BAD_SIGNATURE


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1e9, max_value=1e9),
    st.text(max_size=12),
)
json_tree = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
ROUND_TRIP_KEY = SigningKey.generate()


@settings(derandomize=True, max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.text(min_size=1, max_size=8), json_tree, max_size=5))
def test_any_json_bundle_survives_the_wire(extra: dict[str, Any]) -> None:
    # sign → wire text → parse (numbers as Decimal) → verify: always valid.
    b = {**extra, "resourceType": "Bundle", "id": "x", "type": "collection"}
    b.pop("signature", None)
    signed = fixed_signer(ROUND_TRIP_KEY).sign_bundle(b)
    received = jsonio.loads(jsonio.dumps(signed))
    assert verify_bundle(received, keyring(ROUND_TRIP_KEY)) == ROUND_TRIP_KEY.kid


# -- keys on disk ------------------------------------------------------------------------------


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key = store.load_or_create()
    assert stat.S_IMODE(store.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert KeyStore(tmp_path).load_or_create().kid == key.kid
    assert list(store.public_keys()) == [key.kid]
    published = json.loads((store.public_directory / f"{key.kid}.jwk").read_text())
    assert published == {**public_jwk(key.public_key), "kid": key.kid, "alg": "EdDSA", "use": "sig"}


def test_rotation_keeps_old_public_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.load_or_create()
    old_bundle = fixed_signer(first).sign_bundle(bundle())
    old, new = store.rotate()
    assert old is not None
    assert old.kid == first.kid
    assert new.kid != first.kid
    assert store.load().kid == new.kid
    assert stat.S_IMODE(store.private_path.stat().st_mode) == 0o600
    assert set(store.public_keys()) == {first.kid, new.kid}
    # Bundles signed before the rotation still verify against the kept public keys.
    assert verify_bundle(old_bundle, store.public_keys()) == first.kid
    assert (
        verify_bundle(fixed_signer(new).sign_bundle(bundle()), load_keyring(store.public_directory))
        == new.kid
    )


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.load_or_create()
    os.chmod(store.private_path, 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.load()


def test_keyring_formats(tmp_path: Path) -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    single = tmp_path / "a.jwk"
    single.write_text(json.dumps(a.public_jwk))
    jwks = tmp_path / "set.json"
    jwks.write_text(json.dumps({"keys": [a.public_jwk, public_jwk(b.public_key)]}))
    assert set(load_keyring(single)) == {a.kid}
    assert set(load_keyring(jwks)) == {a.kid, b.kid}
    assert set(load_keyring(tmp_path)) == {a.kid, b.kid}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": RFC8037_D}, "private key"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "expected an Ed25519 key"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "32 bytes"),
        ([1, 2], "expected a JWK object"),
    ],
)
def test_bad_jwk_files(tmp_path: Path, document: object, message: str) -> None:
    path = tmp_path / "key.jwk"
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFormatError, match=message):
        load_keyring(path)
