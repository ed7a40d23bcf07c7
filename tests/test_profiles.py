"""Device profiles (gateway.profiles, device_profiles/*.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import ProfileError
from gateway.fhir.codes import code_table
from gateway.profiles import (
    DEFAULT_DIRECTORY,
    DeviceProfile,
    GhsLive,
    Measure,
    StoredRecords,
    Subscription,
    full_uuid,
    load_profile,
    load_profiles,
)


def u16(short: str) -> str:
    return f"0000{short.lower()}-0000-1000-8000-00805f9b34fb"


DIS_AND_BATTERY = [u16(s) for s in ("2A29", "2A24", "2A25", "2A27", "2A26", "2A23", "2A19")]
BATTERY_NOTIFY = Subscription(uuid=u16("2A19"), mode="notify")


def test_the_five_profiles_load() -> None:
    profiles = load_profiles()
    assert sorted(profiles) == ["bp", "ecg", "glucose", "spo2", "thermo"]
    for profile in profiles.values():
        assert profile.time_sync
        assert {r.uuid for r in profile.read} >= set(DIS_AND_BATTERY)
        assert BATTERY_NOTIFY in profile.subscribe


def test_ecg_profile() -> None:
    ecg = load_profiles()["ecg"]
    assert ecg.specialization == 528390  # MDC_DEV_SPEC_PROFILE_ECG: 8 << 16 | 4102
    assert ecg.match_services == (u16("180D"),)
    assert ecg.loinc == ("8867-4",)
    assert Subscription(uuid=u16("2A37"), mode="notify") in ecg.subscribe
    assert u16("2A38") in {r.uuid for r in ecg.read}
    assert ecg.measure == Measure(method="wait", timeout_s=20)
    assert ecg.ghs == GhsLive(
        live_observations=u16("2B8B"), control_point=u16("2BF4"), start="01", stop="02"
    )
    assert ecg.ghs.live_subscription == Subscription(uuid=u16("2B8B"), mode="notify")
    assert ecg.ghs.control_point_subscription == Subscription(uuid=u16("2BF4"), mode="indicate")
    assert bytes.fromhex(ecg.ghs.start) == b"\x01"
    assert ecg.stored_records is None


def test_spo2_profile() -> None:
    spo2 = load_profiles()["spo2"]
    assert spo2.specialization == 528388  # MDC_DEV_SPEC_PROFILE_PULS_OXIM
    assert spo2.match_services == (u16("1822"),)
    assert spo2.loinc == ("59408-5", "2708-6", "8867-4")
    assert Subscription(uuid=u16("2A5F"), mode="notify") in spo2.subscribe
    assert Subscription(uuid=u16("2A5E"), mode="indicate") in spo2.subscribe
    assert u16("2A60") in {r.uuid for r in spo2.read}
    assert spo2.measure == Measure(method="wait", timeout_s=20)


def test_bp_profile() -> None:
    bp = load_profiles()["bp"]
    assert bp.specialization == 528391  # MDC_DEV_SPEC_PROFILE_BPM
    assert bp.match_services == (u16("1810"),)
    assert bp.loinc == ("85354-9", "8480-6", "8462-4", "8867-4")
    assert Subscription(uuid=u16("2A35"), mode="indicate") in bp.subscribe
    assert Subscription(uuid=u16("2A36"), mode="notify") in bp.subscribe
    assert u16("2A49") in {r.uuid for r in bp.read}
    assert bp.stored_records == StoredRecords(racp=u16("2A52"), measurement=u16("2A35"))
    assert bp.measure == Measure(
        method="write",
        service="9a1c0001-5b3e-4f6a-8d2c-7e4b1f0a9c01",
        uuid="9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c01",
        value="01",
        timeout_s=120,
        burden="cuff-inflation",
    )
    assert bp.stored_records.racp_subscription == Subscription(uuid=u16("2A52"), mode="indicate")


def test_thermo_profile() -> None:
    thermo = load_profiles()["thermo"]
    assert thermo.specialization == 528392  # MDC_DEV_SPEC_PROFILE_TEMP
    assert thermo.match_services == (u16("1809"),)
    assert thermo.loinc == ("8310-5",)
    assert Subscription(uuid=u16("2A1C"), mode="indicate") in thermo.subscribe
    assert Subscription(uuid=u16("2A1E"), mode="notify") in thermo.subscribe
    assert u16("2A1D") in {r.uuid for r in thermo.read}


def test_glucose_profile() -> None:
    glucose = load_profiles()["glucose"]
    assert glucose.specialization == 528401  # MDC_DEV_SPEC_PROFILE_GLUCOSE: 8 << 16 | 4113
    assert glucose.match_services == (u16("1808"),)
    assert glucose.loinc == ("2339-0", "15074-8")
    assert Subscription(uuid=u16("2A18"), mode="notify") in glucose.subscribe
    assert Subscription(uuid=u16("2A34"), mode="notify") in glucose.subscribe
    assert u16("2A51") in {r.uuid for r in glucose.read}
    # GLS §3.4: records come only over the RACP; no trigger starts a reading.
    assert glucose.stored_records == StoredRecords(racp=u16("2A52"), measurement=u16("2A18"))
    assert glucose.measure.method == "manual"
    assert not glucose.on_demand


def test_profile_codes_are_known_to_the_fhir_code_table() -> None:
    table = code_table()
    loinc = {c.code for entry in table.mdc.values() for c in entry.loinc}
    for profile in load_profiles().values():
        assert set(profile.loinc) <= loinc, profile.kind
        assert profile.specialization in table.mdc, profile.kind


def test_default_directory_is_the_repository_one() -> None:
    assert Path(__file__).resolve().parents[1] / "device_profiles" == DEFAULT_DIRECTORY


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("2A35", "00002a35-0000-1000-8000-00805f9b34fb"),
        ("0x180d", "0000180d-0000-1000-8000-00805f9b34fb"),
        ("0001180D", "0001180d-0000-1000-8000-00805f9b34fb"),
        ("9A1C0002-5B3E-4F6A-8D2C-7E4B1F0A9C01", "9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c01"),
    ],
)
def test_full_uuid(given: str, full: str) -> None:
    assert full_uuid(given) == full


@pytest.mark.parametrize("bad", ["2A3", "2A3G", "", "9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c0"])
def test_full_uuid_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="UUID"):
        full_uuid(bad)


# -- Broken profiles name the file and the field ---------------------------------------------------

BP_TEXT = (DEFAULT_DIRECTORY / "bp.toml").read_text(encoding="utf-8")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    directory = tmp_path / "device_profiles"
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "timeout_s = 120",
            "timeout_s = 0",
            "device_profiles/bp.toml: measure.timeout_s: Input should be greater than 0",
        ),
        ('value = "01"', 'value = "0G"', "device_profiles/bp.toml: measure.value: '0G' is not hex"),
        ('value = "01"', 'value = "012"', "measure.value: '012' is not hex"),
        ('method = "write"', 'method = "shake"', "measure.method: Input should be 'write'"),
        ('value = "01"\n', "", "measure: method 'write' needs uuid and value"),
        (
            'uuid = "9a1c0002-5b3e-4f6a-8d2c-7e4b1f0a9c01"     # vendor "start measurement"\n',
            "",
            "measure: method 'write' needs uuid and value",
        ),
        ('"8480-6"', '"8480"', "loinc.1: String should match pattern"),
        ('"8480-6"', '"8480-66"', "loinc.1: String should match pattern"),
        ('uuid = "2A49"', 'uuid = "2A4"', "read.0.uuid: '2A4' is not a 16-bit"),
        ('mode = "indicate"', 'mode = "shout"', "subscribe.0.mode: Input should be 'notify'"),
        ('racp = "2A52"', 'racp = "RACP"', "stored_records.racp: 'RACP' is not a 16-bit"),
        ('kind = "bp"', 'kind = "ecg"', "bp.toml: kind: 'ecg' must equal the file name"),
        (
            "specialization = 528391",
            "specialization = 150020",
            "specialization: 150020 is not an MDC_DEV_SPEC",
        ),
        ('display = "Blood pressure monitor"', 'colour = "red"', "colour: Extra inputs"),
        (
            'match_services = ["1810"]',
            "match_services = []",
            "match_services: Tuple should have",
        ),
        ("[measure]", "[measure", "device_profiles/bp.toml: cannot read a TOML profile"),
    ],
)
def test_broken_profile_names_file_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in BP_TEXT
    path = _write(tmp_path, "bp.toml", BP_TEXT.replace(old, new, 1))
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(path)
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profiles(path.parent)


def test_wait_takes_no_target(tmp_path: Path) -> None:
    text = (DEFAULT_DIRECTORY / "spo2.toml").read_text(encoding="utf-8")
    assert 'method = "wait"' in text
    path = _write(
        tmp_path, "spo2.toml", text.replace('method = "wait"', 'method = "wait"\nvalue = "01"')
    )
    with pytest.raises(ProfileError, match=re.escape("measure: method 'wait' takes no uuid")):
        load_profile(path)


def test_duplicate_kind(tmp_path: Path) -> None:
    _write(tmp_path, "bp.toml", BP_TEXT)
    path = _write(tmp_path, "bp.TOML", BP_TEXT)
    with pytest.raises(ProfileError, match=r"kind: 'bp' is already defined in device_profiles/bp"):
        load_profiles(path.parent)


def test_two_kinds_matching_one_service(tmp_path: Path) -> None:
    _write(tmp_path, "bp.toml", BP_TEXT)
    path = _write(tmp_path, "cuff.toml", BP_TEXT.replace('kind = "bp"', 'kind = "cuff"'))
    with pytest.raises(ProfileError, match=r"match_services: 00001810-.* is also matched by"):
        load_profiles(path.parent)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such profile directory"):
        load_profiles(tmp_path / "absent")


def test_profiles_are_frozen() -> None:
    bp = load_profiles()["bp"]
    with pytest.raises(ValueError, match="frozen"):
        bp.kind = "x"  # type: ignore[misc]
    assert isinstance(bp, DeviceProfile)


def test_a_new_kind_is_just_a_file(tmp_path: Path) -> None:
    for name in ("bp.toml", "thermo.toml"):
        _write(tmp_path, name, (DEFAULT_DIRECTORY / name).read_text(encoding="utf-8"))
    scale = BP_TEXT.replace('kind = "bp"', 'kind = "scale"').replace('"1810"', '"181D"')
    path = _write(tmp_path, "scale.toml", scale)
    assert sorted(load_profiles(path.parent)) == ["bp", "scale", "thermo"]
