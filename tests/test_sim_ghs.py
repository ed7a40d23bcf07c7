"""The simulator's GHS encoders: ACOM sample arrays, Elapsed Time stamps, segmentation.

Layout sources are listed in ``firmware_sim/ghs.py``'s docstring; the byte vector below is the
STMicroelectronics GHS example ``SampleArrayObservation`` (STM32Cube GHS application
``ghs_app.c``) with its header and value fields, re-encoded by the simulator.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim import ghs
from firmware_sim.encoding import float32


def test_st_sample_array_example_layout() -> None:
    # ST: class 4, length 32, flags 0, unit 0x10B2, scale 0x0000064C, offset 0x00000800,
    # period 0xFD00000A (10 ms), 1 sample/period, 1 byte/sample, count 10 (u32), 10 samples.
    samples = [0xF9, 0x07, 0xFB, 0x07, 0xF5, 0x07, 0xFF, 0x07, 0x0C, 0x08]
    value = ghs.SampleArray(
        unit=ghs.MDC_DIM_MILLI_VOLT,
        scale_factor=0x0000064C,
        offset=0x00000800,
        scale_period=float32(10, -3),
        samples=samples,
        bytes_per_sample=1,
    )
    expected = bytes.fromhex(
        "04" "2000" "0000" "b210" "4c060000" "00080000" "0a0000fd" "01" "01" "0a000000"
        "f907fb07f507ff070c08"
    )  # fmt: skip
    assert ghs.observation(ghs.ObservationClass.SAMPLE_ARRAY, bytes(value)) == expected


def test_ecg_observation_layout() -> None:
    stamp = ghs.elapsed_time(14_400_000, sync_source=ghs.TimeSyncSource.NOT_SYNCHRONIZED)
    value = ghs.SampleArray(
        unit=ghs.MDC_DIM_MILLI_VOLT,
        scale_factor=float32(5, -3),
        offset=float32(-16384, -2),
        scale_period=ghs.period_word(250),
        samples=[32768, 33008, 32708, 65535, 0],  # 0, +1.2, -0.3, max, min mV
    )
    raw = ghs.sample_array_observation(ghs.MDC_ECG_ELEC_POTL_II, stamp, value)
    expected = bytes.fromhex(
        "04" "2d00" "0300" "02010200"  # class, length 45, flags type|timestamp, 131330
        "28" "00badb000000" "07" "00"  # 1 ms, current timeline, 4 h, not synchronized
        "b210" "050000fd" "00c0fffe" "040000fd" "01" "02" "05000000"
        "0080" "f080" "c47f" "ffff" "0000"
    )  # fmt: skip
    assert raw == expected
    assert struct.unpack_from("<H", raw, 1)[0] == len(raw) - 3


@pytest.mark.parametrize(
    ("rate", "word"), [(250, 0xFD000004), (500, 0xFD000002), (125, 0xFD000008), (200, 0xFD000005)]
)
def test_period_words(rate: int, word: int) -> None:
    assert ghs.period_word(rate) == word


def test_period_must_be_exact() -> None:
    with pytest.raises(ValueError, match="exact"):
        ghs.period_word(300)


def test_elapsed_time_fields() -> None:
    raw = ghs.elapsed_time(
        0x0102030405,
        flags=ghs.ElapsedTimeFlag.UTC | ghs.ElapsedTimeFlag.CURRENT_TIMELINE,
        sync_source=ghs.TimeSyncSource.MANUAL,
        tz_dst_offset=-4,
    )
    assert raw == bytes.fromhex("2205040302010004fc")
    with pytest.raises(ValueError, match="48 bits"):
        ghs.elapsed_time(1 << 48)


def test_health_sensor_features() -> None:
    assert ghs.health_sensor_features([ghs.MDC_ECG_ELEC_POTL_II]) == bytes.fromhex("000102010200")


def test_segmentation_headers_and_sizes() -> None:
    observation = bytes(range(256)) * 2 + b"\xaa" * 26  # 538 bytes, an ECG observation's size
    segments, counter = ghs.segment(observation, mtu=247, counter=62)
    assert [len(s) for s in segments] == [244, 244, 53]
    assert [s[0] for s in segments] == [(62 << 2) | 1, 63 << 2, 2]  # first, middle, last + wrap
    assert counter == 1
    assert b"".join(s[1:] for s in segments) == observation


def test_single_segment_is_first_and_last() -> None:
    segments, counter = ghs.segment(b"\x01\x02", mtu=23, counter=5)
    assert segments == [bytes([(5 << 2) | 3, 1, 2])]
    assert counter == 6


def test_segmentation_needs_room() -> None:
    with pytest.raises(ValueError, match="MTU"):
        ghs.segment(b"x", mtu=4, counter=0)


@settings(derandomize=True, max_examples=200)
@given(st.binary(min_size=1, max_size=2000), st.integers(23, 517), st.integers(0, 63))
def test_segments_reassemble_for_any_mtu(observation: bytes, mtu: int, counter: int) -> None:
    segments, next_counter = ghs.segment(observation, mtu, counter)
    assert all(len(s) <= mtu - 3 for s in segments)
    assert b"".join(s[1:] for s in segments) == observation
    counters = [s[0] >> 2 for s in segments]
    assert counters == [(counter + i) % 64 for i in range(len(segments))]
    assert next_counter == (counter + len(segments)) % 64
    assert [s[0] & 3 for s in segments] == (
        [3] if len(segments) == 1 else [1] + [0] * (len(segments) - 2) + [2]
    )
