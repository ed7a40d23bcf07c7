"""Record Access Control Point 0x2A52 (write + indicate): stored-record requests and responses.

Layout (GSS Record Access Control Point; Glucose Service v1.0 §3.3.2 / Glucose Profile §4.9,
Blood Pressure Service v1.1 §3.4, Pulse Oximeter Service v1.0 §3.5): Op Code u8, Operator u8,
Operand (0 or more bytes, shape fixed by op code and operator).

- Requests: Report Stored Records 0x01, Delete Stored Records 0x02, Report Number of Stored
  Records 0x04 take an operator (all, ≤, ≥, within range, first, last); the ≤ / ≥ / range operators
  carry a Filter Type byte followed by one (≤, ≥) or two (range: minimum, maximum) filter values.
  Filter Type 0x01 is the Sequence Number (u16) in Glucose/BLS/PLXS; 0x02 is the User Facing Time
  (7-byte Date Time). Abort Operation 0x03 has the Null operator and no operand.
- Responses: Number of Stored Records Response 0x05 (Null operator, u16 count) and Response Code
  0x06 (Null operator, request op code u8 + response code u8).
- Generic Health Sensor Service v1.0 uses the same characteristic with 32-bit record numbers:
  Filter Type 0x01 = Record Number (u32), the Number of Stored Records Response carries a u32,
  and it adds Combined Report 0x07 with its Combined Report Response 0x08 (u32 count) and response
  code 0x0A Server Busy (followed from philips-labs BLE-GHS-Server-Simulator GhsRacpHandler.kt and
  BLE-GHS-Client-Example GhsRacpHandler.kt, both from the GHS specification editors). The widths
  differ in length, so decoding picks them from the operand length and keeps the choice in
  ``wide`` for an exact ``__bytes__``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self, TypeVar

from gateway.ieee11073._buffer import U8, U16, U32, Reader, check_range
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.registry import register

U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFF_FFFF
RESPONSE_CODE_OPERAND = struct.Struct("<BB")  # request op code, response code


class RacpOpCode(enum.IntEnum):
    """RACP Op Code (GSS Record Access Control Point; GHSS adds 0x07/0x08)."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_STORED_RECORDS = 0x04
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06
    COMBINED_REPORT = 0x07  # GHSS only
    COMBINED_REPORT_RESPONSE = 0x08  # GHSS only


class RacpOperator(enum.IntEnum):
    """RACP Operator (GSS Record Access Control Point)."""

    NULL = 0x00
    ALL_RECORDS = 0x01
    LESS_THAN_OR_EQUAL = 0x02
    GREATER_THAN_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04  # inclusive
    FIRST_RECORD = 0x05  # oldest
    LAST_RECORD = 0x06  # most recent


class FilterType(enum.IntEnum):
    """Operand Filter Type (Glucose Service §3.3.2.3; GHSS: 0x01 is the u32 Record Number)."""

    SEQUENCE_NUMBER = 0x01
    USER_FACING_TIME = 0x02


class RacpResponseCode(enum.IntEnum):
    """Response Code values of op code 0x06; unknown codes are kept as plain integers."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09
    SERVER_BUSY = 0x0A  # GHSS


# Requests that select records with an operator, and how many filter values each operator takes.
RECORD_REQUESTS: Final = frozenset(
    {
        RacpOpCode.REPORT_STORED_RECORDS,
        RacpOpCode.DELETE_STORED_RECORDS,
        RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
        RacpOpCode.COMBINED_REPORT,
    }
)
FILTER_VALUE_COUNT: Final = {
    RacpOperator.ALL_RECORDS: 0,
    RacpOperator.LESS_THAN_OR_EQUAL: 1,
    RacpOperator.GREATER_THAN_OR_EQUAL: 1,
    RacpOperator.WITHIN_RANGE: 2,
    RacpOperator.FIRST_RECORD: 0,
    RacpOperator.LAST_RECORD: 0,
}
COUNT_RESPONSES: Final = frozenset(
    {RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOpCode.COMBINED_REPORT_RESPONSE}
)

FilterValues = tuple[int, ...] | tuple[DateTime, ...]
E = TypeVar("E", bound=enum.IntEnum)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Filter Type and its value(s): one for ≤ / ≥, two (minimum, maximum) for a range."""

    filter_type: FilterType
    values: FilterValues

    def __post_init__(self) -> None:
        check_range("number of filter values", len(self.values), 1, 2)
        if self.filter_type is FilterType.SEQUENCE_NUMBER:
            if not all(isinstance(v, int) for v in self.values):
                raise ValueError("sequence number filter values are integers")
        elif not all(isinstance(v, DateTime) for v in self.values):
            raise ValueError("user facing time filter values are Date Time values")


@register
@dataclass(frozen=True, slots=True)
class RecordAccessControlPoint:
    """One RACP value: a request (written by the gateway) or a response (indicated by a sensor).

    Only the fields the op code uses are set: ``filter`` for ≤ / ≥ / range requests,
    ``number_of_records`` for the two count responses, ``request_op_code`` and ``response_code``
    for a Response Code. ``wide`` selects GHSS's 32-bit record numbers and counts instead of the
    16-bit sequence numbers and counts of Glucose/BLS/PLXS.
    """

    op_code: RacpOpCode
    operator: RacpOperator = RacpOperator.NULL
    filter: RecordFilter | None = None
    number_of_records: int | None = None
    request_op_code: RacpOpCode | int | None = None
    response_code: RacpResponseCode | int | None = None
    wide: bool = False

    UUID: ClassVar[int] = 0x2A52
    NAME: ClassVar[str] = "Record Access Control Point"

    def __post_init__(self) -> None:
        self._check_shape()
        self._check_ranges()

    def _check_shape(self) -> None:
        """Which operator and operand fields the op code takes (GSS RACP op code table)."""
        op = self.op_code
        if op in RECORD_REQUESTS:
            if self.operator is RacpOperator.NULL:
                raise ValueError(f"{op.name} needs an operator other than NULL")
            wanted = FILTER_VALUE_COUNT[self.operator]
            got = 0 if self.filter is None else len(self.filter.values)
            if wanted != got:
                raise ValueError(f"operator {self.operator.name} takes {wanted} filter value(s)")
        elif self.operator is not RacpOperator.NULL or self.filter is not None:
            raise ValueError(f"{op.name} takes the NULL operator and no filter")
        if (op in COUNT_RESPONSES) != (self.number_of_records is not None):
            raise ValueError("number_of_records belongs to the count responses (0x05, 0x08)")
        uses_response = op is RacpOpCode.RESPONSE_CODE
        response_fields = (self.request_op_code is not None, self.response_code is not None)
        if response_fields != (uses_response, uses_response):
            raise ValueError("request_op_code and response_code belong to the Response Code (0x06)")
        if op is RacpOpCode.COMBINED_REPORT_RESPONSE and not self.wide:
            raise ValueError("the Combined Report Response count is always 32 bits (wide)")
        if self.wide and not (op in COUNT_RESPONSES or self._has_sequence_filter):
            raise ValueError("wide applies to record numbers and record counts only")

    def _check_ranges(self) -> None:
        limit = U32_MAX if self.wide else U16_MAX
        if self.number_of_records is not None:
            check_range("number of records", self.number_of_records, 0, limit)
        if self.filter is not None and self._has_sequence_filter:
            for value in self.filter.values:
                assert isinstance(value, int)
                check_range("record number" if self.wide else "sequence number", value, 0, limit)
        if self.request_op_code is not None:
            check_range("request op code", int(self.request_op_code), 0, 0xFF)
        if self.response_code is not None:
            check_range("response code", int(self.response_code), 0, 0xFF)

    @property
    def _has_sequence_filter(self) -> bool:
        return self.filter is not None and self.filter.filter_type is FilterType.SEQUENCE_NUMBER

    @property
    def is_response(self) -> bool:
        return self.op_code in COUNT_RESPONSES or self.op_code is RacpOpCode.RESPONSE_CODE

    # -- decoding -------------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data, f"{cls.NAME} (0x{cls.UUID:04X})")
        raw_op = r.u8("op code")
        try:
            op = RacpOpCode(raw_op)
        except ValueError:
            raise r.error(f"an op code 0x01-0x08, found 0x{raw_op:02X}", offset=0) from None
        raw_operator = r.u8("operator")
        try:
            operator = RacpOperator(raw_operator)
        except ValueError:
            raise r.error(f"an operator 0x00-0x06, found 0x{raw_operator:02X}", offset=1) from None
        start = r.offset
        with r.field(f"{op.name} operand"):
            if op in RECORD_REQUESTS and FILTER_VALUE_COUNT.get(operator, 0):
                value = cls._read_filtered_request(r, op, operator)
            elif op in COUNT_RESPONSES:
                value = cls._read_count(r, op, operator)
            elif op is RacpOpCode.RESPONSE_CODE:
                request, code = r.unpack(RESPONSE_CODE_OPERAND, "request op code and response code")
                value = cls(
                    op,
                    operator,
                    request_op_code=_known(RacpOpCode, request),
                    response_code=_known(RacpResponseCode, code),
                )
            else:
                value = cls(op, operator)
        if r.remaining:
            raise r.error(f"end of value, found {r.remaining} extra byte(s)", offset=start)
        return value

    @classmethod
    def _read_filtered_request(cls, r: Reader, op: RacpOpCode, operator: RacpOperator) -> Self:
        count = FILTER_VALUE_COUNT[operator]
        raw_type = r.u8("filter type")
        if raw_type == FilterType.USER_FACING_TIME:
            times = tuple(DateTime.read(r) for _ in range(count))
            return cls(op, operator, RecordFilter(FilterType.USER_FACING_TIME, times))
        if raw_type != FilterType.SEQUENCE_NUMBER:
            raise r.error(f"filter type 0x01 or 0x02, found 0x{raw_type:02X}", offset=r.offset - 1)
        if r.remaining == count * U16.size:
            wide, st = False, U16
        elif r.remaining == count * U32.size:
            wide, st = True, U32
        else:
            raise r.error(
                f"{count} sequence number(s) of 2 bytes or record number(s) of 4 bytes, "
                f"found {r.remaining} byte(s)"
            )
        numbers = tuple(r.unpack(st, "sequence number")[0] for _ in range(count))
        return cls(op, operator, RecordFilter(FilterType.SEQUENCE_NUMBER, numbers), wide=wide)

    @classmethod
    def _read_count(cls, r: Reader, op: RacpOpCode, operator: RacpOperator) -> Self:
        if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE and r.remaining == U16.size:
            return cls(op, operator, number_of_records=r.u16("number of records"))
        if r.remaining != U32.size and op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
            raise r.error(f"a 2- or 4-byte number of records, found {r.remaining} byte(s)")
        return cls(op, operator, number_of_records=r.u32("number of records"), wide=True)

    # -- encoding -------------------------------------------------------------------------------

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.op_code) + U8.pack(self.operator))
        number = U32 if self.wide else U16
        if self.filter is not None:
            out += U8.pack(self.filter.filter_type)
            for value in self.filter.values:
                out += bytes(value) if isinstance(value, DateTime) else number.pack(value)
        if self.number_of_records is not None:
            out += number.pack(self.number_of_records)
        if self.request_op_code is not None and self.response_code is not None:
            out += RESPONSE_CODE_OPERAND.pack(int(self.request_op_code), int(self.response_code))
        return bytes(out)


def _known(enum_type: type[E], raw: int) -> E | int:
    try:
        return enum_type(raw)
    except ValueError:
        return raw  # a value this gateway does not know yet: keep it for the exact inverse


# -- request builders the BLE session uses ---------------------------------------------------------


def report_all_records() -> RecordAccessControlPoint:
    """Report Stored Records, all records."""
    return RecordAccessControlPoint(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.ALL_RECORDS)


def report_records_from(sequence_number: int, *, wide: bool = False) -> RecordAccessControlPoint:
    """Report Stored Records with sequence number ≥ ``sequence_number`` (GHSS: record number)."""
    return RecordAccessControlPoint(
        RacpOpCode.REPORT_STORED_RECORDS,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RecordFilter(FilterType.SEQUENCE_NUMBER, (sequence_number,)),
        wide=wide,
    )


def report_number_of_records(
    from_sequence_number: int | None = None, *, wide: bool = False
) -> RecordAccessControlPoint:
    """Report Number of Stored Records: all, or those with sequence number ≥ the given one."""
    if from_sequence_number is None:
        return RecordAccessControlPoint(
            RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS, RacpOperator.ALL_RECORDS
        )
    return RecordAccessControlPoint(
        RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RecordFilter(FilterType.SEQUENCE_NUMBER, (from_sequence_number,)),
        wide=wide,
    )


def abort_operation() -> RecordAccessControlPoint:
    """Abort Operation (Null operator, no operand)."""
    return RecordAccessControlPoint(RacpOpCode.ABORT_OPERATION)
