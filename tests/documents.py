"""Documents written byte by byte for the retrieval tests.

``make_pdf`` writes a minimal PDF 1.4 file as ISO 32000-1 lays it out: header (§7.5.2), indirect
objects, a cross-reference table with 20-byte entries (§7.5.4) and a trailer (§7.5.5); text is
drawn with the standard Type 1 font Helvetica (§9.6.2.2) by BT/Tf/Td/TL/Tj/T*/ET operators (§9.4).
"""

from __future__ import annotations

from collections.abc import Sequence

LINE_SPACING = 14  # points between text lines
LEFT, TOP = 72, 740  # first baseline, points from the lower-left corner of a US Letter page


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def make_pdf(pages: Sequence[Sequence[str]], title: str | None = None) -> bytes:
    """A PDF with one page per entry of ``pages``, each line of text on its own baseline."""
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in once the page numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Title " + _pdf_string(title) + b" >>" if title is not None else b"<< >>",
    ]
    kids = []
    for lines in pages:
        body = b"BT /F1 11 Tf %d %d Td %d TL " % (LEFT, TOP, LINE_SPACING)
        body += b" ".join(_pdf_string(line) + b" Tj T*" for line in lines) + b" ET"
        objects.append(b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream")
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content
        )
        kids.append(len(objects))
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    objects[1] = b"<< /Type /Pages /Kids [" + refs + b"] /Count %d >>" % len(kids)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


SEPSIS_PAGES = (
    (
        "Sepsis screening on the ward",
        "Written for the Bedside Gateway test corpus; not clinical advice.",
        "Screen every adult with a suspected infection. Two or more of: respiratory rate",
        "of 22 /min or more, altered mental state, systolic blood pressure of 100 mmHg or",
        "less (the qSOFA criteria) mean a high risk of a poor outcome.",
    ),
    (
        "Lactate",
        "Measure serum lactate in every patient who screens positive. A lactate above",
        "2 mmol/L shows tissue hypoperfusion; a lactate of 4 mmol/L or more calls for an",
        "intravenous fluid bolus of 30 mL/kg and senior review within one hour.",
    ),
    (
        "Documentation",
        "Record the time of screening, the first antibiotic dose and every repeat",
        "lactate in the patient's chart.",
    ),
)


def sepsis_pdf() -> bytes:
    """The three pages of SEPSIS_PAGES, titled "Sepsis screening" in the document information."""
    return make_pdf(SEPSIS_PAGES, title="Sepsis screening")
