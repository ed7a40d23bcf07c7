"""The decoder's output: service-independent measurements keyed by MDC codes.

Each characteristic codec turns its own flags and fields into :class:`Measurement` records; the FHIR
mapping (``gateway.fhir``) only ever sees these. MDC codes are the 32-bit context-free codes of
IEEE 11073-10101 (partition << 16 | term code), as the PHD IG and GHS use them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.numbers import Float, MderNumber


class MeasurementStatus(enum.IntFlag):
    """Measurement quality, the union of what the services report (IEEE 11073-20601
    MeasurementStatus; PLX Measurement Status field, PLXS §3.1.1.4).

    The FHIR mapping turns ``INVALID``, ``NOT_AVAILABLE`` and ``ONGOING`` into a
    ``dataAbsentReason``; the other bits become ``interpretation`` codings.
    """

    INVALID = 1 << 0
    QUESTIONABLE = 1 << 1
    NOT_AVAILABLE = 1 << 2
    CALIBRATION_ONGOING = 1 << 3
    TEST_DATA = 1 << 4
    DEMO_DATA = 1 << 5
    VALIDATED = 1 << 6
    EARLY_INDICATION = 1 << 7
    ONGOING = 1 << 8
    FULLY_QUALIFIED = 1 << 9
    FROM_STORAGE = 1 << 10


class Condition(enum.Enum):
    """Device-reported conditions around a measurement that are not quality flags.

    Blood Pressure Measurement Status (BLS §3.2.1.5) and the like; the FHIR mapping reports them
    as interpretation/notes through its code table.
    """

    BODY_MOVEMENT = "body-movement"
    CUFF_TOO_LOOSE = "cuff-too-loose"
    IRREGULAR_PULSE = "irregular-pulse"
    PULSE_RATE_ABOVE_RANGE = "pulse-rate-above-range"
    PULSE_RATE_BELOW_RANGE = "pulse-rate-below-range"
    IMPROPER_POSITION = "improper-measurement-position"
    SENSOR_CONTACT_NOT_DETECTED = "sensor-contact-not-detected"
    DEVICE_CLOCK_NOT_SET = "device-clock-not-set"


NO_STATUS = MeasurementStatus(0)


@dataclass(frozen=True, slots=True)
class SampleArray:
    """A waveform segment (ACOM sample array): ``physical = offset + scale × sample``.

    ``period_s`` is the time between two groups of ``samples_per_period`` samples, in seconds.
    """

    scale_factor: Float
    offset: Float
    period_s: Float
    samples_per_period: int
    bytes_per_sample: int
    samples: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured quantity, or a compound of ``components`` (blood pressure).

    ``type_code`` is the MDC code of what was measured in its context (the pulse rate of an oximeter
    is 149530, of a cuff 149546). ``unit_code`` is the MDC dimension code; ``value`` keeps the
    device's precision. ``timestamp`` is the device's own clock, not a corrected time.
    ``body_site`` names where the sensor sat (a key of the FHIR code table: "chest", "armpit", …).
    ``supplemental`` lists MDC codes that qualify the measurement (they join the PHD IG
    identifier).
    """

    type_code: int
    value: MderNumber | None = None
    unit_code: int | None = None
    timestamp: DateTime | None = None
    status: MeasurementStatus = NO_STATUS
    conditions: frozenset[Condition] = field(default_factory=frozenset)
    components: tuple[Measurement, ...] = ()
    samples: SampleArray | None = None
    body_site: str | None = None
    supplemental: tuple[int, ...] = ()
    user_index: int | None = None
