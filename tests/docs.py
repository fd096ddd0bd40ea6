"""Write real fixture documents (PDF, DOCX, PPTX) for tests, so extraction runs on genuine files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pdf_string(line: str) -> bytes:
    """A PDF literal string for one line (WinAnsi, parentheses and backslashes escaped)."""
    raw = line.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def make_pdf(path: Path, text: str | Sequence[str]) -> Path:
    """Write a minimal valid PDF: one page per string given, one text line per input line."""
    pages = [text] if isinstance(text, str) else list(text)
    font_id = 3 + 2 * len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{3 + 2 * i} 0 R".encode() for i in range(len(pages)))
        + b"] /Count %d >>" % len(pages),
    ]
    for i, page_text in enumerate(pages):
        ops = [b"BT", b"/F1 11 Tf", b"14 TL", b"72 760 Td"]
        for line in page_text.split("\n"):
            ops.append(_pdf_string(line) + b" Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font_id, 4 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    Path(path).write_bytes(bytes(out))
    return Path(path)


def make_docx(path: Path, paragraphs: Sequence[str], table: Sequence[Sequence[str]] | None = None) -> Path:
    """Write a Word document with these paragraphs, then an optional table (rows of cells)."""
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.cell(r, c).text = cell
    document.save(str(path))
    return Path(path)


def make_pptx(path: Path, slides_texts: Sequence[str | Sequence[str]]) -> Path:
    """Write a presentation: one slide per entry, one text box per string of the entry."""
    import pptx
    from pptx.util import Inches

    presentation = pptx.Presentation()
    blank = presentation.slide_layouts[6]
    for texts in slides_texts:
        slide = presentation.slides.add_slide(blank)
        for n, text in enumerate([texts] if isinstance(texts, str) else texts):
            box = slide.shapes.add_textbox(Inches(1), Inches(1 + n), Inches(8), Inches(1))
            box.text_frame.text = text
    presentation.save(str(path))
    return Path(path)
