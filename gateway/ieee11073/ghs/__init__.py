"""Generic Health Sensor service 0x1840 (Bluetooth SIG GHSS v1.0, adopted 2023-06-13).

Live Health Observations 0x2B8B and Stored Health Observations 0x2BDD (notify/indicate, segmented),
Health Sensor Features 0x2BF3 (read) and GHS Control Point 0x2BF4 (write + indicate). Observations
are the IEEE 11073-10206 ACOM objects as GHSS encodes them. One module per layer of the format,
each with its fields, their sources and where the sources disagree:

- :mod:`~gateway.ieee11073.ghs.elapsed_time`: the observation time stamp (GSS Elapsed Time);
- :mod:`~gateway.ieee11073.ghs.header`: observation class, flags, status and optional fields;
- :mod:`~gateway.ieee11073.ghs.values`: the observation values (numeric, sample array, …);
- :mod:`~gateway.ieee11073.ghs.acom`: observations and bundles, their framing, their measurements;
- :mod:`~gateway.ieee11073.ghs.segmentation`: the segmentation header and the Reassembler;
- :mod:`~gateway.ieee11073.ghs.service`: the four characteristics, registered as codecs.

This package re-exports their public names: ``from gateway.ieee11073.ghs import Reassembler``.

Sources
=======

Only the title page of the GHSS v1.0 text (bluetooth.com GHSS/out/en/index-en.html) could be read
with the tools here; its field tables could not. The layout follows open implementations instead:

- [ST] STMicroelectronics GHS sensor firmware, 2024, whose example objects are annotated field by
  field and fed to the SIG's qualification tester (``GHS_APP_PTS_TestDBInit``):
  stm32-hotspot/STM32WBA-BLE-GenericHealthSensor @cedc31b
  Projects/NUCLEO-WBA55CG/Applications/BLE/BLE_GenericHealthSensor/STM32_WPAN/App/ghs_app.c
  (NumericOxygenSaturation, SimpleDiscreteObservation, StringObservation, SampleArrayObservation,
  TLVEncodedObservation, CompoundObservationBloodPressure, CompoundDiscreteBloodPressureStatus,
  CompoundDiscreteEvent, ObservationBundle; ``GHS_APP_UpdateStoredHealthObservation``,
  ``ghsapp_send_segment``), ghs_cp.c, ghs_racp.c; and STMicroelectronics/STM32CubeWBA
  Projects/NUCLEO-WBA25CE/Applications/BLE/BLE_GenericHealth_PulseOximeter/STM32_WPAN/App.
- [SIM] philips-labs/BLE-GHS-Server-Simulator @271f2aa and [CLI] philips-labs/BLE-GHS-Client-Example
  @4850963 (Philips; GHSS acknowledges E. Moll and A. Nabi of Philips as authors), 2023-07-20:
  observations/*.kt, extensions/ByteExtensions.kt (``asBLEDataSegments``, ``withLengthPrefix``),
  extensions/DateExtensions.kt, GhsObservationSendHandler.kt, GhsControlPointHandler.kt,
  GenericHealthSensorPacketHandler.kt, GhsFeaturesHandler.kt, ObservationExtensions.kt.
- [ETS] GSS "Elapsed Time" structure (GHSS time stamps), as in Zephyr
  include/zephyr/bluetooth/services/ets.h (flag bits, resolution codes, time sync sources).
- [IG] HL7 PHD IG (HL7/phd @5af8412), StructureDefinition-PhdBaseObservation-notes.md: the ACOM
  measurement status conditions in order, "the Bluetooth SIG GHS specification adds more".
- [UUID] bleak/uuids.py (Bluetooth assigned numbers): 0x2BF3 is Health Sensor Features; 0x2BF0,
  sometimes given for it, is Battery Energy Status.

docs/standards.md summarises the layouts with the other services'.
"""

from gateway.ieee11073.ghs._common import (
    CURRENT_ELAPSED_TIME_UUID,
    ELAPSED_TIME_SERVICE_UUID,
    GHS_CONTROL_POINT_UUID,
    HEALTH_SENSOR_FEATURES_UUID,
    LIVE_HEALTH_OBSERVATIONS_UUID,
    OBSERVATION_SCHEDULE_CHANGED_UUID,
    SERVICE_UUID,
    STORED_HEALTH_OBSERVATIONS_UUID,
)
from gateway.ieee11073.ghs.acom import (
    AcomObject,
    Observation,
    ObservationBundle,
    StoredHealthObservation,
    decode_observation,
)
from gateway.ieee11073.ghs.elapsed_time import ElapsedTime, TimeFlags, TimeResolution, TimeSource
from gateway.ieee11073.ghs.header import (
    NO_HEADER,
    STATUS_TO_MEASUREMENT_STATUS,
    ObservationClass,
    ObservationFlags,
    ObservationHeader,
    ObservationStatus,
    Tlv,
)
from gateway.ieee11073.ghs.segmentation import (
    ATT_MTU_MAX,
    ATT_MTU_MIN,
    DEFAULT_MAX_OBSERVATION_SIZE,
    Reassembler,
    SegmentationHeader,
    segment,
)
from gateway.ieee11073.ghs.service import (
    START_LIVE_OBSERVATIONS,
    STOP_LIVE_OBSERVATIONS,
    DeviceSpecialization,
    FeatureFlags,
    GhsControlPoint,
    GhsControlPointOpCode,
    HealthSensorFeatures,
    LiveHealthObservations,
    StoredHealthObservations,
)
from gateway.ieee11073.ghs.values import (
    SAMPLES_SIGNED,
    Component,
    ComponentValue,
    CompoundDiscreteEventValue,
    CompoundStateEventValue,
    CompoundValue,
    NumericValue,
    ObservationValue,
    SampleArrayValue,
    SimpleDiscreteValue,
    StringValue,
    TlvEncodedValue,
    sample_range,
)

__all__ = [
    "ATT_MTU_MAX",
    "ATT_MTU_MIN",
    "CURRENT_ELAPSED_TIME_UUID",
    "DEFAULT_MAX_OBSERVATION_SIZE",
    "ELAPSED_TIME_SERVICE_UUID",
    "GHS_CONTROL_POINT_UUID",
    "HEALTH_SENSOR_FEATURES_UUID",
    "LIVE_HEALTH_OBSERVATIONS_UUID",
    "NO_HEADER",
    "OBSERVATION_SCHEDULE_CHANGED_UUID",
    "SAMPLES_SIGNED",
    "SERVICE_UUID",
    "START_LIVE_OBSERVATIONS",
    "STATUS_TO_MEASUREMENT_STATUS",
    "STOP_LIVE_OBSERVATIONS",
    "STORED_HEALTH_OBSERVATIONS_UUID",
    "AcomObject",
    "Component",
    "ComponentValue",
    "CompoundDiscreteEventValue",
    "CompoundStateEventValue",
    "CompoundValue",
    "DeviceSpecialization",
    "ElapsedTime",
    "FeatureFlags",
    "GhsControlPoint",
    "GhsControlPointOpCode",
    "HealthSensorFeatures",
    "LiveHealthObservations",
    "NumericValue",
    "Observation",
    "ObservationBundle",
    "ObservationClass",
    "ObservationFlags",
    "ObservationHeader",
    "ObservationStatus",
    "ObservationValue",
    "Reassembler",
    "SampleArrayValue",
    "SegmentationHeader",
    "SimpleDiscreteValue",
    "StoredHealthObservation",
    "StoredHealthObservations",
    "StringValue",
    "TimeFlags",
    "TimeResolution",
    "TimeSource",
    "Tlv",
    "TlvEncodedValue",
    "decode_observation",
    "sample_range",
    "segment",
]
