"""Cross-check of two implementations: the simulator's firmware encoders produce the bytes, the
gateway's codecs (``gateway.ieee11073``, written separately from the same specifications) decode
them. Every value read or received over the real Bumble stack must decode, re-encode to the same
bytes (the codecs' exact-inverse contract) and yield the measurements the simulator meant.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.errors import DecodeError
from gateway.ieee11073 import mdc
from gateway.ieee11073.ghs import Observation, ObservationBundle, Reassembler
from gateway.ieee11073.measurement import Condition, Measurement
from gateway.ieee11073.numbers import Special
from gateway.ieee11073.registry import decode
from tests.sim_central import FAST, VENDOR_START, Link, next_value, running

READABLE = {
    "ecg": [0x2A38, 0x2BF3],
    "spo2": [0x2A60],
    "bp": [0x2A49],
    "thermo": [0x2A1D],
}
COMMON = [0x2A29, 0x2A24, 0x2A25, 0x2A27, 0x2A26, 0x2A28, 0x2A23, 0x2A50, 0x2A19, 0x2A2B]


def measurements(uuid: int, raw: bytes) -> tuple[Measurement, ...]:
    decoded = decode(uuid, raw)
    assert bytes(decoded) == raw, f"0x{uuid:04X} does not re-encode to the sent bytes"
    found = getattr(decoded, "measurements", None)
    return found() if found is not None else ()


def value(m: Measurement) -> Decimal:
    assert m.value is not None
    number = m.value.decimal
    assert number is not None
    return number


async def received(link: Link, uuid: int, count: int, *, indicate: bool = False) -> list[bytes]:
    queue = await link.subscribe(uuid, indicate=indicate)
    return [await next_value(queue) for _ in range(count)]


@pytest.mark.parametrize("kind", ["ecg", "spo2", "bp", "thermo"])
async def test_every_readable_value_decodes_and_re_encodes(kind: str) -> None:
    async with running((kind,)) as (sim, central):
        link = await central.connect(sim.sensors[kind].address)
        values = {uuid: await link.read(uuid) for uuid in COMMON + READABLE[kind]}
    for uuid, raw in values.items():
        assert bytes(decode(uuid, raw)) == raw, f"0x{uuid:04X}"


async def test_ecg_heart_rate_and_waveform() -> None:
    async with running(("ecg",)) as (sim, central):
        link = await central.connect(sim.sensors["ecg"].address)
        heart_rates = await received(link, 0x2A37, 3)
        responses = await link.subscribe(0x2BF4, indicate=True)
        segments = await link.subscribe(0x2B8B)
        await link.write(0x2BF4, b"\x01")
        control = await next_value(responses)
        reassembler = Reassembler.live()
        observations: list[Observation | ObservationBundle] = []
        while len(observations) < 2:
            done = reassembler.feed(await next_value(segments))
            if done is not None:
                observations.append(done)
    assert bytes(decode(0x2BF4, control)) == control
    for raw in heart_rates:
        found = measurements(0x2A37, raw)
        assert found[0].type_code == mdc.MDC_ECG_HEART_RATE
        assert 50 <= value(found[0]) <= 100
        assert all(m.type_code == mdc.MDC_ECG_TIME_PD_RR_GL for m in found[1:])
    for observation in observations:
        (wave,) = observation.measurements()
        assert (wave.type_code, wave.unit_code) == (
            mdc.MDC_ECG_ELEC_POTL_II,
            mdc.MDC_DIM_MILLI_VOLT,
        )
        assert wave.samples is not None
        assert len(wave.samples.samples) == 50  # 0.2 s at 250 Hz
        scale, offset = wave.samples.scale_factor.decimal, wave.samples.offset.decimal
        assert scale is not None
        assert offset is not None
        millivolts = [offset + scale * s for s in wave.samples.samples]
        assert max(millivolts) < Decimal("1.5")
        assert min(millivolts) > Decimal("-0.6")
        assert wave.timestamp is not None


async def test_pulse_oximeter() -> None:
    async with running(("spo2",), scenario="hypoxia") as (sim, central):
        link = await central.connect(sim.sensors["spo2"].address)
        continuous = await received(link, 0x2A5F, 3)
        spot = await link.subscribe(0x2A5E, indicate=True)
        await link.write(VENDOR_START, b"\x01")
        spot_check = await next_value(spot)
    for raw in continuous:
        types = {m.type_code: value(m) for m in measurements(0x2A5F, raw)}
        assert 88 <= types[mdc.MDC_PULS_OXIM_SAT_O2] <= 100
        assert 60 <= types[mdc.MDC_PULS_OXIM_PULS_RATE] <= 110
    found = measurements(0x2A5E, spot_check)
    assert {m.type_code for m in found} >= {mdc.MDC_PULS_OXIM_SAT_O2, mdc.MDC_PULS_OXIM_PULS_RATE}
    assert all(Condition.DEVICE_CLOCK_NOT_SET in m.conditions for m in found)


async def test_blood_pressure_records_and_live_cycle() -> None:
    async with running(("bp",)) as (sim, central):
        link = await central.connect(sim.sensors["bp"].address)
        racp = await link.subscribe(0x2A52, indicate=True)
        records = await link.subscribe(0x2A35, indicate=True)
        cuff = await link.subscribe(0x2A36)
        await link.write(0x2A52, b"\x01\x01")
        stored = [await next_value(records) for _ in range(3)]
        response = await next_value(racp)
        await link.write(VENDOR_START, b"\x01")
        live = await next_value(records)
        intermediate = await next_value(cuff)
    assert bytes(decode(0x2A52, response)) == response
    for raw in (*stored, live):
        found = {m.type_code: m for m in measurements(0x2A35, raw)}
        compound = found[mdc.MDC_PRESS_BLD_NONINV]
        parts = {c.type_code: value(c) for c in compound.components}
        systolic = parts[mdc.MDC_PRESS_BLD_NONINV_SYS]
        diastolic = parts[mdc.MDC_PRESS_BLD_NONINV_DIA]
        assert 60 < diastolic < systolic < 160
        assert parts[mdc.MDC_PRESS_BLD_NONINV_MEAN] == round(diastolic + (systolic - diastolic) / 3)
        assert compound.timestamp is not None
        assert 50 <= value(found[mdc.MDC_PULS_RATE_NON_INV]) <= 100
    assert measurements(0x2A36, intermediate)


async def test_thermometer() -> None:
    async with running(("thermo",)) as (sim, central):
        link = await central.connect(sim.sensors["thermo"].address)
        finals = await received(link, 0x2A1C, 2, indicate=True)
        intermediate = await received(link, 0x2A1E, 1)
    for raw in finals + intermediate:
        (temperature,) = measurements(0x2A1C if raw in finals else 0x2A1E, raw)
        assert temperature.type_code == mdc.MDC_TEMP_BODY
        assert temperature.unit_code == mdc.MDC_DIM_DEGC
        assert Decimal("36.0") < value(temperature) < Decimal("37.6")


async def test_injected_faults_are_what_the_gateway_rejects_or_flags() -> None:
    overrides = {**FAST, "spo2.interval_s": 0.05, "faults.disconnect_every_s": None}
    async with running(("spo2",), scenario="faults", overrides=overrides) as (sim, central):
        sensor = sim.sensors["spo2"]
        link = await central.connect(sensor.address)
        continuous = await link.subscribe(0x2A5F)
        packets = [await next_value(continuous) for _ in range(60)]
        # The sensor drops the link itself: everything it counted was sent before the drop and
        # the link delivers in order, so all of it is queued once the disconnection arrives.
        assert await sensor.disconnect()
        await link.disconnected.wait()
        packets.extend(continuous.get_nowait() for _ in range(continuous.qsize()))
        stats = sensor.stats.snapshot()
    rejected = nan = nres = 0
    for raw in packets:
        try:
            found = measurements(0x2A5F, raw)
        except DecodeError:
            rejected += 1
            continue
        specials = {m.type_code: m.value.special for m in found if m.value is not None}
        nan += specials.get(mdc.MDC_PULS_OXIM_SAT_O2) is Special.NAN
        nres += specials.get(mdc.MDC_PULS_OXIM_PULS_RATE) is Special.NRES
    assert rejected == stats["truncated"] + stats["wrong_flags"] > 0
    assert (nan, nres) == (stats["nan_values"], stats["nres_values"])
    assert nan > 0
    assert nres > 0
