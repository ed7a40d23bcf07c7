"""Stored records served over the Record Access Control Point, as a BP cuff or a glucose meter
keeps them (RACP: BLS 1.1 §3.3 / GLS 1.0 §3.4, GSS "Record Access Control Point").

A request is checked as the specifications say (the RACP and, for a report, the measurement
characteristic must be subscribed; one procedure at a time, an abort ends the running one), then
carried out in the background; the response is indicated on the RACP once the records were sent.
Each kind says how one record goes out (:meth:`RecordKeeper.send_record`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from bumble.att import ATT_Error
from bumble.device import Connection

from firmware_sim import racp
from firmware_sim.bluetooth import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_PROCEDURE_ALREADY_IN_PROGRESS,
)
from firmware_sim.sensor import Sensor


class RecordKeeper(Sensor, abc.ABC):
    """A sensor with stored records and a RACP; subclasses set ``records``, ``racp`` and
    ``measurement`` and say how a record is sent."""

    RECORDS_INDICATED: ClassVar[bool]
    """The measurement characteristic carries records as indications (else notifications)."""

    records: list[Any]
    racp: Any
    measurement: Any
    _racp_busy = False  # from the request until its response is sent
    _racp_abort = False

    @abc.abstractmethod
    async def send_record(self, record: Any) -> bool:
        """Send one record; False when the link (or the subscription) is gone."""

    def _on_racp_write(self, _connection: Connection, value: bytes) -> None:
        self.stats.racp_requests += 1
        if not self.subscribed(self.racp, indicate=True):
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        running = self._racp_busy
        try:
            request = racp.parse_request(value)
        except racp.RequestError as exc:
            if running:
                raise ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS) from exc
            self._respond(racp.response_code(exc.op_code, exc.code))
            return
        if request.op_code is racp.OpCode.ABORT_OPERATION:
            if running:
                self._racp_abort = True
            else:
                self._respond(
                    racp.response_code(racp.OpCode.ABORT_OPERATION, racp.ResponseCode.SUCCESS)
                )
            return
        if running:
            raise ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        if request.op_code is racp.OpCode.REPORT_STORED_RECORDS and not self.subscribed(
            self.measurement, indicate=self.RECORDS_INDICATED
        ):
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)  # the measurement CCCD first
        self._racp_abort = False
        self._racp_busy = True
        self.spawn(self._racp_procedure(request), "RACP procedure")

    def _respond(self, value: bytes) -> None:
        self.spawn(self.indicate(self.racp, value), "RACP response")

    async def _racp_procedure(self, request: racp.Request) -> None:
        try:
            response = await self._racp_run(request)
        finally:
            self._racp_busy = False  # a client may write its next request once it has this
        if response is not None:
            await self.indicate(self.racp, response)

    async def _racp_run(self, request: racp.Request) -> bytes | None:
        """Carry out a request; returns the response to indicate (None: the link was lost)."""
        selected = racp.select(
            [r.sequence_number for r in self.records], request, [r.time for r in self.records]
        )
        op = request.op_code
        if op is racp.OpCode.REPORT_NUMBER_OF_RECORDS:
            return racp.number_of_records_response(len(selected))
        if not selected:
            return racp.response_code(op, racp.ResponseCode.NO_RECORDS_FOUND)
        if op is racp.OpCode.DELETE_STORED_RECORDS:
            chosen = set(selected)
            self.records = [r for r in self.records if r.sequence_number not in chosen]
            return racp.response_code(op, racp.ResponseCode.SUCCESS)
        by_number = {r.sequence_number: r for r in self.records}
        for number in selected:
            if self._racp_abort:
                break
            record = by_number.get(number)
            if record is not None and not await self.send_record(record):
                return None  # link lost: the procedure ends with it
        if self._racp_abort:
            return racp.response_code(racp.OpCode.ABORT_OPERATION, racp.ResponseCode.SUCCESS)
        return racp.response_code(op, racp.ResponseCode.SUCCESS)
