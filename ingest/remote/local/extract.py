"""Turn a stored document into plain text the way file_search would, for the embedded local store."""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from pathlib import Path

from ingest.limits import FILE_TYPES

# The file_search types: read as plain text, or by their own extractor (html, pdf, docx, pptx).
TEXT_EXTENSIONS = frozenset(t.ext for t in FILE_TYPES.values() if t.extractor == "text")
DOCUMENT_EXTENSIONS = frozenset(FILE_TYPES) - TEXT_EXTENSIONS
SUPPORTED_EXTENSIONS = frozenset(FILE_TYPES)
MIME_TO_EXT = {t.mime: t.ext for t in FILE_TYPES.values()}
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_BREAKS = {_W + "tab": "\t", _W + "br": "\n", _W + "cr": "\n"}


class ExtractError(Exception):
    """The document cannot be indexed; `code` is an OpenAI last_error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def extract_text(path: Path, mime_or_ext: str | None = None) -> str:
    """Return the searchable text of `path`.

    `mime_or_ext` is a MIME type ("application/pdf"), an extension (".pdf" or "pdf") or None to
    use the path's suffix. Raises ExtractError("unsupported_file" | "invalid_file", reason).
    """
    ext = _normalise_kind(Path(path), mime_or_ext)
    if ext == ".doc":
        raise ExtractError("unsupported_file", "legacy .doc files cannot be read by the local store; save it as .docx")
    if ext not in SUPPORTED_EXTENSIONS:
        raise ExtractError("unsupported_file", f"{ext or 'files without an extension'} is not a file_search type")
    try:
        if ext in TEXT_EXTENSIONS:
            text = decode_text(Path(path).read_bytes())
        elif ext == ".html":
            text = html_to_text(decode_text(Path(path).read_bytes()))
        elif ext == ".pdf":
            text = _pdf_text(Path(path))
        elif ext == ".docx":
            text = _docx_text(Path(path))
        else:
            text = _pptx_text(Path(path))
    except OSError as e:
        raise ExtractError("invalid_file", f"the file could not be read: {e.strerror or _detail(e, path)}") from e
    if not text.strip():
        raise ExtractError("invalid_file", "no text could be extracted")
    return text


def _normalise_kind(path: Path, mime_or_ext: str | None) -> str:
    """Map a MIME type or extension (or None) to a lower-case '.ext'."""
    if not mime_or_ext:
        return path.suffix.lower()
    kind = mime_or_ext.strip().lower().split(";")[0].strip()
    if "/" in kind:
        if kind in MIME_TO_EXT:
            return MIME_TO_EXT[kind]
        # Any other text/* is still text to the API (it checks the encoding, not the subtype).
        return ".txt" if kind.startswith("text/") else kind
    return kind if kind.startswith(".") else "." + kind


def decode_text(data: bytes) -> str:
    """Decode utf-8 / utf-16 (with a BOM) / ascii, the encodings file_search accepts."""
    if data.startswith(codecs.BOM_UTF8):
        encoding, data = "utf-8", data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ExtractError(
            "invalid_file", f"the text is not valid UTF-8 or UTF-16 (bad byte at offset {e.start}); re-save it as UTF-8"
        ) from e
    # NULs outside a UTF-16 file mean a binary file wearing a text extension.
    if "\x00" in text:
        raise ExtractError("invalid_file", "the file contains binary data, not text")
    return text


class _VisibleText(HTMLParser):
    """Collects the text a browser would show, dropping scripts, styles and markup."""

    # Not "head": pages that never close it would lose their whole body.
    HIDDEN = frozenset({"script", "style", "noscript", "template", "title"})
    # Block elements end a line so words from adjacent blocks do not run together.
    BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "ul",
            "ol",
            "tr",
            "table",
            "section",
            "article",
            "header",
            "footer",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "pre",
            "blockquote",
            "dt",
            "dd",
            "hr",
            "nav",
            "aside",
            "main",
            "figure",
            "figcaption",
            "td",
            "th",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self._hidden.append(tag)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs):
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            # Pop back to the matching open tag; tolerates unclosed inner hidden tags.
            if tag in self._hidden:
                while self._hidden and self._hidden.pop() != tag:
                    pass
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)
        elif self._hidden[-1] == "title":
            self.title.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page: one line per block, whitespace collapsed."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    body = "\n".join(line for line in lines if line)
    title = " ".join("".join(parser.title).split())
    # The title is visible in the tab and often the best search handle for the page.
    return f"{title}\n\n{body}" if title and title not in body[: len(title) + 1] else body


def _pdf_text(path: Path) -> str:
    """Text of every page of a PDF, pages separated by a blank line."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # Many "protected" PDFs only restrict printing and open with an empty password.
            try:
                if not reader.decrypt(""):
                    raise ExtractError("invalid_file", "the PDF is password-protected")
            except ExtractError:
                raise
            except Exception as e:
                raise ExtractError(
                    "invalid_file", f"the PDF is encrypted and could not be opened ({_detail(e, path)})"
                ) from e
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractError:
        raise
    except Exception as e:  # pypdf raises anything from PdfReadError to KeyError on damaged files
        raise ExtractError("invalid_file", f"the PDF is damaged or not a PDF ({_detail(e, path)})") from e
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _docx_text(path: Path) -> str:
    """The body's text in document order, then the headers' and footers'."""
    import docx
    from docx.opc.constants import RELATIONSHIP_TYPE as RT

    try:
        document = docx.Document(str(path))
        roots = [document.element.body] + [
            rel.target_part.element for rel in document.part.rels.values() if rel.reltype in (RT.HEADER, RT.FOOTER)
        ]
        return "\n".join(line for root in roots for line in _wordml_lines(root))
    except Exception as e:  # python-docx raises anything from KeyError to lxml errors
        raise ExtractError(
            "invalid_file", f"the Word document is damaged or not a .docx file ({_detail(e, path)})"
        ) from e


def _wordml_lines(root) -> list[str]:
    """One line per paragraph and per table row (cells joined by ' | ').

    Every run's w:t counts, wherever it sits: content controls, text boxes, tracked insertions,
    fields, smart tags. Deleted text is w:delText and field codes are w:instrText: left out.
    """
    lines: dict = {}  # line (paragraph or table row) → cell (None outside tables) → paragraph → texts
    for node in root.iter(_W + "t", _W + "tab", _W + "br", _W + "cr"):
        ancestors = list(node.iterancestors())
        if any(_unseen(a) for a in ancestors):
            continue
        paragraph = next((a for a in ancestors if a.tag == _W + "p"), root)
        cell = next((a for a in ancestors if a.tag == _W + "tc"), None)
        line = paragraph if cell is None else next(cell.iterancestors(_W + "tr"), cell)
        text = _BREAKS.get(node.tag, node.text or "")
        lines.setdefault(line, {}).setdefault(cell, {}).setdefault(paragraph, []).append(text)
    out = []
    for cells in lines.values():
        texts = (" ".join("".join(t) for t in paragraphs.values()).strip() for paragraphs in cells.values())
        out.append(" | ".join(text for text in texts if text))
    return [line for line in out if line]


def _unseen(element) -> bool:
    """Text moved elsewhere, or the copy for old readers of a text box a Choice beside it holds too."""
    if element.tag == _MC + "Fallback":
        return element.getparent().find(_MC + "Choice") is not None
    return element.tag == _W + "moveFrom"


def _table_rows(rows) -> list[str]:
    """One line per table row, cells separated by ' | ', merged cells once."""
    lines = []
    for row in rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            lines.append(" | ".join(cells))
    return lines


def _detail(e: Exception, path: Path) -> str:
    """A library's message without the path it was given: for the local store an internal blob."""
    return re.sub(f"( at)? '{re.escape(str(path))}'", "", str(e)).replace(str(path), "the file")


def _pptx_text(path: Path) -> str:
    """Text frames, tables and speaker notes of every slide, slides separated by a blank line."""
    import pptx

    try:
        presentation = pptx.Presentation(str(path))
        slides = []
        for slide in presentation.slides:
            parts = _shape_texts(slide.shapes)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                parts.append(slide.notes_slide.notes_text_frame.text)
            text = "\n".join(p for p in parts if p.strip())
            if text:
                slides.append(text)
    except Exception as e:  # python-pptx raises anything from KeyError to lxml errors
        raise ExtractError(
            "invalid_file", f"the presentation is damaged or not a .pptx file ({_detail(e, path)})"
        ) from e
    return "\n\n".join(slides)


def _shape_texts(shapes) -> list[str]:
    """Texts of shapes, descending into groups."""
    from pptx.shapes.group import GroupShape

    out: list[str] = []
    for shape in shapes:
        if isinstance(shape, GroupShape):
            out.extend(_shape_texts(shape.shapes))
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            out.append(shape.text_frame.text)
        elif getattr(shape, "has_table", False) and shape.has_table:
            out.extend(_table_rows(shape.table.rows))
    return out
