"""Simulated Zephyr medical sensors on a real Bluetooth LE stack (Bumble).

In-process API::

    from firmware_sim import Simulator

    async with Simulator(["ecg", "spo2", "bp", "thermo"], scenario="normal", seed=1) as sim:
        hci = await sim.attach_host()  # .source / .sink for a Bumble Host or Device
        sim.sensors["bp"].stats        # what the sensor sent, counted by the sensor
        await sim.sensors["ecg"].disconnect()

    # several sensors of a kind: keys "ecg", "ecg-2", "ecg-3", "bp"
    async with Simulator(parse_devices("ecg:3,bp")) as sim: ...

Command line: ``bedside-sim --hci tcp-server:127.0.0.1:9411 --devices ecg,spo2,bp,thermo``
(``--devices ecg:5,spo2:5,bp:5,thermo:5`` for five of each).
"""

from firmware_sim.context import SensorStats
from firmware_sim.scenarios import Scenario, ScenarioError, builtin_names
from firmware_sim.sensor import Sensor
from firmware_sim.simulator import (
    DEFAULT_KINDS,
    HostTransport,
    Simulator,
    parse_devices,
    sensor_address,
    sensor_addresses,
    sensor_keys,
)

__all__ = [
    "DEFAULT_KINDS",
    "HostTransport",
    "Scenario",
    "ScenarioError",
    "Sensor",
    "SensorStats",
    "Simulator",
    "builtin_names",
    "parse_devices",
    "sensor_address",
    "sensor_addresses",
    "sensor_keys",
]
