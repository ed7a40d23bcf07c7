"""PDF extraction (gateway.rag.extract) over PDFs written byte by byte (tests/documents.py), and
the writer itself.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.rag.errors import SourceError
from gateway.rag.extract import DocumentKind, Extracted, Section, extract
from tests.documents import SEPSIS_PAGES, make_pdf, sepsis_pdf


def test_pages_keep_their_numbers_and_the_info_title_names_the_document() -> None:
    extracted = extract(DocumentKind.PDF, sepsis_pdf(), "sepsis.pdf")
    assert extracted == Extracted(
        DocumentKind.PDF,
        "Sepsis screening",
        tuple(Section("\n".join(lines), page, ()) for page, lines in enumerate(SEPSIS_PAGES, 1)),
    )


def test_without_a_title_the_file_name_names_the_document() -> None:
    extracted = extract(DocumentKind.PDF, make_pdf([["Only page."]]), "notes-2024.pdf")
    assert extracted == Extracted(DocumentKind.PDF, "notes-2024", (Section("Only page.", 1),))


def test_blank_pages_are_left_out_and_others_keep_their_number() -> None:
    extracted = extract(DocumentKind.PDF, make_pdf([[], ["Second page."]]), "x.pdf")
    assert extracted.sections == (Section("Second page.", 2),)


def test_a_pdf_without_text_is_refused_with_advice() -> None:
    with pytest.raises(SourceError) as caught:
        extract(DocumentKind.PDF, make_pdf([[], []]), "scan.pdf")
    assert (
        str(caught.value)
        == "scan.pdf: no text found in this pdf document (a scanned PDF needs OCR first)"
    )


def test_a_file_that_is_not_a_pdf_is_refused() -> None:
    with pytest.raises(SourceError) as caught:
        extract(DocumentKind.PDF, b"<html>not a pdf</html>", "page.pdf")
    assert str(caught.value) == "page.pdf: not a PDF file (no %PDF- header)"


def test_a_truncated_pdf_is_refused() -> None:
    data = sepsis_pdf()
    with pytest.raises(SourceError) as caught:
        extract(DocumentKind.PDF, data[: len(data) // 3], "cut.pdf")
    assert caught.value.source == "cut.pdf"
    assert caught.value.problem.startswith("not a readable PDF")


@settings(
    derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.data())
def test_corrupted_pdfs_raise_only_source_error(data: st.DataObject) -> None:
    # Hostile input: random byte edits of a valid file, then extraction gives sections or a
    # SourceError, never another exception.
    blob = bytearray(sepsis_pdf())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(blob) // 2, len(blob)))
    try:
        extracted = extract(DocumentKind.PDF, bytes(blob[:cut]), "fuzz.pdf")
    except SourceError:
        return
    assert all(section.page is not None for section in extracted.sections)
