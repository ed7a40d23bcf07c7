"""The accepted-sensor list (gateway.ble.registry), passkeys (gateway.ble.pairing) and the bond
file (gateway.ble.bumble.security) on their own."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
from bumble.keys import PairingKeys

from gateway.ble.bumble.security import BondStore, BondStoreError, forget
from gateway.ble.pairing import PasskeyBroker, PasskeyError, check_passkey
from gateway.ble.registry import SensorListError, SensorRegistry, check_address

A = "F0:12:34:56:78:9A"
B = "C0:FF:EE:00:00:01"


def test_addresses_are_checked_and_made_canonical() -> None:
    assert check_address(" f0:12:34:56:78:9a ") == A
    for bad in ("F0:12:34:56:78", "F0-12-34-56-78-9A", "G0:12:34:56:78:9A", ""):
        with pytest.raises(SensorListError, match="six hex bytes"):
            check_address(bad)


def test_accept_and_forget_are_kept_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "sensors.json"
    registry = SensorRegistry.load(path, frozenset({B}))
    assert registry.allows(B)
    assert not registry.allows(A)
    assert registry.source(A) is None
    assert registry.accept(A.lower()) is True
    assert registry.accept(A) is False  # nothing changed
    assert registry.accept(B) is False  # configured already
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SensorRegistry.load(path, frozenset({B}))
    assert again.allows(A)
    assert again.source(A) == "accepted"
    again.forget(A)
    assert not SensorRegistry.load(path, frozenset({B})).allows(A)


def test_a_configured_sensor_is_not_forgotten_here(tmp_path: Path) -> None:
    registry = SensorRegistry.load(tmp_path / "sensors.json", frozenset({B}))
    with pytest.raises(SensorListError, match=r"configuration file \(ble.allow\)"):
        registry.forget(B)
    assert registry.allows(B)


def test_forgetting_in_demo_mode_keeps_the_sensor_out_until_accepted(tmp_path: Path) -> None:
    path = tmp_path / "sensors.json"
    registry = SensorRegistry.load(path, frozenset(), auto_accept=True)
    assert registry.source(A) == "auto"
    registry.forget(A)
    assert not SensorRegistry.load(path, frozenset(), auto_accept=True).allows(A)
    registry.accept(A)
    assert SensorRegistry.load(path, frozenset(), auto_accept=True).source(A) == "accepted"


def test_an_unreadable_list_leaves_the_configured_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sensors.json"
    path.write_text('{"accepted": ["not an address"]}')
    registry = SensorRegistry.load(path, frozenset({B}))
    assert registry.allows(B)
    assert not registry.accepted
    assert "cannot read the accepted sensors" in caplog.text


def test_a_list_that_cannot_be_saved_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    registry = SensorRegistry(blocker / "sensors.json")
    with pytest.raises(SensorListError, match="cannot save the accepted sensors"):
        registry.accept(A)


@pytest.mark.parametrize("good", ["123456", "000042", 42, " 999999 "])
def test_passkeys_are_six_digits(good: str | int) -> None:
    assert 0 <= check_passkey(good) <= 999_999


@pytest.mark.parametrize("bad", ["1234567", "12345x", "-1", "", 1_000_000])
def test_a_malformed_passkey_is_refused(bad: str | int) -> None:
    with pytest.raises(PasskeyError, match="six digits"):
        check_passkey(bad)


async def test_a_passkey_given_before_the_pairing_is_used_once() -> None:
    broker = PasskeyBroker(wait_s=0.05)
    assert broker.give(A.lower(), "024680") is False  # nobody waits yet: kept
    assert await broker.passkey(A) == 24680
    assert await broker.passkey(A) is None  # used once; none came within the wait


async def test_a_pairing_waits_for_the_passkey() -> None:
    broker = PasskeyBroker(wait_s=30)
    asking = asyncio.create_task(broker.passkey(A))
    for _ in range(10):  # a few loop turns: the request registers before it awaits
        if A in broker.waiting():
            break
        await asyncio.sleep(0)
    assert broker.give(A, 135790) is True
    assert await asking == 135790
    assert broker.waiting() == frozenset()


async def test_bonds_and_the_identity_survive_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "bonds.json"
    store = BondStore(path)
    identity = store.identity
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = PairingKeys.from_dict({"ltk": {"value": "00" * 15 + "01", "authenticated": True}})
    await store.update(f"{A}/P", keys)
    again = BondStore(path)
    assert again.identity == identity
    assert list(again.addresses()) == [A]
    assert again.all_keys[f"{A}/P"].ltk is not None
    assert await forget(again, A.lower()) is True
    assert await forget(again, A) is False
    assert json.loads(path.read_text())["bonds"] == {}


def test_a_damaged_bond_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "bonds.json"
    path.write_text("{not json")
    with pytest.raises(BondStoreError, match="move the file away"):
        BondStore(path)
