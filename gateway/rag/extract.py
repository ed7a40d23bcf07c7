"""Text out of documents, with what a citation needs. Pure: bytes in, sections out, no file I/O.

The format follows the file suffix (:data:`SUFFIXES`). Markdown and HTML keep the heading path of
every section (``("Fever in adults", "Thresholds")``); PDF keeps 1-based page numbers; plain text
is a single section. Every extractor raises only :class:`SourceError` however broken its input:
documents come from wherever a user found them.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import PurePath
from typing import TYPE_CHECKING, Final

from gateway.rag.errors import SourceError, one_line

if TYPE_CHECKING:
    from markdown_it.token import Token


class DocumentKind(StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"
    TEXT = "text"
    PDF = "pdf"


SUFFIXES: Final[Mapping[str, DocumentKind]] = {
    ".md": DocumentKind.MARKDOWN,
    ".markdown": DocumentKind.MARKDOWN,
    ".html": DocumentKind.HTML,
    ".htm": DocumentKind.HTML,
    ".xhtml": DocumentKind.HTML,
    ".txt": DocumentKind.TEXT,
    ".text": DocumentKind.TEXT,
    ".pdf": DocumentKind.PDF,
}


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text with one citation place: a page (PDF) or a heading path (Markdown, HTML)."""

    text: str
    page: int | None = None
    headings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Extracted:
    """A document's title and its sections in reading order (only sections with text)."""

    kind: DocumentKind
    title: str
    sections: tuple[Section, ...]


def kind_of(path: PurePath) -> DocumentKind | None:
    """The document kind of a file name, or None when the suffix is not supported."""
    return SUFFIXES.get(path.suffix.lower())


def supported_suffixes() -> str:
    return ", ".join(sorted(SUFFIXES))


def extract(kind: DocumentKind, data: bytes, name: str) -> Extracted:
    """Sections of ``data`` read as ``kind``; ``name`` (the file name) is used in messages and as
    the title when the document has none. Raises :class:`SourceError` only."""
    fallback_title = PurePath(name).stem or name
    extracted = _EXTRACTORS[kind](data, name, fallback_title)
    if not extracted.sections:
        hint = " (a scanned PDF needs OCR first)" if kind is DocumentKind.PDF else ""
        raise SourceError(name, f"no text found in this {kind.value} document{hint}")
    return extracted


# -- text decoding ---------------------------------------------------------------------------------

_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_BLANK_RUNS: Final = re.compile(r"\n{3,}")
_SPACE_RUNS: Final = re.compile(r"[ \t\f\v\u00a0]+")
_FALLBACK_ENCODING: Final = "cp1252"  # what "plain text" from Windows tools usually is


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (BOM optional), UTF-16 with a BOM, else Windows-1252; newlines normalized to \\n."""
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise SourceError(name, f"broken UTF-16 text at byte {exc.start}") from exc
    elif b"\x00" in data:
        raise SourceError(name, "binary data where text was expected")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode(_FALLBACK_ENCODING, errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def tidy(text: str) -> str:
    """Spaces collapsed within lines, lines stripped, at most one blank line in a row."""
    lines = (_SPACE_RUNS.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _sections(parts: list[Section]) -> tuple[Section, ...]:
    """Tidied sections with text; neighbours with the same place (an empty heading) joined."""
    out: list[Section] = []
    for part in parts:
        text = tidy(part.text)
        if not text:
            continue
        if out and (out[-1].page, out[-1].headings) == (part.page, part.headings):
            text = f"{out[-1].text}\n\n{text}"
            out.pop()
        out.append(Section(text, part.page, part.headings))
    return tuple(out)


def _push_heading(stack: list[tuple[int, str]], level: int, title: str) -> tuple[str, ...]:
    """Heading path after a level-``level`` heading: deeper or equal levels are closed."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, title))
    return tuple(text for _, text in stack)


# -- plain text ------------------------------------------------------------------------------------


_TEXT_TITLE_MAX: Final = 100  # characters; a longer first line is a paragraph, not a title


def _text_title(text: str) -> str | None:
    """The first line when it stands alone (a blank line follows) and is short: a title."""
    head, blank, _ = text.lstrip("\n").partition("\n\n")
    line = head.strip()
    if blank and line and "\n" not in line and len(line) <= _TEXT_TITLE_MAX:
        return line
    return None


def _extract_text(data: bytes, name: str, fallback_title: str) -> Extracted:
    text = tidy(decode_text(data, name))
    title = _text_title(text) or fallback_title
    return Extracted(DocumentKind.TEXT, title, _sections([Section(text)]))


# -- Markdown --------------------------------------------------------------------------------------

_INLINE_TEXT: Final = frozenset({"text", "code_inline"})
_INLINE_SPACE: Final = frozenset({"softbreak", "hardbreak"})


def _plain(inline: Token) -> str:
    """The text of an inline token: emphasis and links dropped, code kept, one-spaced."""
    parts = []
    for child in inline.children or []:
        if child.type in _INLINE_TEXT:
            parts.append(child.content)
        elif child.type in _INLINE_SPACE:
            parts.append(" ")
    return " ".join("".join(parts).split())


def _extract_markdown(data: bytes, name: str, fallback_title: str) -> Extracted:
    from markdown_it import MarkdownIt

    text = decode_text(data, name)
    try:
        tokens = MarkdownIt("commonmark").parse(text)
    except Exception as exc:  # a third-party parser on user input: any failure
        raise SourceError(name, f"not parseable as Markdown ({one_line(exc)})") from exc
    lines = text.split("\n")
    parts: list[Section] = []
    stack: list[tuple[int, str]] = []
    path: tuple[str, ...] = ()
    body_from = 0
    title: str | None = None
    for index, token in enumerate(tokens):
        # Top-level ATX and setext headings only (a "#" inside a list or quote is content).
        if token.type != "heading_open" or token.level != 0 or token.map is None:
            continue
        start, end = token.map
        heading = _plain(tokens[index + 1]) if index + 1 < len(tokens) else ""
        parts.append(Section("\n".join(lines[body_from:start]), None, path))
        body_from = end
        if not heading:
            continue
        level = int(token.tag[1:])
        path = _push_heading(stack, level, heading)
        if title is None and level == 1:
            title = heading
    parts.append(Section("\n".join(lines[body_from:]), None, path))
    return Extracted(DocumentKind.MARKDOWN, title or fallback_title, _sections(parts))


# -- HTML ------------------------------------------------------------------------------------------

_HEADING_TAGS: Final[Mapping[str, int]] = {f"h{level}": level for level in range(1, 7)}
# Not "head": its end tag may be omitted, and its only text worth keeping is <title>. "nav" is a
# site's menu: link labels, no content, and noise that matches every query about the site.
_SKIPPED_TAGS: Final = frozenset({"script", "style", "noscript", "template", "svg", "nav"})
_PARAGRAPH_TAGS: Final = frozenset(
    {
        "p", "div", "section", "article", "main", "aside", "header", "footer",
        "blockquote", "pre", "table", "ul", "ol", "dl", "figure", "figcaption", "form",
        "fieldset", "details", "summary", "address", "hr",
    }
)  # fmt: skip
_LINE_TAGS: Final = frozenset({"br", "li", "tr", "dt", "dd", "caption", "option"})
_CELL_TAGS: Final = frozenset({"td", "th"})
_WHITESPACE_RUNS: Final = re.compile(r"\s+")


class _HtmlSections(HTMLParser):
    """Collects text per heading path; ``<title>`` (or the first ``<h1>``) names the document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[Section] = []
        self.title: str | None = None
        self.first_h1: str | None = None
        self._stack: list[tuple[int, str]] = []
        self._path: tuple[str, ...] = ()
        self._body: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._in_title = False
        self._title_text: list[str] = []
        self._heading_level: int | None = None
        self._heading_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
            return
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
            return
        if tag == "pre":
            self._pre_depth += 1
        level = _HEADING_TAGS.get(tag)
        if level is not None:
            self._finish_heading()
            self._flush()
            self._heading_level = level
            self._heading_text = []
        elif tag in _PARAGRAPH_TAGS:
            self._emit("\n\n")
        elif tag in _LINE_TAGS:
            self._emit("\n- " if tag == "li" else "\n")
        elif tag in _CELL_TAGS:
            self._emit(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _LINE_TAGS or tag in _PARAGRAPH_TAGS:
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            if self.title is None:
                self.title = " ".join("".join(self._title_text).split()) or None
            return
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _HEADING_TAGS:
            self._finish_heading()
        elif tag in _PARAGRAPH_TAGS:
            self._emit("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_text.append(data)
        elif self._pre_depth:
            self._emit(data)
        else:  # source line breaks are spaces in HTML; only elements break lines
            self._emit(_WHITESPACE_RUNS.sub(" ", data))

    def _emit(self, text: str) -> None:
        if self._skip_depth or self._in_title:
            return
        if self._heading_level is not None:
            self._heading_text.append(text)
        else:
            self._body.append(text)

    def _flush(self) -> None:
        self.parts.append(Section("".join(self._body), None, self._path))
        self._body = []

    def _finish_heading(self) -> None:
        level = self._heading_level
        if level is None:
            return
        self._heading_level = None
        heading = " ".join("".join(self._heading_text).split())
        if heading:
            self._path = _push_heading(self._stack, level, heading)
            if level == 1 and self.first_h1 is None:
                self.first_h1 = heading

    def finish(self) -> None:
        self.close()
        self._finish_heading()
        self._flush()


def _extract_html(data: bytes, name: str, fallback_title: str) -> Extracted:
    text = decode_text(data, name)
    parser = _HtmlSections()
    try:
        parser.feed(text)
        parser.finish()
    except Exception as exc:  # html.parser asserts on some malformed markup
        raise SourceError(name, f"not parseable as HTML ({one_line(exc)})") from exc
    title = parser.title or parser.first_h1 or fallback_title
    return Extracted(DocumentKind.HTML, title, _sections(parser.parts))


# -- PDF -------------------------------------------------------------------------------------------

_PDF_MAGIC: Final = b"%PDF-"  # ISO 32000-1 §7.5.2: the file header line
_PDF_HEADER_WINDOW: Final = 1024  # readers accept junk before the header within the first 1 KiB


def _extract_pdf(data: bytes, name: str, fallback_title: str) -> Extracted:
    from pypdf import PasswordType, PdfReader

    if _PDF_MAGIC not in data[:_PDF_HEADER_WINDOW]:
        raise SourceError(name, "not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        locked = reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED
        pages = (
            []
            if locked
            else [
                Section(page.extract_text() or "", number, ())
                for number, page in enumerate(reader.pages, start=1)
            ]
        )
        metadata = None if locked else reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception as exc:  # pypdf raises many kinds on corrupt files
        raise SourceError(name, f"not a readable PDF ({one_line(exc)})") from exc
    if locked:
        raise SourceError(name, "the PDF is encrypted with a password; decrypt it first")
    title = " ".join(str(title).split()) if title else ""
    return Extracted(DocumentKind.PDF, title or fallback_title, _sections(pages))


_EXTRACTORS: Final[Mapping[DocumentKind, Callable[[bytes, str, str], Extracted]]] = {
    DocumentKind.MARKDOWN: _extract_markdown,
    DocumentKind.HTML: _extract_html,
    DocumentKind.TEXT: _extract_text,
    DocumentKind.PDF: _extract_pdf,
}
