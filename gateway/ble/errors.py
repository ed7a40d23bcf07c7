"""Why a measurement on demand could not be had: a machine code and one plain sentence
(docs/contracts.md, the ``observation_unavailable`` event)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from gateway.errors import BedsideError

if TYPE_CHECKING:
    from gateway.ble.session import SessionState


class MeasureFailure(enum.StrEnum):
    """Why a measurement on demand failed, as a machine code (docs/contracts.md, the
    ``observation_unavailable`` event): every :class:`SensorError` carries one."""

    NOT_CONNECTED = "not_connected"  # the sensors that measure the code are not connected
    BUSY = "busy"  # the sensor was already measuring and gave no result in time
    TIMEOUT = "timeout"  # no measurement in time
    NO_SENSOR = "no_sensor"  # no sensor known to the gateway measures the code
    NOT_ALLOWED = "not_allowed"  # it would start a measurement the caller may not start


class SensorError(BedsideError):
    """Measure-on-demand could not be served; ``failure`` says why (one sentence in the
    message, for people and the model)."""

    failure: MeasureFailure = MeasureFailure.NOT_CONNECTED

    def __init__(self, message: str, failure: MeasureFailure | None = None) -> None:
        super().__init__(message)
        if failure is not None:
            self.failure = failure


class SensorNotConnectedError(SensorError):
    failure = MeasureFailure.NOT_CONNECTED

    def __init__(self, address: str, state: SessionState, name: str = "") -> None:
        self.address = address
        self.state = state
        who = f"{name} ({address})" if name else address
        super().__init__(f"sensor {who} is not connected (state: {state})")


class SensorUnavailableError(SensorError):
    """No known sensor can measure the code."""

    failure = MeasureFailure.NO_SENSOR


class MeasurementTimeoutError(SensorError, TimeoutError):
    """The sensor did not deliver a measurement in time."""

    failure = MeasureFailure.TIMEOUT


class SensorBusyError(MeasurementTimeoutError):
    """The sensor was already measuring (ATT 0xFE, or a measurement of ours) and the running
    measurement gave no result in time."""

    failure = MeasureFailure.BUSY


class MeasurementNotAllowedError(SensorError):
    """Measuring the code needs a measurement of a burden the caller may not start."""

    failure = MeasureFailure.NOT_ALLOWED
