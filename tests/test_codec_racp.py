"""Record Access Control Point 0x2A52: requests, responses, both sequence-number widths."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecodeError
from gateway.ieee11073 import decode
from gateway.ieee11073.datetime import DateTime
from gateway.ieee11073.racp import (
    FILTER_VALUE_COUNT,
    RECORD_REQUESTS,
    FilterType,
    RacpOpCode,
    RacpOperator,
    RacpResponseCode,
    RecordAccessControlPoint,
    RecordFilter,
    abort_operation,
    report_all_records,
    report_number_of_records,
    report_records_from,
)

OP = RacpOpCode
OPR = RacpOperator
RC = RacpResponseCode
SEQ = FilterType.SEQUENCE_NUMBER
TIME = FilterType.USER_FACING_TIME


def _response(request: RacpOpCode | int, code: RacpResponseCode | int) -> RecordAccessControlPoint:
    return RecordAccessControlPoint(OP.RESPONSE_CODE, request_op_code=request, response_code=code)


VECTORS = [
    # Nordic Android-BLE-Common-Library RecordAccessControlPointDataCallbackTest.java:
    (
        "06000101",
        _response(OP.REPORT_STORED_RECORDS, RC.SUCCESS),
    ),  # onRecordAccessOperationCompleted
    ("06000C02", _response(12, RC.OP_CODE_NOT_SUPPORTED)),  # op code 12 is unknown: kept as 12
    ("06000103", _response(OP.REPORT_STORED_RECORDS, RC.INVALID_OPERATOR)),
    ("06000204", _response(OP.DELETE_STORED_RECORDS, RC.OPERATOR_NOT_SUPPORTED)),
    ("06000105", _response(OP.REPORT_STORED_RECORDS, RC.INVALID_OPERAND)),
    ("06000106", _response(OP.REPORT_STORED_RECORDS, RC.NO_RECORDS_FOUND)),
    ("06000307", _response(OP.ABORT_OPERATION, RC.ABORT_UNSUCCESSFUL)),
    ("06000208", _response(OP.DELETE_STORED_RECORDS, RC.PROCEDURE_NOT_COMPLETED)),
    ("06000209", _response(OP.DELETE_STORED_RECORDS, RC.OPERAND_NOT_SUPPORTED)),
    ("0600010A", _response(OP.REPORT_STORED_RECORDS, RC.SERVER_BUSY)),  # "unknownErrorCode" 10
    ("06000120", _response(OP.REPORT_STORED_RECORDS, 0x20)),  # unknown response code kept
    # Same file, onNumberOfRecordsReceived_uint16 ({5, 0, 2, 1} → 258) and _uint32.
    (
        "05000201",
        RecordAccessControlPoint(OP.NUMBER_OF_STORED_RECORDS_RESPONSE, number_of_records=258),
    ),
    (
        "050004030201",
        RecordAccessControlPoint(
            OP.NUMBER_OF_STORED_RECORDS_RESPONSE, number_of_records=0x01020304, wide=True
        ),
    ),
    # Same file's "tooShort" {1, 1} and "wrongOpCode" {1, 3, 1, 2, 0} are invalid *responses*;
    # as requests they are Report Stored Records (all) and (≥ sequence number 2).
    ("0101", RecordAccessControlPoint(OP.REPORT_STORED_RECORDS, OPR.ALL_RECORDS)),
    (
        "0103010200",
        RecordAccessControlPoint(
            OP.REPORT_STORED_RECORDS, OPR.GREATER_THAN_OR_EQUAL, RecordFilter(SEQ, (2,))
        ),
    ),
    # RonanB96/bluetooth-sig-python tests/gatt/characteristics/test_record_access_control_point.py:
    ("0300", RecordAccessControlPoint(OP.ABORT_OPERATION)),
    # philips-labs BLE-GHS-Client-Example GhsRacpHandler.kt (GHSS): u32 record number filters,
    # Combined Report 0x07; BLE-GHS-Server-Simulator GhsRacpHandler.kt: responses 0x05/0x08
    # with a u32 count.
    (
        "04030105000000",
        RecordAccessControlPoint(
            OP.REPORT_NUMBER_OF_STORED_RECORDS,
            OPR.GREATER_THAN_OR_EQUAL,
            RecordFilter(SEQ, (5,)),
            wide=True,
        ),
    ),
    (
        "070201FFFFFFFF",
        RecordAccessControlPoint(
            OP.COMBINED_REPORT, OPR.LESS_THAN_OR_EQUAL, RecordFilter(SEQ, (0xFFFFFFFF,)), wide=True
        ),
    ),
    ("0705", RecordAccessControlPoint(OP.COMBINED_REPORT, OPR.FIRST_RECORD)),
    (
        "080003000000",
        RecordAccessControlPoint(OP.COMBINED_REPORT_RESPONSE, number_of_records=3, wide=True),
    ),
    # Glucose Service §3.3.2 / GSS RACP: range of sequence numbers 10..20, and ≥ a user facing
    # time (Date Time 2024-05-01 12:00:00).
    (
        "0204010A001400",
        RecordAccessControlPoint(
            OP.DELETE_STORED_RECORDS, OPR.WITHIN_RANGE, RecordFilter(SEQ, (10, 20))
        ),
    ),
    (
        "010302E80705010C0000",
        RecordAccessControlPoint(
            OP.REPORT_STORED_RECORDS,
            OPR.GREATER_THAN_OR_EQUAL,
            RecordFilter(TIME, (DateTime(2024, 5, 1, 12),)),
        ),
    ),
    (
        "010402E80705010C0000E80705010D0000",
        RecordAccessControlPoint(
            OP.REPORT_STORED_RECORDS,
            OPR.WITHIN_RANGE,
            RecordFilter(TIME, (DateTime(2024, 5, 1, 12), DateTime(2024, 5, 1, 13))),
        ),
    ),
    ("0406", RecordAccessControlPoint(OP.REPORT_NUMBER_OF_STORED_RECORDS, OPR.LAST_RECORD)),
]


@pytest.mark.parametrize(("hex_value", "expected"), VECTORS)
def test_vectors(hex_value: str, expected: RecordAccessControlPoint) -> None:
    data = bytes.fromhex(hex_value)
    assert decode(0x2A52, data) == expected
    assert bytes(expected) == data


def test_helpers_build_the_requests_the_session_sends() -> None:
    assert bytes(report_all_records()) == bytes.fromhex("0101")
    assert bytes(report_records_from(7)) == bytes.fromhex("0103010700")
    assert bytes(report_records_from(7, wide=True)) == bytes.fromhex("01030107000000")
    assert bytes(report_number_of_records()) == bytes.fromhex("0401")
    assert bytes(report_number_of_records(0x0102)) == bytes.fromhex("0403010201")
    assert bytes(abort_operation()) == bytes.fromhex("0300")
    assert not report_all_records().is_response
    assert _response(OP.REPORT_STORED_RECORDS, RC.SUCCESS).is_response


def _all_requests() -> list[RecordAccessControlPoint]:
    values = []
    for op in sorted(RECORD_REQUESTS):
        for operator, count in FILTER_VALUE_COUNT.items():
            if not count:
                values.append(RecordAccessControlPoint(op, operator))
                continue
            numbers = (3, 0xFFFF)[:count]
            times = (DateTime(2023, 1, 2, 3, 4, 5), DateTime(0, 0, 0))[:count]
            values.append(RecordAccessControlPoint(op, operator, RecordFilter(SEQ, numbers)))
            values.append(
                RecordAccessControlPoint(op, operator, RecordFilter(SEQ, numbers), wide=True)
            )
            values.append(RecordAccessControlPoint(op, operator, RecordFilter(TIME, times)))
    return values


@pytest.mark.parametrize("value", _all_requests(), ids=repr)
def test_round_trip_every_request_shape(value: RecordAccessControlPoint) -> None:
    assert RecordAccessControlPoint.from_bytes(bytes(value)) == value


@pytest.mark.parametrize(
    ("hex_value", "offset", "fragment"),
    [
        ("", 0, "1 byte(s) of op code"),
        ("01", 1, "1 byte(s) of operator"),
        ("0901", 0, "an op code 0x01-0x08, found 0x09"),
        ("0107", 1, "an operator 0x00-0x06, found 0x07"),
        ("0100", 2, "REPORT_STORED_RECORDS needs an operator other than NULL"),
        ("0103", 2, "1 byte(s) of filter type"),
        ("010303", 2, "filter type 0x01 or 0x02, found 0x03"),
        ("01030102", 3, "1 sequence number(s) of 2 bytes or record number(s) of 4 bytes"),
        ("010401020003", 3, "2 sequence number(s)"),
        ("010302E807", 3, "7 byte(s) of Date Time"),
        ("010101", 2, "end of value, found 1 extra byte(s)"),
        ("0301", 2, "ABORT_OPERATION takes the NULL operator"),
        ("030000", 2, "end of value"),
        # Nordic RecordAccessControlPointDataCallbackTest onNumberOfRecordsReceived_uint8 and
        # _unsupportedLength: GSS RACP's count is a uint16 (uint32 in GHSS); 1 or 3 bytes is wrong.
        ("050001", 2, "a 2- or 4-byte number of records, found 1"),
        ("0500030201", 2, "a 2- or 4-byte number of records, found 3"),
        # Nordic invalidOperator {6, 1, 1}: a response with an operator.
        ("060101", 2, "2 byte(s) of request op code and response code"),
        ("06010101", 2, "RESPONSE_CODE takes the NULL operator"),
        ("0800020000", 2, "4 byte(s) of number of records, found 3"),
        ("05010200", 2, "NUMBER_OF_STORED_RECORDS_RESPONSE takes the NULL operator"),
    ],
)
def test_malformed_values(hex_value: str, offset: int, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        RecordAccessControlPoint.from_bytes(bytes.fromhex(hex_value))
    assert info.value.offset == offset
    assert fragment in str(info.value)
    assert str(info.value).startswith("Record Access Control Point (0x2A52): at byte")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"op_code": OP.REPORT_STORED_RECORDS}, "needs an operator"),
        (
            {"op_code": OP.REPORT_STORED_RECORDS, "operator": OPR.GREATER_THAN_OR_EQUAL},
            "takes 1 filter value",
        ),
        (
            {
                "op_code": OP.REPORT_STORED_RECORDS,
                "operator": OPR.ALL_RECORDS,
                "filter": RecordFilter(SEQ, (1,)),
            },
            "takes 0 filter value",
        ),
        ({"op_code": OP.NUMBER_OF_STORED_RECORDS_RESPONSE}, "number_of_records belongs"),
        ({"op_code": OP.RESPONSE_CODE, "request_op_code": 1}, "belong to the Response Code"),
        ({"op_code": OP.ABORT_OPERATION, "response_code": 1}, "belong to the Response Code"),
        ({"op_code": OP.ABORT_OPERATION, "wide": True}, "wide applies"),
        (
            {"op_code": OP.COMBINED_REPORT_RESPONSE, "number_of_records": 1},
            "Combined Report Response count is always 32 bits",
        ),
        (
            {"op_code": OP.NUMBER_OF_STORED_RECORDS_RESPONSE, "number_of_records": 0x10000},
            "number of records 65536 outside 0..65535",
        ),
        (
            {
                "op_code": OP.REPORT_STORED_RECORDS,
                "operator": OPR.LESS_THAN_OR_EQUAL,
                "filter": RecordFilter(TIME, (DateTime(2024, 1, 1),)),
                "wide": True,
            },
            "wide applies",
        ),
    ],
)
def test_inconsistent_values_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecordAccessControlPoint(**kwargs)  # type: ignore[arg-type]


def test_record_filter_value_kinds() -> None:
    with pytest.raises(ValueError, match="integers"):
        RecordFilter(SEQ, (DateTime(2024, 1, 1),))
    with pytest.raises(ValueError, match="Date Time"):
        RecordFilter(TIME, (1,))
    with pytest.raises(ValueError, match="number of filter values"):
        RecordFilter(SEQ, (1, 2, 3))


@settings(derandomize=True, max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=20),
        # Bias towards valid op codes and operators so the operand parsers are reached.
        st.tuples(st.integers(1, 8), st.integers(0, 6), st.binary(max_size=16)).map(
            lambda t: bytes(t[:2]) + t[2]
        ),
    )
)
def test_fuzz(data: bytes) -> None:
    try:
        value = RecordAccessControlPoint.from_bytes(data)
    except DecodeError:
        return
    assert bytes(value) == data
