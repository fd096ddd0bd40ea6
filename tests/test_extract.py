"""Extraction gives the text a search would find, and refuses what file_search refuses."""
from __future__ import annotations

import zipfile

import pytest

from tests.docs import make_docx, make_pdf, make_pptx
from ingest.extract import ExtractError, extract_text


def test_utf8_text_keeps_accents(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Crème brûlée — naïve café\nsecond line", encoding="utf-8")
    assert extract_text(path, ".txt") == "Crème brûlée — naïve café\nsecond line"


def test_utf8_bom_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.md"
    path.write_bytes("# Title".encode("utf-8-sig"))
    assert extract_text(path, "text/markdown") == "# Title"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(tmp_path, encoding):
    path = tmp_path / "wide.txt"
    data = "Grüße aus Köln".encode(encoding)
    if encoding != "utf-16":  # the explicit-endian codecs write no BOM; add the right one
        data = ("\ufeff".encode(encoding)) + data
    path.write_bytes(data)
    assert extract_text(path) == "Grüße aus Köln"


def test_source_code_types_are_text(tmp_path):
    path = tmp_path / "main.go"
    path.write_text('package main\nfunc main() { println("hi") }\n')
    assert "println" in extract_text(path, "go")


def test_latin1_text_is_invalid_with_a_reason(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".txt")
    assert err.value.code == "invalid_file"
    assert "UTF-8" in err.value.message


def test_binary_with_a_text_extension_is_invalid(tmp_path):
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".txt")
    assert err.value.code == "invalid_file"


def test_html_gives_visible_text_only(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Release notes</title><style>body{color:red}</style>"
        "<script>var secret = 'trackingcode';</script></head><body>"
        "<h1>Version&nbsp;2</h1><p>Faster <b>sync</b> &amp; fewer bugs.</p>"
        "<ul><li>one</li><li>two</li></ul><noscript>enable js</noscript></body></html>")
    text = extract_text(path, "text/html")
    assert "trackingcode" not in text and "color:red" not in text and "enable js" not in text
    assert "Faster sync & fewer bugs." in text
    assert "Release notes" in text
    assert "one\ntwo" in text  # list items do not run together


def test_html_that_never_closes_head_keeps_its_body(tmp_path):
    path = tmp_path / "sloppy.html"
    path.write_text("<html><head><title>T</title><body><p>body text here")
    assert "body text here" in extract_text(path, ".html")


def test_pdf_text_comes_back(tmp_path):
    path = make_pdf(tmp_path / "report.pdf", ["Quarterly revenue grew (a lot)", "Page two text"])
    text = extract_text(path, "application/pdf")
    assert "Quarterly revenue grew (a lot)" in text
    assert "Page two text" in text


def test_corrupt_pdf_is_invalid_file(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage without xref or trailer")
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".pdf")
    assert err.value.code == "invalid_file"
    assert "PDF" in err.value.message


def test_pdf_without_text_says_so(tmp_path):
    path = make_pdf(tmp_path / "scan.pdf", "")
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".pdf")
    assert (err.value.code, err.value.message) == ("invalid_file", "no text could be extracted")


def test_docx_paragraphs_and_tables_in_order(tmp_path):
    path = make_docx(tmp_path / "memo.docx", ["First paragraph.", "Second paragraph."],
                     table=[["Name", "Role"], ["Ada", "Engineer"]])
    text = extract_text(path, ".docx")
    assert text.index("First paragraph.") < text.index("Second paragraph.") < text.index("Ada")
    assert "Ada | Engineer" in text


def test_pptx_text_of_every_slide(tmp_path):
    path = make_pptx(tmp_path / "deck.pptx", ["Roadmap 2027", ["Risks", "Budget overrun"]])
    text = extract_text(path, ".pptx")
    for expected in ("Roadmap 2027", "Risks", "Budget overrun"):
        assert expected in text


def test_zip_that_is_not_a_docx_is_invalid(tmp_path):
    path = tmp_path / "fake.docx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a word document")
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".docx")
    assert err.value.code == "invalid_file"


def test_truncated_pptx_is_invalid(tmp_path):
    good = make_pptx(tmp_path / "good.pptx", ["hello"])
    bad = tmp_path / "bad.pptx"
    bad.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ExtractError) as err:
        extract_text(bad, ".pptx")
    assert err.value.code == "invalid_file"


def test_legacy_doc_is_unsupported_with_advice(tmp_path):
    path = tmp_path / "old.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)
    with pytest.raises(ExtractError) as err:
        extract_text(path, "application/msword")
    assert err.value.code == "unsupported_file"
    assert ".docx" in err.value.message


def test_non_file_search_type_is_unsupported(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ExtractError) as err:
        extract_text(path)
    assert err.value.code == "unsupported_file"


def test_empty_text_file_has_no_text(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n\t\n")
    with pytest.raises(ExtractError) as err:
        extract_text(path)
    assert err.value.message == "no text could be extracted"


def test_password_protected_pdf_is_invalid_with_a_reason(tmp_path):
    from pypdf import PdfReader, PdfWriter

    plain = make_pdf(tmp_path / "plain.pdf", "top secret plans")
    writer = PdfWriter()
    writer.append(PdfReader(plain))
    writer.encrypt(user_password="hunter2", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as f:
        writer.write(f)
    with pytest.raises(ExtractError) as err:
        extract_text(locked, ".pdf")
    assert err.value.code == "invalid_file"
    assert "password" in err.value.message
