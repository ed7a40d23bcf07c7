"""The simulator's RACP request parser, record selection and responses.

Op codes, operators, filter type and response codes: Bluetooth SIG Glucose Service v1.0 §3.7
(the RACP the Blood Pressure Service v1.1 reuses) and DESIGN.md §4.
"""

from __future__ import annotations

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
        ("0103020500", 1, ResponseCode.OPERAND_NOT_SUPPORTED),  # filter 2: user facing time
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
