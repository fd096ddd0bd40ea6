"""Extraction gives the text a search would find, and refuses what file_search refuses."""

from __future__ import annotations

import re
import zipfile

import pytest

from ingest.remote.local.extract import ExtractError, extract_text
from tests.docs import make_docx, make_pdf, make_pptx

WORDML = (
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'xmlns:v="urn:schemas-microsoft-com:vml"'
)


def run(text: str) -> str:
    return f'<w:r><w:t xml:space="preserve">{text}</w:t></w:r>'


def make_docx_xml(path, *body_xml: str, header: str = "", footer: str = ""):
    """A Word document whose body is these raw WordprocessingML blocks, with an optional header and footer."""
    import docx
    from lxml import etree

    document = docx.Document()
    body = document.element.body
    for xml in body_xml:
        for block in etree.fromstring(f"<w:body {WORDML}>{xml}</w:body>"):
            body.insert(len(body) - 1, block)  # before the section properties, which come last
    document.sections[0].header.paragraphs[0].text = header
    document.sections[0].footer.paragraphs[0].text = footer
    document.save(str(path))
    return path


def encrypted_pdf(tmp_path, text: str, **encryption):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(make_pdf(tmp_path / "plain.pdf", text)))
    writer.encrypt(**encryption)
    path = tmp_path / "encrypted.pdf"
    with open(path, "wb") as f:
        writer.write(f)
    return path


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
        "<ul><li>one</li><li>two</li></ul><noscript>enable js</noscript></body></html>"
    )
    text = extract_text(path, "text/html")
    assert "trackingcode" not in text and "color:red" not in text and "enable js" not in text
    assert "Faster sync & fewer bugs." in text
    assert "Release notes" in text
    assert "one\ntwo" in text  # list items do not run together


def test_html_that_never_closes_head_keeps_its_body(tmp_path):
    path = tmp_path / "sloppy.html"
    path.write_text("<html><head><title>T</title><body><p>body text here")
    assert "body text here" in extract_text(path, ".html")


def test_xhtml_declaring_its_encoding_gives_its_text(tmp_path):
    path = tmp_path / "page.xhtml.html"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
        "<title>Menu</title></head><body><p>café <!-- draft: remove --> au lait</p><p>croissant</p></body></html>",
        encoding="utf-8",
    )
    assert extract_text(path, ".html") == "Menu\n\ncafé au lait\ncroissant"


def test_html_of_only_whitespace_has_no_text(tmp_path):
    path = tmp_path / "blank.html"
    path.write_text("  \n ")
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".html")
    assert err.value.message == "no text could be extracted"


def test_pdf_text_comes_back(tmp_path):
    path = make_pdf(tmp_path / "report.pdf", ["Quarterly revenue grew (a lot)", "Page two text"])
    text = extract_text(path, "application/pdf")
    assert "Quarterly revenue grew (a lot)" in text
    assert "Page two text" in text


def test_pdf_word_hyphenated_at_a_line_end_is_one_word(tmp_path):
    path = make_pdf(tmp_path / "columns.pdf", "the index holds pack-\nages of text\nand lines stay lines")
    assert extract_text(path, ".pdf") == "the index holds packages of text\nand lines stay lines"


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
    path = make_docx(
        tmp_path / "memo.docx", ["First paragraph.", "Second paragraph."], table=[["Name", "Role"], ["Ada", "Engineer"]]
    )
    text = extract_text(path, ".docx")
    assert text.index("First paragraph.") < text.index("Second paragraph.") < text.index("Ada")
    assert "Ada | Engineer" in text


# Each block is a place Word keeps text that is not a plain run of a plain paragraph.
DOCX_PLACES = {
    "content control": f"<w:sdt><w:sdtPr/><w:sdtContent><w:p>{run('capybara in a content control')}</w:p>"
    "</w:sdtContent></w:sdt>",
    "inline content control": f"<w:p><w:sdt><w:sdtContent>{run('pangolin inline control')}</w:sdtContent>"
    "</w:sdt></w:p>",
    "tracked insertion": f'<w:p><w:ins w:id="1" w:author="A">{run("axolotl inserted")}</w:ins></w:p>',
    "simple field": f'<w:p><w:fldSimple w:instr=" TITLE ">{run("okapi field result")}</w:fldSimple></w:p>',
    "smart tag": f'<w:p><w:smartTag w:uri="urn:x" w:element="place">{run("narwhal smart tag")}</w:smartTag></w:p>',
    # Word writes a text box twice: as a shape (Choice) and in VML for old readers (Fallback).
    "text box": (
        '<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wps:wsp><wps:txbx>'
        f"<w:txbxContent><w:p>{run('tapir in a text box')}</w:p></w:txbxContent></wps:txbx>"
        "</wps:wsp></w:drawing></mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox><w:txbxContent>"
        f"<w:p>{run('tapir in a text box')}</w:p></w:txbxContent></v:textbox></v:shape></w:pict>"
        "</mc:Fallback></mc:AlternateContent></w:r></w:p>"
    ),
    "old text box": (
        "<w:p><w:r><mc:AlternateContent><mc:Fallback><w:pict><v:shape><v:textbox>"
        f"<w:txbxContent><w:p>{run('ibis in a VML text box')}</w:p></w:txbxContent>"
        "</v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>"
    ),
}


@pytest.mark.parametrize("place", DOCX_PLACES)
def test_docx_whose_only_text_is_outside_plain_paragraphs_has_text(tmp_path, place):
    text = extract_text(make_docx_xml(tmp_path / "form.docx", DOCX_PLACES[place]), ".docx")
    assert text == re.search(r'preserve">([^<]+)<', DOCX_PLACES[place])[1]


def test_docx_text_in_every_place_comes_in_document_order_once(tmp_path):
    tabbed = (
        '<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>'
        "<w:r><w:t>Total</w:t><w:tab/><w:t>42</w:t></w:r></w:p>"
    )
    deleted = (
        '<w:p><w:del w:id="2" w:author="A"><w:r><w:delText>dodo deleted</w:delText></w:r></w:del>'
        f'<w:moveFrom w:id="3" w:author="A">{run("moved elsewhere")}</w:moveFrom>'
        f"{run('kept words')}</w:p>"
    )
    path = make_docx_xml(
        tmp_path / "form.docx",
        f"<w:p>{run('Opening words')}</w:p>",
        *DOCX_PLACES.values(),
        tabbed,
        deleted,
        header="Running head wombat",
        footer="Page footer quokka",
    )
    lines = extract_text(path, ".docx").splitlines()
    assert lines == [
        "Opening words",
        "capybara in a content control",
        "pangolin inline control",
        "axolotl inserted",
        "okapi field result",
        "narwhal smart tag",
        "tapir in a text box",
        "ibis in a VML text box",
        "Total\t42",
        "kept words",
        "Running head wombat",
        "Page footer quokka",
    ]


def test_docx_with_text_only_in_the_header_has_text(tmp_path):
    path = make_docx_xml(tmp_path / "letterhead.docx", header="Letterhead platypus")
    assert extract_text(path, ".docx") == "Letterhead platypus"


@pytest.mark.parametrize(
    "make, kind",
    [
        pytest.param(lambda path: make_pptx(path, ["Roadmap"]), ".docx", id="another Office type"),
        pytest.param(lambda path: path.write_bytes(b"not a zip at all"), ".docx", id="not a docx"),
        pytest.param(lambda path: path.write_bytes(b"not a zip at all"), ".pptx", id="not a pptx"),
    ],
)
def test_an_extraction_error_does_not_show_the_path_it_read(tmp_path, make, kind):
    # The local store extracts from its own blob (.../store/blobs/file-local-...): an internal path.
    blob = tmp_path / "store" / "blobs" / "file-local-0123456789abcdef01234567"
    blob.parent.mkdir(parents=True)
    make(blob)
    with pytest.raises(ExtractError) as err:
        extract_text(blob, kind)
    assert "blobs" not in err.value.message and "file-local" not in err.value.message, err.value.message


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


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_aes_pdf_with_only_an_owner_password_opens(tmp_path, algorithm):
    # "Protected" against printing or copying only: readers open it without a password.
    path = encrypted_pdf(tmp_path, "AES restricted manatee", user_password="", owner_password="o", algorithm=algorithm)
    assert extract_text(path, ".pdf") == "AES restricted manatee"


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_aes_pdf_with_a_password_is_password_protected_not_damaged(tmp_path, algorithm):
    path = encrypted_pdf(tmp_path, "locked manatee", user_password="hunter2", owner_password="o", algorithm=algorithm)
    with pytest.raises(ExtractError) as err:
        extract_text(path, ".pdf")
    assert (err.value.code, err.value.message) == ("invalid_file", "the PDF is password-protected")
