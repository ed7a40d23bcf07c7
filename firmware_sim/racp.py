"""Record Access Control Point 0x2A52, the firmware's side: parse requests, select records, build
responses.

Values from the Bluetooth SIG Glucose Service v1.0 §3.7 (the RACP that the Blood Pressure Service
v1.1 and PLXS reuse; docs/standards.md): op codes 1 report stored records, 2 delete stored records,
3 abort operation, 4 report number of stored records, 5 number of stored records response, 6
response code; operators 0 null, 1 all, 2 ≤, 3 ≥, 4 within range, 5 first, 6 last; filter type
0x01 = sequence number (u16), 0x02 = user facing time (Date Time, 7 bytes; device-local, naive);
response codes 1 success, 2 op code not supported, 3 invalid operator, 4 operator not supported,
5 invalid operand, 6 no records found, 7 abort unsuccessful, 8 procedure not completed, 9 operand
not supported. A response is ``op code, operator 0 (null),
operand`` where the response-code operand is ``request op code, response code``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from firmware_sim.encoding import DATE_TIME, U8, U16

RACP: Final = 0x2A52
FILTER_SEQUENCE_NUMBER: Final = 0x01
FILTER_USER_FACING_TIME: Final = 0x02
SEQUENCE_NUMBER_MAX: Final = 0xFFFF


class OpCode(enum.IntEnum):
    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_RECORDS = 0x04
    NUMBER_OF_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class Operator(enum.IntEnum):
    NULL = 0x00
    ALL = 0x01
    LESS_OR_EQUAL = 0x02
    GREATER_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04
    FIRST = 0x05
    LAST = 0x06


class ResponseCode(enum.IntEnum):
    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


_RECORD_OPS: Final = frozenset(
    {OpCode.REPORT_STORED_RECORDS, OpCode.DELETE_STORED_RECORDS, OpCode.REPORT_NUMBER_OF_RECORDS}
)
_OPERAND_SIZES: Final = {
    Operator.ALL: 0,
    Operator.FIRST: 0,
    Operator.LAST: 0,
    Operator.LESS_OR_EQUAL: 3,  # filter type + u16
    Operator.GREATER_OR_EQUAL: 3,
    Operator.WITHIN_RANGE: 5,  # filter type + u16 + u16
}


@dataclass(frozen=True, slots=True)
class Request:
    """A valid request: op code, operator and, for ≤/≥/range, the sequence-number bounds or
    (filter type 0x02) the user-facing-time bounds."""

    op_code: OpCode
    operator: Operator
    low: int = 0
    high: int = SEQUENCE_NUMBER_MAX
    time_low: dt.datetime | None = None
    time_high: dt.datetime | None = None

    @property
    def by_time(self) -> bool:
        return self.time_low is not None or self.time_high is not None


class RequestError(Exception):
    """A request the server answers with a response code (not with an ATT error)."""

    def __init__(self, op_code: int, code: ResponseCode) -> None:
        super().__init__(f"RACP op code {op_code}: {code.name}")
        self.op_code = op_code
        self.code = code


def parse_request(value: bytes) -> Request:
    """Parse a written RACP value; raises RequestError with the response code to send."""
    if not value:
        raise RequestError(0, ResponseCode.OP_CODE_NOT_SUPPORTED)
    raw_op = value[0]
    try:
        op_code = OpCode(raw_op)
    except ValueError:
        raise RequestError(raw_op, ResponseCode.OP_CODE_NOT_SUPPORTED) from None
    if op_code not in (*_RECORD_OPS, OpCode.ABORT_OPERATION):
        raise RequestError(raw_op, ResponseCode.OP_CODE_NOT_SUPPORTED)
    if len(value) < 2:
        raise RequestError(raw_op, ResponseCode.INVALID_OPERATOR)
    try:
        operator = Operator(value[1])
    except ValueError:  # reserved for future use: not a valid operator
        raise RequestError(raw_op, ResponseCode.INVALID_OPERATOR) from None
    operand = value[2:]
    if op_code is OpCode.ABORT_OPERATION:
        if operator is not Operator.NULL:
            raise RequestError(raw_op, ResponseCode.INVALID_OPERATOR)
        if operand:
            raise RequestError(raw_op, ResponseCode.INVALID_OPERAND)
        return Request(op_code, operator)
    if operator is Operator.NULL:
        raise RequestError(raw_op, ResponseCode.INVALID_OPERATOR)
    return _record_request(op_code, operator, operand)


def _record_request(op_code: OpCode, operator: Operator, operand: bytes) -> Request:
    size = _OPERAND_SIZES[operator]
    if size == 0:
        if operand:
            raise RequestError(op_code, ResponseCode.INVALID_OPERAND)
        return Request(op_code, operator)
    if len(operand) == size and operand[0] == FILTER_SEQUENCE_NUMBER:
        return _bounded(
            op_code,
            operator,
            [
                U16.unpack_from(operand, 1)[0],
                *([U16.unpack_from(operand, 3)[0]] if operator is Operator.WITHIN_RANGE else []),
            ],
        )
    if operand[:1] == bytes([FILTER_USER_FACING_TIME]):
        values = operand[1:]
        count = 2 if operator is Operator.WITHIN_RANGE else 1
        if len(values) != count * DATE_TIME.size:
            raise RequestError(op_code, ResponseCode.INVALID_OPERAND)
        try:
            times = [
                dt.datetime(*DATE_TIME.unpack_from(values, i * DATE_TIME.size))  # noqa: DTZ001 - device-local time
                for i in range(count)
            ]
        except ValueError:  # an impossible date
            raise RequestError(op_code, ResponseCode.INVALID_OPERAND) from None
        return _bounded(op_code, operator, times)
    if len(operand) != size:
        raise RequestError(op_code, ResponseCode.INVALID_OPERAND)
    raise RequestError(op_code, ResponseCode.OPERAND_NOT_SUPPORTED)


def _bounded(op_code: OpCode, operator: Operator, bounds: Sequence[int | dt.datetime]) -> Request:
    """The request for ≤ / ≥ / range with sequence-number or time ``bounds``."""
    first = bounds[0]
    if operator is Operator.WITHIN_RANGE:
        second = bounds[1]
        if first > second:  # type: ignore[operator]
            raise RequestError(op_code, ResponseCode.INVALID_OPERAND)
    if isinstance(first, dt.datetime):
        if operator is Operator.GREATER_OR_EQUAL:
            return Request(op_code, operator, time_low=first)
        if operator is Operator.LESS_OR_EQUAL:
            return Request(op_code, operator, time_high=first)
        assert isinstance(bounds[1], dt.datetime)
        return Request(op_code, operator, time_low=first, time_high=bounds[1])
    assert isinstance(first, int)
    if operator is Operator.GREATER_OR_EQUAL:
        return Request(op_code, operator, low=first)
    if operator is Operator.LESS_OR_EQUAL:
        return Request(op_code, operator, high=first)
    assert isinstance(bounds[1], int)
    return Request(op_code, operator, low=first, high=bounds[1])


def select(
    sequence_numbers: Sequence[int],
    request: Request,
    times: Sequence[dt.datetime] | None = None,
) -> list[int]:
    """The sequence numbers (ascending input) a record request applies to; ``times`` are the
    records' user-facing times, needed for a time-filtered request."""
    match request.operator:
        case Operator.FIRST:
            return list(sequence_numbers[:1])
        case Operator.LAST:
            return list(sequence_numbers[-1:])
        case _ if request.by_time:
            if times is None:
                raise ValueError("a time-filtered request needs the records' times")
            low = request.time_low or dt.datetime.min  # noqa: DTZ901 - device-local, naive
            high = request.time_high or dt.datetime.max  # noqa: DTZ901
            return [s for s, t in zip(sequence_numbers, times, strict=True) if low <= t <= high]
        case _:
            return [s for s in sequence_numbers if request.low <= s <= request.high]


def number_of_records_response(count: int) -> bytes:
    return U8.pack(OpCode.NUMBER_OF_RECORDS_RESPONSE) + U8.pack(Operator.NULL) + U16.pack(count)


def response_code(request_op_code: int, code: ResponseCode) -> bytes:
    return (
        U8.pack(OpCode.RESPONSE_CODE)
        + U8.pack(Operator.NULL)
        + U8.pack(request_op_code)
        + U8.pack(code)
    )
