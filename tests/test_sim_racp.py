"""The simulator's RACP request parser, record selection and responses.

Op codes, operators, filter type and response codes: Bluetooth SIG Glucose Service v1.0 §3.7
(the RACP the Blood Pressure Service v1.1 reuses) and docs/standards.md.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.racp import (
    OpCode,
    Operator,
    Request,
    RequestError,
    ResponseCode,
    number_of_records_response,
    parse_request,
    response_code,
    select,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0101", Request(OpCode.REPORT_STORED_RECORDS, Operator.ALL)),
        ("0401", Request(OpCode.REPORT_NUMBER_OF_RECORDS, Operator.ALL)),
        ("0201", Request(OpCode.DELETE_STORED_RECORDS, Operator.ALL)),
        ("0300", Request(OpCode.ABORT_OPERATION, Operator.NULL)),
        ("0105", Request(OpCode.REPORT_STORED_RECORDS, Operator.FIRST)),
        ("0106", Request(OpCode.REPORT_STORED_RECORDS, Operator.LAST)),
        ("0103010500", Request(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_OR_EQUAL, low=5)),
        ("0403010500", Request(OpCode.REPORT_NUMBER_OF_RECORDS, Operator.GREATER_OR_EQUAL, low=5)),
        ("0102010700", Request(OpCode.REPORT_STORED_RECORDS, Operator.LESS_OR_EQUAL, high=7)),
        (
            "01040102000400",
            Request(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE, low=2, high=4),
        ),
    ],
)
def test_valid_requests(raw: str, expected: Request) -> None:
    assert parse_request(bytes.fromhex(raw)) == expected


T1 = dt.datetime(2024, 2, 3, 1, 2, 3)  # noqa: DTZ001 - device-local time
T2 = dt.datetime(2024, 2, 3, 5, 0, 0)  # noqa: DTZ001


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "010302E80702030102 03",
            Request(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_OR_EQUAL, time_low=T1),
        ),
        (
            "040202E80702030500 00",
            Request(OpCode.REPORT_NUMBER_OF_RECORDS, Operator.LESS_OR_EQUAL, time_high=T2),
        ),
        (
            "010402E80702030102 03E80702030500 00",
            Request(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE, time_low=T1, time_high=T2),
        ),
    ],
)
def test_user_facing_time_requests(raw: str, expected: Request) -> None:
    """Filter type 0x02 (Glucose Service §3.7.1, reused by BLS): a 7-byte Date Time per bound."""
    assert parse_request(bytes.fromhex(raw.replace(" ", ""))) == expected


def test_select_by_time() -> None:
    times = [T1 - dt.timedelta(hours=1), T1, T2]
    request = Request(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_OR_EQUAL, time_low=T1)
    assert select([0, 1, 2], request, times) == [1, 2]
    with pytest.raises(ValueError, match="needs the records' times"):
        select([0, 1, 2], request)


@pytest.mark.parametrize(
    ("raw", "op_code", "code"),
    [
        ("", 0, ResponseCode.OP_CODE_NOT_SUPPORTED),
        ("0701", 7, ResponseCode.OP_CODE_NOT_SUPPORTED),
        ("0501", 5, ResponseCode.OP_CODE_NOT_SUPPORTED),  # a response op code, not a request
        ("01", 1, ResponseCode.INVALID_OPERATOR),
        ("0100", 1, ResponseCode.INVALID_OPERATOR),
        ("0107", 1, ResponseCode.INVALID_OPERATOR),
        ("0301", 3, ResponseCode.INVALID_OPERATOR),
        ("030000", 3, ResponseCode.INVALID_OPERAND),
        ("010101", 1, ResponseCode.INVALID_OPERAND),
        ("010301", 1, ResponseCode.INVALID_OPERAND),
        ("0103030500", 1, ResponseCode.OPERAND_NOT_SUPPORTED),  # filter 3: not defined
        ("0103020500", 1, ResponseCode.INVALID_OPERAND),  # filter 2 needs a 7-byte Date Time
        ("010302E807020301020300", 1, ResponseCode.INVALID_OPERAND),  # 2024-02-03: 8 bytes
        ("010302E8070230010203", 1, ResponseCode.INVALID_OPERAND),  # 30 February
        ("01040104000200", 1, ResponseCode.INVALID_OPERAND),  # range upside down
    ],
)
def test_invalid_requests(raw: str, op_code: int, code: ResponseCode) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(bytes.fromhex(raw))
    assert (info.value.op_code, info.value.code) == (op_code, code)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.ALL), [3, 4, 5, 9]),
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.FIRST), [3]),
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.LAST), [9]),
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_OR_EQUAL, low=5), [5, 9]),
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.LESS_OR_EQUAL, high=4), [3, 4]),
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE, low=4, high=8), [4, 5]),
        (Request(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_OR_EQUAL, low=10), []),
    ],
)
def test_select(request_: Request, expected: list[int]) -> None:
    assert select([3, 4, 5, 9], request_) == expected


def test_responses() -> None:
    assert number_of_records_response(3) == bytes.fromhex("05000300")
    assert response_code(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS) == bytes.fromhex(
        "06000101"
    )
    assert response_code(OpCode.REPORT_STORED_RECORDS, ResponseCode.NO_RECORDS_FOUND) == (
        bytes.fromhex("06000106")
    )


@settings(derandomize=True, max_examples=300)
@given(st.binary(max_size=8))
def test_any_bytes_give_a_request_or_a_response_code(raw: bytes) -> None:
    outcome: Request | ResponseCode
    try:
        outcome = parse_request(raw)
    except RequestError as exc:
        outcome = exc.code
    if isinstance(outcome, Request):
        assert outcome.low <= outcome.high
    else:
        assert outcome in ResponseCode
