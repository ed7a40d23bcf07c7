"""Format extraction (gateway.rag.extract): Markdown and HTML heading paths, plain text, decoding,
and hostile input raising only SourceError. PDF: tests/test_rag_pdf.py. The corpus in
tests/data/rag/ was written for these tests."""

from __future__ import annotations

import codecs
from pathlib import Path, PurePath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rag.errors import SourceError
from gateway.rag.extract import (
    DocumentKind,
    Extracted,
    Section,
    decode_text,
    extract,
    kind_of,
    tidy,
)

CORPUS = Path(__file__).parent / "data" / "rag"

# -- kinds and decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.md", DocumentKind.MARKDOWN),
        ("A.MARKDOWN", DocumentKind.MARKDOWN),
        ("b.html", DocumentKind.HTML),
        ("b.htm", DocumentKind.HTML),
        ("c.txt", DocumentKind.TEXT),
        ("d.PDF", DocumentKind.PDF),
        ("e.docx", None),
        ("README", None),
    ],
)
def test_the_suffix_decides_the_kind(name: str, kind: DocumentKind | None) -> None:
    assert kind_of(PurePath(name)) is kind


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ("38.0 °C\r\nnext\rlast".encode(), "38.0 °C\nnext\nlast"),
        (codecs.BOM_UTF8 + "SpO₂ 94 %".encode(), "SpO₂ 94 %"),
        (codecs.BOM_UTF16_LE + "38 °C".encode("utf-16-le"), "38 °C"),
        (codecs.BOM_UTF16_BE + "38 °C".encode("utf-16-be"), "38 °C"),
        ("38 °C".encode("cp1252"), "38 °C"),  # not UTF-8: Windows-1252
    ],
)
def test_text_is_decoded_with_newlines_normalized(data: bytes, text: str) -> None:
    assert decode_text(data, "x.txt") == text


def test_binary_data_is_not_text() -> None:
    with pytest.raises(SourceError) as caught:
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00", "image.txt")
    assert str(caught.value) == "image.txt: binary data where text was expected"


def test_tidy_collapses_spaces_and_blank_lines() -> None:
    assert tidy("  a \t b  \n\n\n\n c\u00a0d \n") == "a b\n\nc d"


# -- plain text ------------------------------------------------------------------------------------


def test_plain_text_is_one_section_titled_by_its_first_line() -> None:
    data = (CORPUS / "blood-pressure.txt").read_bytes()
    extracted = extract(DocumentKind.TEXT, data, "blood-pressure.txt")
    assert extracted == Extracted(
        DocumentKind.TEXT, "Blood pressure on the ward", (Section(tidy(data.decode())),)
    )


def test_plain_text_without_a_title_line_is_titled_by_the_file_name() -> None:
    extracted = extract(DocumentKind.TEXT, b"A long first paragraph\nthat wraps.", "notes.txt")
    assert extracted == Extracted(
        DocumentKind.TEXT, "notes", (Section("A long first paragraph\nthat wraps."),)
    )


def test_an_empty_text_file_is_refused() -> None:
    with pytest.raises(SourceError) as caught:
        extract(DocumentKind.TEXT, b" \n\n\t\n", "empty.txt")
    assert str(caught.value) == "empty.txt: no text found in this text document"


# -- Markdown --------------------------------------------------------------------------------------


def test_markdown_sections_carry_their_heading_path() -> None:
    extracted = extract(DocumentKind.MARKDOWN, (CORPUS / "fever.md").read_bytes(), "fever.md")
    assert extracted.title == "Fever in adults"
    assert [section.headings for section in extracted.sections] == [
        ("Fever in adults",),
        ("Fever in adults", "Thresholds"),
        ("Fever in adults", "When to escalate"),
        ("Fever in adults", "When to escalate", "Neutropenic patients"),
        ("Fever in adults", "Antipyretics"),
    ]
    assert extracted.sections[4] == Section(
        "Paracetamol 1 g by mouth every six hours, at most 4 g in 24 hours, relieves discomfort. "
        "Lowering\nthe number is not a goal in itself. Record the temperature before each dose.",
        None,
        ("Fever in adults", "Antipyretics"),
    )


def test_markdown_heading_levels_close_deeper_ones_and_setext_headings_count() -> None:
    text = (
        "Intro before any heading.\n\n"
        "Guide\n=====\n\nfirst\n\n"
        "### Deep *emphasis* and `code`\n\nsecond\n\n"
        "Part two\n--------\n\nthird\n\n"
        "```\n# not a heading inside a code fence\n```\n\n"
        "> # nor inside a quote\n"
    )
    extracted = extract(DocumentKind.MARKDOWN, text.encode(), "guide.md")
    assert extracted == Extracted(
        DocumentKind.MARKDOWN,
        "Guide",
        (
            Section("Intro before any heading.", None, ()),
            Section("first", None, ("Guide",)),
            Section("second", None, ("Guide", "Deep emphasis and code")),
            Section(
                "third\n\n```\n# not a heading inside a code fence\n```\n\n> # nor inside a quote",
                None,
                ("Guide", "Part two"),
            ),
        ),
    )


def test_markdown_without_h1_is_titled_by_the_file_name() -> None:
    extracted = extract(DocumentKind.MARKDOWN, b"## Only h2\n\ntext", "ward-notes.md")
    assert extracted == Extracted(
        DocumentKind.MARKDOWN, "ward-notes", (Section("text", None, ("Only h2",)),)
    )


# -- HTML ------------------------------------------------------------------------------------------


def test_html_sections_carry_their_heading_path_and_skip_scripts_styles_and_menus() -> None:
    data = (CORPUS / "oxygen.html").read_bytes()
    extracted = extract(DocumentKind.HTML, data, "oxygen.html")
    assert extracted == Extracted(
        DocumentKind.HTML,
        "Oxygen saturation targets",
        (
            Section(
                "How to prescribe and titrate supplemental oxygen for adults on the ward. "
                "Written for the Bedside Gateway test corpus; not clinical advice.",
                None,
                ("Oxygen therapy",),
            ),
            Section(
                "For most acutely ill adults aim for an oxygen saturation (SpO2) of 94–98 %.\n\n"
                "For patients at risk of hypercapnic respiratory failure, such as people with "
                "chronic obstructive pulmonary disease (COPD), severe obesity or neuromuscular "
                "disease, aim for 88–92 % instead.\n\n"
                "- Start with nasal cannulae at 2–4 L/min.\n"
                "- Use a reservoir mask at 15 L/min in critical illness.",
                None,
                ("Oxygen therapy", "Target ranges"),
            ),
            Section(
                "A pulse oximeter estimates arterial saturation from red and infrared light "
                "absorbed by the finger or ear lobe. Nail polish, motion and cold hands make the "
                "reading unreliable.",
                None,
                ("Oxygen therapy", "Measuring SpO2"),
            ),
            Section(
                "When the perfusion index is low the plethysmogram flattens and the displayed "
                "value can lag or jump; warm the hand, try the ear lobe, and check an arterial "
                "blood gas if in doubt.",
                None,
                ("Oxygen therapy", "Measuring SpO2", "Low perfusion"),
            ),
        ),
    )


def test_html_without_title_uses_the_first_h1_and_keeps_pre_formatting() -> None:
    html = (
        b"<h2>Before</h2><p>a<br>b</p><h1>Main</h1><pre>x  = 1\n  y</pre>"
        b"<table><tr><td>HR</td><td>85</td></tr></table><h2></h2><p>c &amp; d</p>"
    )
    extracted = extract(DocumentKind.HTML, html, "page.html")
    assert extracted == Extracted(
        DocumentKind.HTML,
        "Main",
        (
            Section("a\nb", None, ("Before",)),
            Section("x = 1\ny\n\nHR 85\n\nc & d", None, ("Main",)),
        ),
    )


def test_html_without_text_is_refused() -> None:
    with pytest.raises(SourceError) as caught:
        extract(DocumentKind.HTML, b"<html><script>x()</script></html>", "blank.html")
    assert str(caught.value) == "blank.html: no text found in this html document"


# -- hostile input ---------------------------------------------------------------------------------


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([DocumentKind.MARKDOWN, DocumentKind.HTML, DocumentKind.TEXT]),
    data=st.binary(max_size=600),
)
def test_random_bytes_give_sections_or_source_error(kind: DocumentKind, data: bytes) -> None:
    try:
        extracted = extract(kind, data, "fuzz")
    except SourceError:
        return
    assert extracted.sections
    assert all(section.text == tidy(section.text) for section in extracted.sections)


MARKUP = st.sampled_from(
    [
        "<h1>", "</h1>", "<h3>", "</h3>", "<p>", "</p>", "<script>", "</script>", "<pre>",
        "</pre>", "<![CDATA[", "<!--", "-->", "<!", "<?", "&#", "&amp;", "<title>", "</title>",
        "# ", "## ", "\n", "===\n", "```\n", "> ", "- ", "text", " ", "\u00a0", "<br/>",
    ]
)  # fmt: skip


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([DocumentKind.MARKDOWN, DocumentKind.HTML]),
    parts=st.lists(MARKUP, max_size=40),
)
def test_markup_soup_gives_sections_or_source_error(kind: DocumentKind, parts: list[str]) -> None:
    try:
        extracted = extract(kind, "".join(parts).encode(), "soup")
    except SourceError:
        return
    assert all(section.text.strip() for section in extracted.sections)
    assert all(all(heading for heading in section.headings) for section in extracted.sections)
