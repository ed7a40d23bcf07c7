"""Generic Health Sensor (GHS 1.0) firmware-side encoders: ACOM observations and segmentation.

Sources, field by field (the GHSS 1.0 HTML specification itself could only be reached up to its
front matter with the tools available here, so every field below is taken from open firmware that
implements GHS 1.0 and cross-checked between them; where sources disagree it says so):

* UUIDs — GHS service 0x1840, Live Health Observations 0x2B8B (notify/indicate), GHS Control Point
  0x2BF4 (write/indicate), Health Sensor Features 0x2BF3 (read/indicate), Observation Schedule
  Changed 0x2BF1: STMicroelectronics STM32CubeWBA
  ``Projects/NUCLEO-WBA25CE/Applications/BLE/BLE_GenericHealth_PulseOximeter/STM32_WPAN/App/ghs.c``
  (``GHS_Init``). NOTE: the features characteristic is 0x2BF3 there (0x2BF0, sometimes given
  for it, is Battery Energy Status); this simulator follows ST.
* Segmentation header (1 byte before every segment): bit 0 first segment, bit 1 last segment,
  bits 2-7 a rolling segment counter 0..63 that advances by one per segment sent — ST
  ``ghs_app.c`` (``ghsapp_send_segment``, ``GHS_APP_UpdateLiveHealthObservation``), as in
  docs/standards.md. Each notification carries at most ATT_MTU-3 bytes: the header plus ATT_MTU-4
  bytes of the observation. ST starts the counter at 1 (it increments before the first
  segment); this simulator starts at 0 — a decoder must only check continuity modulo 64.
* Observation header: Observation Class Type u8 (1 numeric, 2 simple discrete, 3 string, 4 sample
  array, 5 compound discrete event, 6 compound state/event, 7 compound, 8 TLV, 0xFF bundle), then
  Length u16 = number of bytes that follow the Length field, then Flags u16 — ST ``ghs_app.c``
  example tables (e.g. numeric SpO2: class 0x01, length 0x1B, flags 0x0063), class values also in
  the Philips GHS reference client ``ObservationClass``.
* Flags u16: bit 0 observation type present, bit 1 timestamp, bit 2 measurement duration, bit 3
  measurement status, bit 4 object id, bit 5 patient, bit 6 supplemental information, bit 7
  derived-from, bit 8 has-member, bit 9 TLVs — ST example comments (0x13 = type|time|object id,
  0x63 = type|time|patient|supplemental, 0x81 = type|derived-from) and Lamprey Networks' GHS
  ``FLAGS_HAS_*`` constants (type 0x1, timestamp 0x2, duration 0x4, status 0x8, object id 0x10,
  patient 0x20, supplemental 0x40, references 0x80, TLV 0x200).
* Observation Type u32 (MDC code, e.g. MDC_ECG_ELEC_POTL_II 131330 = 0x00020102): ST examples.
* Timestamp (9 bytes) in the Elapsed Time format of GSS §3.82 (not the 7-byte Date Time): Flags
  u8 (bit 0 tick counter, bit 1 UTC, bits 2-3 resolution 1 s/100 ms/1 ms/100 µs, bit 4 TZ/DST
  used, bit 5 current timeline), Time Value u48 counted from 2000-01-01 00:00:00, Time Sync
  Source Type u8 (0 unknown … 4 manual … 7 not synchronized), TZ/DST Offset s8 in 15-minute
  units — ST examples (9-byte ``0x22 …`` stamps) and Zephyr ``include/zephyr/bluetooth/services/
  ets.h`` (``BT_ETS_FLAG_*``, ``BT_ETS_TIME_SOURCE_*``).
* Sample array value: Unit Code u16 (MDC_DIM_MILLI_VOLT 4274 = 0x10B2), Scale Factor FLOAT,
  Offset FLOAT, Scale Period FLOAT in seconds (the time covered by one "period"), Number of
  Samples per Period u8 (the number of dimensions per time step, 1 for one lead — HL7 PHD IG
  RTSA notes), Bytes per Sample u8, Number of Samples u32, then the samples little-endian — ST
  ``SampleArrayObservation`` example (unit 0x10B2, period 0x0A,0x00,0x00,0xFD = 0.010 s, 1 sample
  per period, 4-byte count 0x0A, length 32 consistent). DISAGREEMENT: ST's second example
  ``SimpleArrayECGWaveform`` has a 1-byte count (0x74) but its Length field (151) does not match
  its own bytes, so the self-consistent 4-byte form is used. Philips' pre-standard server wrote
  extra min/max fields; not used. The spec text reachable here does not say whether samples are
  signed. IEEE 11073-20601 samples are unsigned unless marked signed (Sa-Specification
  significant-bits 255), GHS has no such marker and ST's examples are unsigned around a mid-scale
  code, so the simulator sends UNSIGNED samples: value = offset + scale factor × sample, with the
  offset placing 0 mV at mid-scale (the gateway codec decodes unsigned by default too).
* GHS Control Point: 0x01 start sending live observations, 0x02 stop; the server answers with an
  indication 0x80 "success"; writes need the control point's indications enabled (ATT error 0xFD
  otherwise) — ST ``ghs_cp.c``.
* Health Sensor Features: Flags u8 (0 = no device specializations list), Supported Observation
  Types count u8, then each type u32 — ST ``GHS_APP_UpdateFeature``.

The live ECG observation sent by the simulator: class 4, flags 0x0003 (type and
timestamp), MDC_ECG_ELEC_POTL_II, timestamp of the first sample (1 ms resolution, local time,
current timeline; sync source 7 until the Current Time is written, 4 afterwards), unit mV, scale
0.005 mV (FLOAT 0xFD000005), offset -163.84 mV (FLOAT 0xFEFFC000, so sample 32768 = 0 mV), period
0.004 s (FLOAT 0xFD000004), 1 sample per period, 2 bytes per sample (unsigned), 250 samples.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from firmware_sim.encoding import U8, U16, U32, float32_exact, pack_float

# -- UUIDs (ST GHS_Init) --------------------------------------------------------------------------
GHS_SERVICE: Final = 0x1840
LIVE_HEALTH_OBSERVATIONS: Final = 0x2B8B
OBSERVATION_SCHEDULE_CHANGED: Final = 0x2BF1
HEALTH_SENSOR_FEATURES: Final = 0x2BF3
GHS_CONTROL_POINT: Final = 0x2BF4

# -- GHS Control Point (ST ghs_cp.c) --------------------------------------------------------------
GHSCP_START_LIVE: Final = 0x01
GHSCP_STOP_LIVE: Final = 0x02
GHSCP_SUCCESS: Final = 0x80
ATT_ERROR_OPCODE_NOT_SUPPORTED: Final = 0x80  # application error range (ATT §3.4.1.1)

# -- MDC codes (IEEE 11073-10101) -----------------------------------------------------------------
MDC_ECG_ELEC_POTL_II: Final = 131330
MDC_PULS_OXIM_PLETH: Final = 150452
MDC_DIM_MILLI_VOLT: Final = 4274
MDC_DIM_DIMLESS: Final = 512

# -- Segmentation header ---------------------------------------------------------------------------
SEGMENT_FIRST: Final = 0x01
SEGMENT_LAST: Final = 0x02
SEGMENT_COUNTER_SHIFT: Final = 2
SEGMENT_COUNTER_MODULO: Final = 64
ATT_NOTIFICATION_OVERHEAD: Final = 3  # opcode + handle (ATT §3.4.7.1)
SEGMENT_HEADER_SIZE: Final = 1

# -- Elapsed Time (GSS §3.82; Zephyr ets.h) --------------------------------------------------------
ELAPSED_TIME_SIZE: Final = 9
U48_MAX: Final = (1 << 48) - 1


class ElapsedTimeFlag(enum.IntFlag):
    TICK_COUNTER = 0x01
    UTC = 0x02
    RESOLUTION_100_MS = 0x04
    RESOLUTION_1_MS = 0x08
    RESOLUTION_100_US = 0x0C
    TZ_DST_USED = 0x10
    CURRENT_TIMELINE = 0x20


class TimeSyncSource(enum.IntEnum):
    UNKNOWN = 0
    NETWORK_TIME_PROTOCOL = 1
    GPS = 2
    RADIO_TIME_SIGNAL = 3
    MANUAL = 4
    ATOMIC_CLOCK = 5
    CELLULAR_NETWORK = 6
    NOT_SYNCHRONIZED = 7


class ObservationClass(enum.IntEnum):
    NUMERIC = 0x01
    SIMPLE_DISCRETE = 0x02
    STRING = 0x03
    SAMPLE_ARRAY = 0x04
    COMPOUND_DISCRETE_EVENT = 0x05
    COMPOUND_STATE_EVENT = 0x06
    COMPOUND = 0x07
    TLV_ENCODED = 0x08
    BUNDLE = 0xFF


class ObservationFlag(enum.IntFlag):
    TYPE = 0x0001
    TIMESTAMP = 0x0002
    DURATION = 0x0004
    MEASUREMENT_STATUS = 0x0008
    OBJECT_ID = 0x0010
    PATIENT = 0x0020
    SUPPLEMENTAL_INFORMATION = 0x0040
    DERIVED_FROM = 0x0080
    HAS_MEMBER = 0x0100
    TLVS = 0x0200


_SAMPLE_FORMATS: Final = {1: "B", 2: "H", 4: "I"}  # unsigned (see the module docstring)


def elapsed_time(
    time_value: int,
    *,
    flags: int = ElapsedTimeFlag.RESOLUTION_1_MS | ElapsedTimeFlag.CURRENT_TIMELINE,
    sync_source: int = TimeSyncSource.NOT_SYNCHRONIZED,
    tz_dst_offset: int = 0,
) -> bytes:
    """The 9-byte Elapsed Time: flags, Time Value u48 (units per ``flags``), sync source, offset."""
    if not 0 <= time_value <= U48_MAX:
        raise ValueError(f"time value {time_value} does not fit 48 bits")
    return (
        U8.pack(flags)
        + time_value.to_bytes(6, "little")
        + U8.pack(sync_source)
        + struct.pack("<b", tz_dst_offset)
    )


@dataclass(frozen=True, slots=True)
class SampleArray:
    """The value of a sample array observation (FLOAT fields already encoded as words)."""

    unit: int
    scale_factor: int
    offset: int
    scale_period: int
    samples: Sequence[int]
    samples_per_period: int = 1
    bytes_per_sample: int = 2

    def __bytes__(self) -> bytes:
        fmt = _SAMPLE_FORMATS.get(self.bytes_per_sample)
        if fmt is None:
            raise ValueError(f"{self.bytes_per_sample} bytes per sample is not supported")
        return (
            U16.pack(self.unit)
            + pack_float(self.scale_factor)
            + pack_float(self.offset)
            + pack_float(self.scale_period)
            + U8.pack(self.samples_per_period)
            + U8.pack(self.bytes_per_sample)
            + U32.pack(len(self.samples))
            + struct.pack(f"<{len(self.samples)}{fmt}", *self.samples)
        )


def observation(
    class_type: int,
    value: bytes,
    *,
    observation_type: int | None = None,
    timestamp: bytes | None = None,
) -> bytes:
    """An ACOM observation: class type, length, flags, the flagged header fields, the value."""
    flags = 0
    body = b""
    if observation_type is not None:
        flags |= ObservationFlag.TYPE
        body += U32.pack(observation_type)
    if timestamp is not None:
        if len(timestamp) != ELAPSED_TIME_SIZE:
            raise ValueError("a GHS timestamp is 9 bytes")
        flags |= ObservationFlag.TIMESTAMP
        body += timestamp
    body = U16.pack(flags) + body + value
    return U8.pack(class_type) + U16.pack(len(body)) + body


def sample_array_observation(
    observation_type: int, timestamp: bytes, samples: SampleArray
) -> bytes:
    return observation(
        ObservationClass.SAMPLE_ARRAY,
        bytes(samples),
        observation_type=observation_type,
        timestamp=timestamp,
    )


def period_word(sample_rate_hz: int) -> int:
    """The Scale Period FLOAT for one sample at ``sample_rate_hz`` (exact: 250 Hz → 0.004 s)."""
    period = Decimal(1) / Decimal(sample_rate_hz)
    if period * sample_rate_hz != 1:
        raise ValueError(f"1/{sample_rate_hz} s is not an exact decimal")
    return float32_exact(period)


def segment(observation_bytes: bytes, mtu: int, counter: int) -> tuple[list[bytes], int]:
    """Split an observation into notification payloads for ``mtu``; returns the payloads and the
    next segment counter."""
    chunk = mtu - ATT_NOTIFICATION_OVERHEAD - SEGMENT_HEADER_SIZE
    if chunk < 1:
        raise ValueError(f"ATT MTU {mtu} too small for segmentation")
    pieces = [
        observation_bytes[i : i + chunk] for i in range(0, len(observation_bytes), chunk)
    ] or [b""]
    out = []
    for index, piece in enumerate(pieces):
        header = (counter % SEGMENT_COUNTER_MODULO) << SEGMENT_COUNTER_SHIFT
        if index == 0:
            header |= SEGMENT_FIRST
        if index == len(pieces) - 1:
            header |= SEGMENT_LAST
        out.append(U8.pack(header) + piece)
        counter = (counter + 1) % SEGMENT_COUNTER_MODULO
    return out, counter


def health_sensor_features(observation_types: Sequence[int]) -> bytes:
    """Health Sensor Features: flags 0, count u8, the supported observation types (u32 each)."""
    return U8.pack(0) + U8.pack(len(observation_types)) + b"".join(map(U32.pack, observation_types))
