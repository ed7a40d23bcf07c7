"""The sensor kinds, one module each: ECG patch (:mod:`.ecg`), pulse oximeter (:mod:`.spo2`),
blood-pressure cuff (:mod:`.bp`), thermometer (:mod:`.thermo`), glucose meter (:mod:`.glucose`).

Each adds its services to the shared :class:`~firmware_sim.sensor.Sensor` and runs its measurement
loops; :mod:`.common` holds what they share (GHS live observations, time stamps, random streams).
"""

from __future__ import annotations

from typing import Final

from firmware_sim.devices.bp import BpSensor, StoredRecord
from firmware_sim.devices.ecg import EcgSensor
from firmware_sim.devices.glucose import GlucoseSensor
from firmware_sim.devices.spo2 import Spo2Sensor
from firmware_sim.devices.thermo import ThermoSensor
from firmware_sim.sensor import Sensor

KINDS: Final[dict[str, type[Sensor]]] = {
    cls.KIND: cls for cls in (EcgSensor, Spo2Sensor, BpSensor, ThermoSensor, GlucoseSensor)
}

__all__ = [
    "KINDS",
    "BpSensor",
    "EcgSensor",
    "GlucoseSensor",
    "Spo2Sensor",
    "StoredRecord",
    "ThermoSensor",
]
