"""Physiological signal models: ECG, PPG/SpO2, blood pressure, temperature.

Pure and seeded: every model draws from the ``random.Random`` it is given and produces the same
numbers for the same seed and the same sequence of calls. Time ``t`` is in seconds since the
simulator started; vital-sign targets come from a callable (the scenario timeline) so that they can
change while the models run.

ECG: each beat is a sum of Gaussian P, Q, R, S and T waves (McSharry et al., "A dynamical model
for generating synthetic electrocardiogram signals", IEEE TBME 50(3), 2003, table 1: angles
θ = -π/3, -π/12, 0, π/12, π/2 and widths b = 0.25, 0.1, 0.1, 0.1, 0.4 rad, with the angular
positions and widths scaled by √RR as in the paper's heart-rate dependence). RR intervals carry
heart-rate variability: respiratory sinus arrhythmia at the respiration rate, a 0.1 Hz Mayer wave
and Gaussian noise. The R peaks of the waveform are exactly the beat times the model reports, so
the heart rate and RR intervals a sensor sends match its waveform.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol


class Physiology(Protocol):
    """Vital-sign targets at one instant (the scenario's values)."""

    @property
    def hr(self) -> float: ...
    @property
    def hrv(self) -> float: ...
    @property
    def resp_rate(self) -> float: ...
    @property
    def spo2(self) -> float: ...
    @property
    def systolic(self) -> float: ...
    @property
    def diastolic(self) -> float: ...
    @property
    def temp(self) -> float: ...


VitalsAt = Callable[[float], Physiology]

RR_MIN_S: Final = 0.24  # 250 /min
RR_MAX_S: Final = 2.5  # 24 /min
MAYER_WAVE_HZ: Final = 0.1
TWO_PI: Final = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class Wave:
    """One Gaussian component of a beat: angle from the R peak and width in radians (one RR at
    60 /min = 2π), amplitude in mV."""

    name: str
    theta: float
    amplitude_mv: float
    width: float


# McSharry 2003 table 1 angles and widths; amplitudes in mV for a lead II with a 1.2 mV R wave
# (the paper's a_i scaled by b_i² and normalised, i.e. the peak height each term contributes).
PQRST: Final = (
    Wave("P", -math.pi / 3, 0.30, 0.25),
    Wave("Q", -math.pi / 12, -0.20, 0.10),
    Wave("R", 0.0, 1.20, 0.10),
    Wave("S", math.pi / 12, -0.30, 0.10),
    Wave("T", math.pi / 2, 0.48, 0.40),
)
BEAT_SUPPORT_S: Final = 1.0  # waves further than this from their R peak are negligible
ECG_NOISE_MV: Final = 0.01
ECG_BASELINE_MV: Final = 0.04  # respiratory baseline wander


@dataclass(frozen=True, slots=True)
class Beat:
    time: float  # R peak (s)
    rr: float  # interval from the previous beat (s)


class BeatTrain:
    """Beat times with heart-rate variability, generated on demand and kept in order."""

    def __init__(self, rng: random.Random, vitals: VitalsAt, first_beat: float = 0.3) -> None:
        self._rng = rng  # the train's own stream: beats do not depend on who asks for them when
        self._vitals = vitals
        self._mayer_phase = rng.uniform(0.0, TWO_PI)
        rr = self._draw_rr(first_beat)
        self.beats: list[Beat] = [Beat(first_beat, rr)]

    def _draw_rr(self, t: float) -> float:
        v = self._vitals(t)
        rr0 = 60.0 / v.hr
        rsa = v.hrv * math.sin(TWO_PI * v.resp_rate / 60.0 * t)
        mayer = 0.5 * v.hrv * math.sin(TWO_PI * MAYER_WAVE_HZ * t + self._mayer_phase)
        noise = self._rng.gauss(0.0, 0.5 * v.hrv)
        return min(RR_MAX_S, max(RR_MIN_S, rr0 * (1.0 + rsa + mayer + noise)))

    def extend_to(self, t: float) -> None:
        while self.beats[-1].time < t:
            last = self.beats[-1].time
            rr = self._draw_rr(last)
            self.beats.append(Beat(last + rr, rr))

    def between(self, t0: float, t1: float) -> list[Beat]:
        """Beats with ``t0 <= time < t1``."""
        self.extend_to(t1)
        return [b for b in self.beats if t0 <= b.time < t1]

    def around(self, t0: float, t1: float, margin: float) -> list[Beat]:
        self.extend_to(t1 + margin)
        return [b for b in self.beats if t0 - margin <= b.time < t1 + margin]

    def forget_before(self, t: float) -> None:
        """Drop beats long past (keeps memory bounded in long runs); keeps the latest one."""
        keep = [b for b in self.beats if b.time >= t]
        self.beats = keep or self.beats[-1:]


class EcgModel:
    """A synthetic lead II ECG in mV, sampled at ``sample_rate_hz``, produced in order."""

    def __init__(
        self, rng: random.Random, vitals: VitalsAt, sample_rate_hz: int, start: float = 0.0
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.beats = BeatTrain(_substream(rng), vitals, first_beat=start + 0.3)
        self._rng = _substream(rng)  # sample noise, drawn in sample order
        self._vitals = vitals
        self._next_index = round(start * sample_rate_hz)

    @property
    def next_time(self) -> float:
        return self._next_index / self.sample_rate_hz

    def take(self, count: int) -> list[float]:
        """The next ``count`` samples (mV)."""
        fs = self.sample_rate_hz
        t0 = self._next_index / fs
        t1 = (self._next_index + count) / fs
        beats = self.beats.around(t0, t1, BEAT_SUPPORT_S)
        out = []
        for i in range(count):
            t = (self._next_index + i) / fs
            v = self._vitals(t)
            value = ECG_BASELINE_MV * math.sin(TWO_PI * v.resp_rate / 60.0 * t)
            for beat in beats:
                value += beat_value(t - beat.time, beat.rr)
            out.append(value + self._rng.gauss(0.0, ECG_NOISE_MV))
        self._next_index += count
        self.beats.forget_before(t0 - 2 * BEAT_SUPPORT_S)
        return out


def beat_value(dt_s: float, rr: float) -> float:
    """The PQRST contribution (mV) of one beat at ``dt_s`` seconds from its R peak."""
    if abs(dt_s) > BEAT_SUPPORT_S:
        return 0.0
    scale = math.sqrt(rr) / TWO_PI  # radians → seconds, McSharry's √RR scaling
    total = 0.0
    for wave in PQRST:
        centre = wave.theta * scale
        sigma = wave.width * scale
        total += wave.amplitude_mv * math.exp(-((dt_s - centre) ** 2) / (2.0 * sigma * sigma))
    return total


def heart_rate_report(beats: list[Beat], previous_rr: float | None) -> tuple[int, list[float]]:
    """Heart rate (/min) and the RR intervals (s) a sensor reports for the beats of one period:
    the rate is the mean over those beats, or the last known interval when none fell in it."""
    rrs = [b.rr for b in beats]
    basis = rrs or ([previous_rr] if previous_rr else [])
    if not basis:
        return 0, []
    return round(60.0 / (sum(basis) / len(basis))), rrs


# -- PPG and pulse oximetry ----------------------------------------------------------------------
PPG_SYSTOLIC_DELAY: Final = 0.20  # pulse transit after the R peak, × √RR (s)
PPG_SYSTOLIC_WIDTH: Final = 0.08
PPG_DICROTIC_DELAY: Final = 0.45
PPG_DICROTIC_WIDTH: Final = 0.10
PPG_DICROTIC_RATIO: Final = 0.35
PPG_BASELINE: Final = 400
PPG_AMPLITUDE: Final = 500
SPO2_NOISE: Final = 0.6
PULSE_NOISE: Final = 1.0
PAI_MEAN: Final = 2.5
PAI_NOISE: Final = 0.2


class PpgModel:
    """Photoplethysmogram samples (dimensionless counts) and oximeter readings."""

    def __init__(
        self, rng: random.Random, vitals: VitalsAt, sample_rate_hz: int, start: float = 0.0
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.beats = BeatTrain(_substream(rng), vitals, first_beat=start + 0.3)
        self._rng = _substream(rng)  # sample noise
        self._readings = _substream(rng)  # SpO2/PR/PAI noise
        self._vitals = vitals
        self._next_index = round(start * sample_rate_hz)

    @property
    def next_time(self) -> float:
        return self._next_index / self.sample_rate_hz

    def take(self, count: int) -> list[int]:
        fs = self.sample_rate_hz
        t0 = self._next_index / fs
        t1 = (self._next_index + count) / fs
        beats = self.beats.around(t0, t1, 2 * BEAT_SUPPORT_S)
        out = []
        for i in range(count):
            t = (self._next_index + i) / fs
            shape = 0.0
            for beat in beats:
                s = math.sqrt(beat.rr)
                shape += _gauss(t - beat.time, PPG_SYSTOLIC_DELAY * s, PPG_SYSTOLIC_WIDTH * s)
                shape += PPG_DICROTIC_RATIO * _gauss(
                    t - beat.time, PPG_DICROTIC_DELAY * s, PPG_DICROTIC_WIDTH * s
                )
            out.append(round(PPG_BASELINE + PPG_AMPLITUDE * shape + self._rng.gauss(0.0, 3.0)))
        self._next_index += count
        self.beats.forget_before(t0 - 4 * BEAT_SUPPORT_S)
        return out

    def reading(self, t: float) -> tuple[int, int, float]:
        """SpO2 (%), pulse rate (/min) and perfusion index (%) at ``t``."""
        v = self._vitals(t)
        spo2 = min(100, max(0, round(v.spo2 + self._readings.gauss(0.0, SPO2_NOISE))))
        pulse = max(0, round(v.hr + self._readings.gauss(0.0, PULSE_NOISE)))
        pai = max(0.1, round(PAI_MEAN + self._readings.gauss(0.0, PAI_NOISE), 1))
        return spo2, pulse, pai


def _substream(rng: random.Random) -> random.Random:
    """An independent stream seeded from ``rng`` (deterministic for a given seed)."""
    return random.Random(rng.getrandbits(64))  # noqa: S311 - simulation, not security


def _gauss(x: float, centre: float, sigma: float) -> float:
    return math.exp(-((x - centre) ** 2) / (2.0 * sigma * sigma))


# -- Blood pressure ------------------------------------------------------------------------------
SYSTOLIC_NOISE: Final = 3.0
DIASTOLIC_NOISE: Final = 2.0
NIBP_PULSE_NOISE: Final = 1.5
CUFF_OVERSHOOT_MMHG: Final = 30
CUFF_FINAL_MMHG: Final = 20
CUFF_INFLATE_FRACTION: Final = 0.3


@dataclass(frozen=True, slots=True)
class BloodPressure:
    systolic: int
    diastolic: int
    mean_arterial: int
    pulse: int


class BloodPressureModel:
    def __init__(self, rng: random.Random, vitals: VitalsAt) -> None:
        self._rng = rng
        self._vitals = vitals

    def reading(self, t: float) -> BloodPressure:
        v = self._vitals(t)
        systolic = round(v.systolic + self._rng.gauss(0.0, SYSTOLIC_NOISE))
        diastolic = min(systolic - 10, round(v.diastolic + self._rng.gauss(0.0, DIASTOLIC_NOISE)))
        mean = round(diastolic + (systolic - diastolic) / 3)
        pulse = max(0, round(v.hr + self._rng.gauss(0.0, NIBP_PULSE_NOISE)))
        return BloodPressure(systolic, diastolic, mean, pulse)

    @staticmethod
    def cuff_pressure(fraction: float, systolic: int) -> int:
        """Cuff pressure (mmHg) at ``fraction`` of a cycle: inflate past systolic, then deflate."""
        peak = systolic + CUFF_OVERSHOOT_MMHG
        fraction = min(1.0, max(0.0, fraction))
        if fraction < CUFF_INFLATE_FRACTION:
            return round(peak * fraction / CUFF_INFLATE_FRACTION)
        deflate = (fraction - CUFF_INFLATE_FRACTION) / (1.0 - CUFF_INFLATE_FRACTION)
        return round(peak - (peak - CUFF_FINAL_MMHG) * deflate)


# -- Temperature ---------------------------------------------------------------------------------
TEMP_CIRCADIAN_AMPLITUDE: Final = 0.08  # °C, a slow oscillation (10 min period in the sim)
TEMP_CIRCADIAN_PERIOD_S: Final = 600.0
TEMP_DRIFT_TAU_S: Final = 120.0  # Ornstein-Uhlenbeck drift
TEMP_DRIFT_SIGMA: Final = 0.01  # °C per √s
TEMP_NOISE: Final = 0.02


class TemperatureModel:
    """Body temperature: the target plus a slow oscillation, a mean-reverting drift and noise."""

    def __init__(self, rng: random.Random, vitals: VitalsAt) -> None:
        self._rng = rng
        self._vitals = vitals
        self._phase = rng.uniform(0.0, TWO_PI)
        self._drift = 0.0
        self._last_t = 0.0

    def reading(self, t: float) -> float:
        """Temperature (°C) at ``t``, rounded to 0.01 °C; call with non-decreasing ``t``."""
        dt_s = max(0.0, t - self._last_t)
        self._last_t = max(self._last_t, t)
        decay = math.exp(-dt_s / TEMP_DRIFT_TAU_S)
        self._drift = self._drift * decay + TEMP_DRIFT_SIGMA * math.sqrt(
            TEMP_DRIFT_TAU_S / 2.0 * (1.0 - decay * decay)
        ) * self._rng.gauss(0.0, 1.0)
        slow = TEMP_CIRCADIAN_AMPLITUDE * math.sin(
            TWO_PI * t / TEMP_CIRCADIAN_PERIOD_S + self._phase
        )
        value = self._vitals(t).temp + slow + self._drift + self._rng.gauss(0.0, TEMP_NOISE)
        return round(value, 2)
