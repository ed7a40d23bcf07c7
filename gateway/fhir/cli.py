"""``bedside decode --fhir``: one decoded characteristic value as a FHIR ``collection`` Bundle.

The command decodes bytes typed on a command line, so it knows neither the sensor nor the
gateway: the sensor Device carries the all-zeros EUI-64, the gateway Device the all-ones one (two
values no real device has), and both say so in their names. The time of reception
is the time of the call (UTC) unless given.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Final

from gateway.fhir.bundle import collection_bundle
from gateway.fhir.device import GatewayInfo, SensorInfo
from gateway.fhir.observation import MappingContext, resources_for
from gateway.ieee11073.registry import MeasurementSource

UNKNOWN_SENSOR_EUI64: Final = "0000000000000000"
UNKNOWN_GATEWAY_EUI64: Final = "FFFFFFFFFFFFFFFF"
DECODE_SENSOR: Final = SensorInfo(UNKNOWN_SENSOR_EUI64, name="unknown sensor (bedside decode)")
DECODE_GATEWAY: Final = GatewayInfo(UNKNOWN_GATEWAY_EUI64, name="bedside decode")


def decoded_bundle(value: object, received_at: _dt.datetime | None = None) -> dict[str, Any]:
    """The Observations of a decoded characteristic value, with their two Devices.

    A value that carries no measurements (Body Sensor Location, features, …) gives an empty
    collection.
    """
    if not isinstance(value, MeasurementSource):
        return collection_bundle([])
    measurements = value.measurements()
    if not measurements:
        return collection_bundle([])
    when = received_at if received_at is not None else _dt.datetime.now(_dt.UTC)
    ctx = MappingContext(DECODE_SENSOR, DECODE_GATEWAY, when)
    return collection_bundle(resources_for(measurements, ctx), timestamp=when)
