"""The PDF copy of an approved report, attached to the final DiagnosticReport as
``presentedForm`` (docs/architecture.md, "Drafts and their review").

One A4 page (more when the content needs), drawn with ReportLab: the patient and times, a table of
the vital signs, an ECG strip drawn from the waveform on paper-ECG grid (1 mm minor and 5 mm major
squares, 25 mm/s, 10 mm/mV), the conclusion, findings and medication decisions, the clinician's
name and signing-key thumbprint, and the AI label. Fonts are the Bitstream Vera
TrueType files ReportLab ships, embedded so that the text renders the same anywhere. The output is
deterministic for the same Bundle (ReportLab's invariant mode), so a copy can be compared.

ReportLab's open-source edition writes PDF 1.4 without the PDF/A declaration (XMP, output intent);
the copy is not claimed to be PDF/A.
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import reportlab
from reportlab.graphics.shapes import Drawing, Line, PolyLine
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from gateway.assistant.prompts import loinc_displays
from gateway.fhir.read import display_value
from gateway.fhir.review import report_entry, review_provenance
from gateway.fhir.transparency import ai_labels

CONTENT_TYPE: Final = "application/pdf"
FONT: Final = "BedsideVera"
FONT_BOLD: Final = "BedsideVera-Bold"
MM_PER_S: Final = 25.0  # paper speed of a standard ECG strip
MM_PER_MV: Final = 10.0  # gain of a standard ECG strip
STRIP_HEIGHT_MM: Final = 30.0
MINOR_MM: Final = 1.0
MAJOR_MM: Final = 5.0
GRID_MINOR: Final = colors.Color(1.0, 0.82, 0.82)
GRID_MAJOR: Final = colors.Color(0.95, 0.55, 0.55)
AI_NOTICE: Final = {
    "CLINAST_AIRPT": (
        "Drafted by an AI assistant; reviewed, edited where needed and asserted by the clinician "
        "named above (HL7 AI Transparency label CLINAST_AIRPT)."
    ),
    "AIAST": "Asserted by an AI assistant and not reviewed (label AIAST).",
}


def _fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    folder = Path(reportlab.__file__).parent / "fonts"
    pdfmetrics.registerFont(TTFont(FONT, str(folder / "Vera.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(folder / "VeraBd.ttf")))
    # the default of drawings too (ReportLab's own API for it), so no unembedded Helvetica
    pdfmetrics.registerFontFamily(  # type: ignore[call-arg]  # the stubs predate baseFontFor
        FONT, normal=FONT, bold=FONT_BOLD, baseFontFor="graphics"
    )


def _style(size: float, *, bold: bool = False, space: float = 2) -> ParagraphStyle:
    return ParagraphStyle(
        f"s{size}{bold}", fontName=FONT_BOLD if bold else FONT, fontSize=size,
        leading=size * 1.3, spaceAfter=space,
    )  # fmt: skip


def _escape(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _name(resource: Mapping[str, Any]) -> str:
    code = resource.get("code", {})
    if code.get("text"):
        return str(code["text"])
    for coding in code.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
        if coding.get("code") in loinc_displays():
            return loinc_displays()[coding["code"]]
    codings = code.get("coding", [{}])
    return str(codings[0].get("code", "?")) if codings else "?"


def _samples(sampled: Mapping[str, Any]) -> tuple[list[float], float] | None:
    """Millivolts and the sample period (ms) of a ``valueSampledData``; None when unusable."""
    try:
        origin = Decimal(str(sampled.get("origin", {}).get("value", 0)))
        factor = Decimal(str(sampled.get("factor", 1)))
        period = float(sampled["period"])
        raw = str(sampled.get("data", "")).split()
        values = [float(origin + factor * Decimal(x)) for x in raw if x not in ("E", "U", "L")]
    except (KeyError, ValueError, InvalidOperation):
        return None
    unit = str(sampled.get("origin", {}).get("code", "mV"))
    scale = {"mV": 1.0, "uV": 0.001, "V": 1000.0}.get(unit, 1.0)
    return ([v * scale for v in values], period) if values and period > 0 else None


def _grid_line(x: float, y: float, dx: float, dy: float, *, major: bool) -> Line:
    return Line(
        x, y, x + dx, y + dy,
        strokeColor=GRID_MAJOR if major else GRID_MINOR, strokeWidth=0.5 if major else 0.2,
    )  # fmt: skip


def ecg_drawing(sampled: Mapping[str, Any], width_mm: float) -> Drawing | None:
    """The strip on ECG paper: as many samples as fit ``width_mm`` at 25 mm/s, 10 mm/mV."""
    found = _samples(sampled)
    if found is None:
        return None
    values, period_ms = found
    height = STRIP_HEIGHT_MM
    drawing = Drawing(width_mm * mm, height * mm)
    every_major = round(MAJOR_MM / MINOR_MM)
    for i in range(round(width_mm / MINOR_MM) + 1):  # vertical lines, then horizontal ones
        drawing.add(_grid_line(i * MINOR_MM * mm, 0, 0, height * mm, major=i % every_major == 0))
    for i in range(round(height / MINOR_MM) + 1):
        drawing.add(_grid_line(0, i * MINOR_MM * mm, width_mm * mm, 0, major=i % every_major == 0))
    baseline = height / 2
    mean = sum(values) / len(values)
    points: list[float] = []
    for i, value in enumerate(values):
        t_mm = i * period_ms / 1000.0 * MM_PER_S
        if t_mm > width_mm:
            break
        y_mm = min(max(baseline + (value - mean) * MM_PER_MV, 0.0), height)
        points += [t_mm * mm, y_mm * mm]
    drawing.add(PolyLine(points, strokeColor=colors.black, strokeWidth=0.6))
    return drawing


def _vitals(bundle: Mapping[str, Any]) -> list[list[Any]]:
    cell = _style(9, space=0)
    rows: list[list[Any]] = [["Measurement", "Value", "Time"]]
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if resource.get("resourceType") != "Observation" or "valueSampledData" in resource:
            continue
        value = display_value(resource)
        if value is not None:
            rows.append(
                [
                    Paragraph(_escape(_name(resource)), cell),
                    Paragraph(_escape(value), cell),
                    Paragraph(_escape(resource.get("effectiveDateTime", "")), cell),
                ]
            )
    return rows


def render(
    bundle: Mapping[str, Any],
    *,
    kid: str | None,
    strips: Sequence[Mapping[str, Any]] = (),
    gateway_id: str = "",
) -> bytes:
    """The PDF of a decided (approved) report Bundle; see the module text."""
    _fonts()
    report = report_entry(bundle)["resource"]
    provenance = review_provenance(bundle)
    practitioners = {
        e["fullUrl"]: e["resource"] for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "Practitioner"
    }  # fmt: skip
    verifier = practitioners.get(provenance["agent"][0]["who"]["reference"], {})
    clinician = (verifier.get("name") or [{}])[0].get("text", "unknown")
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
        bottomMargin=15 * mm, title="Consultation report", author=str(clinician),
        subject=f"DiagnosticReport {report.get('status')}", creator=f"Bedside Gateway {gateway_id}",
        invariant=1, initialFontName=FONT,
    )  # fmt: skip
    body, small, heading = _style(10), _style(8), _style(12, bold=True, space=4)
    period = report.get("effectivePeriod", {})
    flow: list[Any] = [
        Paragraph("Consultation report", _style(16, bold=True, space=6)),
        Paragraph(
            f"Patient: {_escape(report.get('subject', {}).get('reference', 'not assigned'))}<br/>"
            f"Consultation: {_escape(period.get('start', '?'))} to "
            f"{_escape(period.get('end', '?'))}"
            f"<br/>Report status: {_escape(report.get('status'))}, issued "
            f"{_escape(report.get('issued', '?'))}",
            body,
        ),
        Spacer(1, 4 * mm),
        Paragraph("Vital signs", heading),
    ]
    rows = _vitals(bundle)
    if len(rows) > 1:
        table = Table(rows, colWidths=[70 * mm, 45 * mm, 65 * mm])
        table.setStyle(TableStyle([
            ("FONTNAME", (0, 0), (-1, -1), FONT), ("FONTNAME", (0, 0), (-1, 0), FONT_BOLD),
            ("FONTSIZE", (0, 0), (-1, -1), 9), ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.Color(0.95, 0.95, 0.95)]),
        ]))  # fmt: skip
        flow.append(table)
    else:
        flow.append(Paragraph("No measurements in this report.", body))
    for strip in strips:
        drawing = ecg_drawing(strip.get("valueSampledData", {}), 180.0)
        if drawing is not None:
            flow += [
                Spacer(1, 4 * mm),
                Paragraph(
                    f"ECG: {_escape(_name(strip))} at "
                    f"{_escape(strip.get('effectiveDateTime', '?'))} (25 mm/s, 10 mm/mV)",
                    small,
                ),
                drawing,
            ]
    flow += [
        Spacer(1, 4 * mm),
        Paragraph("Conclusion", heading),
        Paragraph(_escape(report.get("conclusion", "")), body),
    ]
    findings = [c.get("text", "") for c in report.get("conclusionCode", [])]
    if findings:
        flow += [Paragraph("Findings", heading)] + [
            Paragraph(f"• {_escape(f)}", body) for f in findings
        ]
    medications = [
        e["resource"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "MedicationRequest"
    ]
    if medications:
        flow.append(Paragraph("Medication decisions", heading))
        for request in medications:
            decision = "ordered" if request.get("status") == "active" else "not ordered"
            dose = (request.get("dosageInstruction") or [{}])[0].get("text", "")
            flow.append(Paragraph(
                f"• {_escape(request.get('medicationCodeableConcept', {}).get('text', '?'))} "
                f"{_escape(dose)}: <b>{decision}</b>", body,
            ))  # fmt: skip
    labels = ai_labels(report)
    flow += [
        Spacer(1, 6 * mm),
        Paragraph("Sign-off", heading),
        Paragraph(
            f"Approved by {_escape(clinician)} on {_escape(provenance.get('recorded', '?'))}; "
            f"signing key (RFC 7638 thumbprint) {_escape(kid or 'none')}.",
            body,
        ),
        Paragraph(_escape(AI_NOTICE.get(labels[0] if labels else "", "")), small),
    ]
    doc.build(flow)
    return out.getvalue()


def with_pdf(bundle: Mapping[str, Any], pdf: bytes, title: str) -> dict[str, Any]:
    """The Bundle with ``pdf`` as the DiagnosticReport's ``presentedForm`` (an Attachment)."""
    out = copy.deepcopy(dict(bundle))
    report = report_entry(out)["resource"]
    report["presentedForm"] = [
        {
            "contentType": CONTENT_TYPE,
            "language": "en",
            "data": base64.b64encode(pdf).decode("ascii"),
            "title": title,
            "creation": report.get("issued"),
        }
    ]
    return out
