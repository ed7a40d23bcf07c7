"""Scenarios: built-ins, TOML timeline files, overrides, validation errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim import scenarios
from firmware_sim.scenarios import (
    FaultSettings,
    Scenario,
    ScenarioError,
    Timeline,
    TimelinePoint,
    Vitals,
    VitalsNow,
)

BUILTINS = ["faults", "fever", "hypertension", "hypoxia", "normal", "secure", "tachycardia"]


def test_builtin_names() -> None:
    assert scenarios.builtin_names() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_load(name: str) -> None:
    scenario = scenarios.load(name)
    assert scenario.name == name
    assert scenario.description


def test_builtin_vitals_express_their_condition() -> None:
    at_end = {name: Timeline(scenarios.load(name)).at(1e6) for name in BUILTINS}
    assert at_end["tachycardia"].hr > 120
    assert at_end["hypoxia"].spo2 < 90
    assert at_end["hypertension"].systolic >= 160
    assert at_end["fever"].temp > 38.5
    normal = at_end["normal"]
    assert (normal.hr, normal.spo2, normal.temp) == (72, 98, 36.8)


def test_faults_scenario_enables_every_fault() -> None:
    faults = scenarios.load("faults").faults
    for enabled in (
        faults.disconnect_every_s,
        faults.advertising_pause_s,
        faults.truncate_every,
        faults.wrong_flags_every,
        faults.nan_every,
        faults.nres_every,
        faults.burst_every_s,
    ):
        assert enabled
    assert faults.burst_size > 1
    assert faults.battery_start > faults.low_battery_threshold
    assert faults.battery_drain_per_min > 0
    assert scenarios.load("normal").faults == FaultSettings()


def test_timeline_steps_and_ramps() -> None:
    scenario = Scenario(
        vitals=Vitals(hr=60),
        at=[
            TimelinePoint(t=30, hr=120, ramp_s=20),  # given out of order: sorted
            TimelinePoint(t=10, hr=80, temp=38.0),
            TimelinePoint(t=40, spo2=90),
        ],
    )
    timeline = Timeline(scenario)
    assert timeline.at(0).hr == 60
    assert timeline.at(10).hr == 80
    assert timeline.at(10).temp == 38.0
    assert timeline.at(40).hr == pytest.approx(100)
    assert timeline.at(50).hr == 120
    assert timeline.at(39.9).spo2 == 98
    assert timeline.at(40).spo2 == 90
    assert timeline.at(1000) == VitalsNow(
        hr=120, hrv=0.04, resp_rate=14, spo2=90, systolic=118, diastolic=76, temp=38.0
    )


def test_ramp_starting_during_another_ramp() -> None:
    scenario = Scenario(
        vitals=Vitals(hr=60),
        at=[TimelinePoint(t=0, hr=100, ramp_s=40), TimelinePoint(t=20, hr=60, ramp_s=20)],
    )
    timeline = Timeline(scenario)
    assert timeline.at(20).hr == pytest.approx(80)  # half-way up when the second ramp starts
    assert timeline.at(30).hr == pytest.approx(70)
    assert timeline.at(45).hr == 60


def test_overrides_are_applied_and_validated() -> None:
    scenario = scenarios.load("normal", {"bp.interval_s": 2, "bp.cycle_s": 0.5})
    assert (scenario.bp.interval_s, scenario.bp.cycle_s) == (2, 0.5)


def test_override_errors_name_the_field() -> None:
    with pytest.raises(ScenarioError) as info:
        scenarios.load("normal", {"bp.interval_s": 0})
    assert str(info.value) == (
        "firmware_sim/scenarios/normal.toml: bp.interval_s: Input should be greater than 0"
    )


def test_override_into_a_value_is_rejected() -> None:
    with pytest.raises(ScenarioError, match=r"override 'name.x': 'name' is not a table"):
        scenarios.load("normal", {"name.x": 1})


def test_timeline_file(tmp_path: Path) -> None:
    path = tmp_path / "ward.toml"
    path.write_text(
        'description = "ward round"\n'
        "[vitals]\nhr = 80\n"
        "[bp]\ninterval_s = 120\n"
        "[[at]]\nt = 30\nhr = 120\n"
        "[[at]]\nt = 60\nramp_s = 30\nspo2 = 88\n",
        encoding="utf-8",
    )
    scenario = scenarios.load(path)
    assert scenario.name == "ward"
    assert scenario.bp.interval_s == 120
    timeline = Timeline(scenario)
    assert (timeline.at(29).hr, timeline.at(30).hr) == (80, 120)
    assert timeline.at(75).spo2 == pytest.approx(93)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vitals]\nhr = 500\n", "vitals.hr: Input should be less than or equal to 250"),
        ("[[at]]\nt = 5\npulse = 80\n", "at.0.pulse: Extra inputs are not permitted"),
        ("[[at]]\nhr = 80\n", "at.0.t: Field required"),
        ("[bp]\ninterval_s = 'soon'\n", "bp.interval_s: Input should be a valid number"),
        (
            "[vitals]\nsystolic = 90\ndiastolic = 85\n",
            "vitals: Value error, diastolic must be at least 10 mmHg below systolic",
        ),
        ("[ecg]\nsample_rate_hz = 300\n", "ecg.sample_rate_hz: Value error, 1/rate must be"),
        ("[faults]\ntruncate_every = 0\n", "faults.truncate_every: Input should be greater"),
        ("vitals = [\n", "not valid TOML"),
    ],
)
def test_file_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        scenarios.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unknown_scenario_lists_the_builtins() -> None:
    with pytest.raises(ScenarioError) as info:
        scenarios.load("no-such-scenario")
    assert str(info.value) == (
        "scenario 'no-such-scenario': neither a built-in scenario "
        "(faults, fever, hypertension, hypoxia, normal, secure, tachycardia) nor a TOML file"
    )
