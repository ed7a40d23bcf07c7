"""Measurements → HL7 FHIR R4 resources per the HL7 Personal Health Device IG (pure, no I/O).

``map_measurements`` makes Observations, ``sensor_device``/``gateway_device`` the Devices they
reference, ``transaction_bundle``/``collection_bundle`` wrap them, ``dumps``/``loads`` turn them
into JSON text and back with exact decimals.
"""

from gateway.fhir.bundle import collection_bundle, transaction_bundle
from gateway.fhir.codes import CodeTable, code_table
from gateway.fhir.device import GatewayInfo, SensorInfo, gateway_device, sensor_device
from gateway.fhir.jsonio import dumps, loads
from gateway.fhir.observation import MappingContext, PatientRef, map_measurements, resources_for
from gateway.fhir.resource import MappedResource

__all__ = [
    "CodeTable",
    "GatewayInfo",
    "MappedResource",
    "MappingContext",
    "PatientRef",
    "SensorInfo",
    "code_table",
    "collection_bundle",
    "dumps",
    "gateway_device",
    "loads",
    "map_measurements",
    "resources_for",
    "sensor_device",
    "transaction_bundle",
]
