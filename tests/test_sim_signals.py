"""Signal models: ECG morphology and HRV, HR/RR consistency with the waveform, PPG, BP, temperature.

Morphology targets: McSharry et al., IEEE TBME 50(3) 2003, table 1 (wave order and timing).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from firmware_sim.scenarios import Scenario, Timeline, TimelinePoint, Vitals
from firmware_sim.signals import (
    BloodPressureModel,
    EcgModel,
    PpgModel,
    TemperatureModel,
    beat_value,
    heart_rate_report,
)

FS = 250


def timeline(**vitals: float) -> Timeline:
    return Timeline(Scenario(vitals=Vitals(**vitals)))


def r_peaks(samples: list[float], threshold: float = 0.6) -> list[int]:
    return [
        i
        for i in range(1, len(samples) - 1)
        if samples[i] > threshold and samples[i] >= samples[i - 1] and samples[i] > samples[i + 1]
    ]


def test_r_peaks_are_the_reported_beats() -> None:
    ecg = EcgModel(random.Random(1), timeline(hr=75).at, FS)
    samples = ecg.take(20 * FS)
    beats = ecg.beats.between(0.0, 20.0)
    peaks = r_peaks(samples)
    assert len(peaks) == len(beats)
    for peak, beat in zip(peaks, beats, strict=True):
        assert abs(peak / FS - beat.time) <= 1.0 / FS


@pytest.mark.parametrize("hr", [45, 72, 110, 160])
def test_reported_heart_rate_and_rr_match_the_waveform(hr: float) -> None:
    ecg = EcgModel(random.Random(2), timeline(hr=hr).at, FS)
    last_rr = None
    reported: list[float] = []
    for _ in range(30):  # 30 one-second notifications
        start = ecg.next_time
        samples = ecg.take(FS)
        beats = ecg.beats.between(start, ecg.next_time)
        rate, rrs = heart_rate_report(beats, last_rr)
        assert rrs == [b.rr for b in beats]
        assert len(r_peaks(samples)) in (len(beats), len(beats) - 1, len(beats) + 1)  # edges
        if rrs:
            last_rr = rrs[-1]
            assert rate == round(60 / statistics.fmean(rrs))
        reported.extend(rrs)
    peaks = r_peaks(
        EcgModel(random.Random(2), timeline(hr=hr).at, FS).take(30 * FS)
    )  # same seed → same beats
    intervals = [(b - a) / FS for a, b in itertools.pairwise(peaks)]
    assert len(intervals) >= len(reported) - 2
    for measured, sent in zip(intervals, reported[1:], strict=False):
        assert abs(measured - sent) <= 2.0 / FS
    assert abs(60 / statistics.fmean(reported) - hr) < 0.1 * hr


def test_heart_rate_variability_and_respiratory_sinus_arrhythmia() -> None:
    hrv, resp = 0.05, 12.0
    ecg = EcgModel(random.Random(3), timeline(hr=60, hrv=hrv, resp_rate=resp).at, FS)
    beats = ecg.beats.between(0.0, 300.0)
    rrs = [b.rr for b in beats]
    relative_sd = statistics.stdev(rrs) / statistics.fmean(rrs)
    assert 0.5 * hrv < relative_sd < 2.0 * hrv
    breath = [math.sin(2 * math.pi * resp / 60 * (b.time - b.rr)) for b in beats]
    assert statistics.correlation(breath, rrs) > 0.3  # RR follows respiration


def test_no_variability_when_hrv_is_zero() -> None:
    ecg = EcgModel(random.Random(4), timeline(hr=80, hrv=0.0).at, FS)
    rrs = {round(b.rr, 9) for b in ecg.beats.between(0.0, 30.0)}
    assert rrs == {0.75}


def test_pqrst_morphology_of_one_beat() -> None:
    rr = 1.0
    wave = [beat_value((i - FS // 2) / FS, rr) for i in range(FS)]  # −0.5 s … +0.5 s
    t = [(i - FS // 2) / FS for i in range(FS)]
    r = max(range(FS), key=wave.__getitem__)
    assert t[r] == 0.0
    assert 1.1 < wave[r] < 1.3  # R ≈ 1.2 mV
    p = max((i for i in range(FS) if -0.3 < t[i] < -0.1), key=wave.__getitem__)
    assert -0.2 < t[p] < -0.13
    assert 0.2 < wave[p] < 0.4
    q = min((i for i in range(FS) if -0.08 < t[i] < 0.0), key=wave.__getitem__)
    s = min((i for i in range(FS) if 0.0 < t[i] < 0.08), key=wave.__getitem__)
    assert wave[q] < 0
    assert wave[s] < 0
    tw = max((i for i in range(FS) if 0.15 < t[i] < 0.4), key=wave.__getitem__)
    assert 0.2 < t[tw] < 0.3
    assert 0.35 < wave[tw] < 0.6
    half = [i for i in range(FS) if wave[i] > wave[r] / 2]
    assert (max(half) - min(half)) / FS < 0.06  # narrow QRS


def test_waves_shorten_with_faster_rates() -> None:
    def t_peak(rr: float) -> float:
        grid = [i / 1000 for i in range(150, 400)]
        return max(grid, key=lambda x: beat_value(x, rr))

    assert t_peak(0.5) < t_peak(1.0)


def test_ecg_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[float]:
        return EcgModel(random.Random(seed), timeline().at, FS).take(500)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_ecg_in_chunks_equals_one_piece() -> None:
    whole = EcgModel(random.Random(9), timeline().at, FS).take(1000)
    chunked = EcgModel(random.Random(9), timeline().at, FS)
    assert [x for _ in range(4) for x in chunked.take(250)] == whole


def test_heart_rate_follows_the_timeline() -> None:
    scenario = Scenario(at=[TimelinePoint(t=10, hr=120)])
    ecg = EcgModel(random.Random(5), Timeline(scenario).at, FS)
    before = [b.rr for b in ecg.beats.between(2.0, 9.0)]
    after = [b.rr for b in ecg.beats.between(12.0, 20.0)]
    assert abs(statistics.fmean(before) - 60 / 72) < 0.08
    assert abs(statistics.fmean(after) - 0.5) < 0.05


def test_heart_rate_report_without_beats_uses_the_last_interval() -> None:
    assert heart_rate_report([], 1.2) == (50, [])
    assert heart_rate_report([], None) == (0, [])


def test_ppg_pulses_and_readings() -> None:
    ppg = PpgModel(random.Random(6), timeline(hr=90, spo2=94).at, 50)
    samples = ppg.take(50 * 20)
    beats = ppg.beats.between(0.0, 19.7)  # pulse peaks lag the beat by ~0.17 s
    peaks = [
        i
        for i in range(1, len(samples) - 1)
        if samples[i] > 700 and samples[i] >= samples[i - 1] and samples[i] > samples[i + 1]
    ]
    assert abs(len(peaks) - len(beats)) <= 1
    readings = [ppg.reading(t) for t in range(200)]
    assert abs(statistics.fmean(r[0] for r in readings) - 94) < 0.5
    assert abs(statistics.fmean(r[1] for r in readings) - 90) < 1.0
    assert all(0 <= r[0] <= 100 and r[2] > 0 for r in readings)


def test_blood_pressure_readings() -> None:
    model = BloodPressureModel(random.Random(7), timeline(systolic=165, diastolic=102).at)
    readings = [model.reading(float(t)) for t in range(300)]
    assert abs(statistics.fmean(r.systolic for r in readings) - 165) < 1.0
    assert abs(statistics.fmean(r.diastolic for r in readings) - 102) < 1.0
    for r in readings:
        assert r.diastolic <= r.systolic - 10
        assert r.mean_arterial == round(r.diastolic + (r.systolic - r.diastolic) / 3)


def test_cuff_pressure_cycle() -> None:
    cuff = BloodPressureModel.cuff_pressure
    assert cuff(0.0, 120) == 0
    assert cuff(0.3, 120) == 150  # inflated 30 mmHg above systolic
    assert cuff(1.0, 120) == 20
    profile = [cuff(i / 100, 120) for i in range(101)]
    assert profile.index(max(profile)) == 30


def test_temperature_drifts_slowly_around_the_target() -> None:
    model = TemperatureModel(random.Random(8), timeline(temp=38.5).at)
    values = [model.reading(t * 5.0) for t in range(400)]
    assert all(v == round(v, 2) for v in values)
    assert abs(statistics.fmean(values) - 38.5) < 0.15
    assert max(values) - min(values) < 1.0
    steps = [abs(b - a) for a, b in itertools.pairwise(values)]
    assert statistics.fmean(steps) < 0.1  # 5 s apart: slow changes only
