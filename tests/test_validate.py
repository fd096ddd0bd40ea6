"""Validation refuses what file_search would refuse, before any upload, with a reason a person understands."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ingest import validate
from ingest.limits import MAX_FILE_SIZE, SUPPORTED_TYPES
from ingest.validate import Validator, Verdict
from tests.docs import make_docx, make_pdf, make_pptx

WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
POWERPOINT = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


@pytest.fixture
def validator() -> Validator:
    return Validator(SUPPORTED_TYPES, MAX_FILE_SIZE)


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path


def check(validator: Validator, path: Path) -> Verdict:
    return validator.check(path, path.stat().st_size)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# accepted ----------------------------------------------------------------------------------------


def test_a_pdf_is_accepted(validator, folder):
    verdict = check(validator, make_pdf(folder / "report.pdf", "Quarterly figures"))
    assert verdict == Verdict(True, "application/pdf")


def test_a_bare_pdf_header_is_enough_for_libmagic(validator, folder):
    path = write(folder / "scan.pdf", b"%PDF-1.4\n1 0 obj\n<< >>\nendobj\ntrailer\n<< >>\n%%EOF\n")
    assert check(validator, path).ok


def test_an_upper_case_extension_is_the_same_type(validator, folder):
    assert check(validator, make_pdf(folder / "SCAN.PDF", "x")).ok


def test_a_word_document_is_accepted(validator, folder):
    verdict = check(validator, make_docx(folder / "letter.docx", ["Dear reader"]))
    assert verdict.ok and verdict.mime == WORD


def test_a_powerpoint_is_accepted(validator, folder):
    verdict = check(validator, make_pptx(folder / "deck.pptx", ["Roadmap"]))
    assert verdict.ok and verdict.mime == POWERPOINT


def test_a_word_document_libmagic_calls_a_zip_is_accepted_by_its_parts(validator, folder):
    source = make_docx(folder / "source.docx", ["Dear reader"])
    path = folder / "rezipped.docx"
    # Another writer's order: a first member that hides the Office signature from libmagic.
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as out:
        out.writestr("aaa/readme.txt", "written by some other tool")
        for item in original.infolist():
            out.writestr(item, original.read(item))
    verdict = check(validator, path)
    assert verdict.ok and verdict.mime == WORD


@pytest.mark.parametrize(
    "name, text, mime",
    [
        ("notes.txt", "Grüße aus Köln — naïve café\n", "text/plain"),
        ("plain.md", "# Title\n\nJust ASCII.\n", "text/markdown"),
        ("main.py", "def main():\n    return 'ok'\n", "text/x-python"),
        ("page.html", "<html><body><p>Hello</p></body></html>\n", "text/html"),
        ("data.json", '{"name": "Zoë", "n": 1}\n', "application/json"),
        ("run.sh", "#!/bin/sh\necho hello\n", "application/x-sh"),
    ],
)
def test_utf8_text_is_accepted_and_recorded_as_the_type_file_search_documents(validator, folder, name, text, mime):
    verdict = check(validator, write(folder / name, text.encode("utf-8")))
    assert verdict.ok and verdict.mime == mime


@pytest.mark.parametrize("encoding, bom", [("utf-16", b""), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")])
def test_utf16_with_a_bom_is_accepted(validator, folder, encoding, bom):
    path = write(folder / "wide.txt", bom + "Grüße aus Köln\nzweite Zeile\n".encode(encoding))
    verdict = check(validator, path)
    assert verdict.ok, verdict.reason


# refused -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["table.csv", "sheet.xlsx", "photo.jpg", "Makefile"])
def test_a_type_file_search_does_not_take_is_refused(validator, folder, name):
    verdict = check(validator, write(folder / name, b"a,b\n1,2\n"))
    assert not verdict.ok
    assert "not supported by file_search" in verdict.reason
    assert (Path(name).suffix or "(no extension)") in verdict.reason
    assert ".pdf" in verdict.reason and ".docx" in verdict.reason, "the reason lists what would be taken"


def test_types_narrowed_in_the_config_are_refused(folder):
    narrow = Validator((".md",), MAX_FILE_SIZE)
    verdict = check(narrow, write(folder / "notes.txt", b"hello\n"))
    assert not verdict.ok and verdict.reason == "type .txt is left out by limits.types in the config (allowed: .md)"
    verdict = check(narrow, write(folder / "table.csv", b"a,b\n"))
    assert not verdict.ok and verdict.reason.startswith("type .csv is not supported by file_search")


def test_an_empty_file_is_refused(validator, folder):
    verdict = check(validator, write(folder / "blank.md", b""))
    assert not verdict.ok and "empty" in verdict.reason


def test_a_file_over_the_limit_is_refused_without_being_read(validator, folder):
    path = folder / "huge.pdf"
    with open(path, "wb") as fh:  # sparse: nothing to read, and nothing is read
        fh.truncate(MAX_FILE_SIZE + 1)
    verdict = check(validator, path)
    assert not verdict.ok
    assert verdict.reason == "too large: 536,870,913 bytes, the limit is 536,870,912 bytes"


def test_a_configured_smaller_limit_applies(folder):
    verdict = check(Validator(SUPPORTED_TYPES, 1000), write(folder / "a.txt", b"x" * 1001))
    assert not verdict.ok and "too large" in verdict.reason and "1,000 bytes" in verdict.reason


def test_a_program_named_pdf_is_refused(validator, folder):
    path = folder / "invoice.pdf"
    shutil.copyfile(os.path.realpath(sys.executable), path)
    verdict = check(validator, path)
    assert not verdict.ok
    assert "executable" in verdict.reason and "not a PDF document" in verdict.reason


def test_a_program_named_txt_is_refused(validator, folder):
    path = folder / "readme.txt"
    shutil.copyfile(os.path.realpath(sys.executable), path)
    verdict = check(validator, path)
    assert not verdict.ok and "not text as .txt should be" in verdict.reason


def test_a_plain_zip_named_docx_is_refused(validator, folder):
    path = folder / "letter.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    verdict = check(validator, path)
    assert not verdict.ok and verdict.reason == "a zip archive that is not a Word document"


def test_a_presentation_named_docx_is_refused(validator, folder):
    path = make_pptx(folder / "deck.pptx", ["Roadmap"]).rename(folder / "letter.docx")
    verdict = check(validator, path)
    assert not verdict.ok and "not a Word document as .docx says" in verdict.reason


def test_a_text_file_named_pdf_is_refused(validator, folder):
    verdict = check(validator, write(folder / "report.pdf", b"just some words\n"))
    assert not verdict.ok and "text/plain" in verdict.reason and "PDF" in verdict.reason


def test_latin1_text_is_refused_with_how_to_fix_it(validator, folder):
    path = write(folder / "notes.txt", "Grüße aus Köln, café crème\n".encode("latin-1"))
    verdict = check(validator, path)
    assert not verdict.ok
    assert "not valid UTF-8" in verdict.reason and "save it as UTF-8" in verdict.reason
    assert "iso-8859-1" in verdict.reason, "the reason says what it looks like"


def test_a_bad_byte_past_what_libmagic_samples_is_still_found(validator, folder):
    # libmagic looks at the start only; the decode must cover the whole file.
    path = write(folder / "log.txt", b"all ascii here\n" * 700_000 + "café\n".encode("latin-1"))
    verdict = check(validator, path)
    assert not verdict.ok and "save it as UTF-8" in verdict.reason
    assert "the first bad byte is at offset 10,500,003" in verdict.reason
    assert "looks like" not in verdict.reason, "all libmagic saw was ASCII: that is no encoding to name"


def test_the_offset_of_a_bad_byte_counts_a_character_split_between_reads(validator, folder):
    # "é" straddles the 1 MiB reads of the decoder; the bad byte comes right after it.
    path = write(folder / "notes.md", b"a" * ((1 << 20) - 1) + "é".encode() + b"\xff tail\n")
    verdict = check(validator, path)
    assert not verdict.ok and f"offset {(1 << 20) + 1:,};" in verdict.reason


def test_the_offset_is_given_for_a_bad_byte_after_64_kib(validator, folder):
    path = write(folder / "notes.txt", b"x" * 70_012 + b"\xe9t\xe9\n")
    verdict = check(validator, path)
    assert verdict.reason == (
        "text is not valid UTF-8, UTF-16 or ASCII: the first bad byte is at offset "
        "70,012; save it as UTF-8 to have it indexed"
    )


@pytest.mark.parametrize("tail", [b"\x00\x01\x02binary tail", bytes(range(256)) * 16])
def test_binary_past_a_text_start_is_called_binary_without_advice_to_re_save(validator, folder, tail):
    path = write(folder / "dump.txt", b"log line\n" * 10_000 + tail)
    verdict = check(validator, path)
    assert not verdict.ok and verdict.reason == "content is binary, not text as .txt should be"


def test_a_nul_byte_in_text_is_binary_content(validator, folder):
    verdict = check(validator, write(folder / "notes.txt", b"some text\n\x00more text\n"))
    assert not verdict.ok and verdict.reason == "content is binary, not text as .txt should be"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_refused_with_a_reason_that_says_so(validator, folder, encoding):
    path = write(folder / "wide.txt", "Grüße aus Köln\nzweite Zeile\n".encode(encoding))
    verdict = check(validator, path)
    assert not verdict.ok
    assert verdict.reason == ("text is UTF-16 without a byte order mark (BOM): save it as UTF-8 to have it indexed")


# what libmagic's quick call gets wrong -----------------------------------------------------------


@pytest.mark.parametrize("name", ["events.json", "log.txt", "notes.md"])
def test_json_lines_are_text(validator, folder, name):
    # libmagic calls two or more lines of JSON objects application/x-ndjson.
    verdict = check(validator, write(folder / name, b'{"a": 1}\n{"b": "two"}\n'))
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    "name, data",
    [
        ("dependency_links.txt", b"\n"),
        ("x.md", b"x"),
        ("dos.txt", b"Written on DOS.\r\n\x1a"),
        ("del.txt", b"a rubbed out\x7f letter\n"),
        ("soh.py", b"MARK = '\x01'\n"),
        ("wide.txt", "\ufeffa \x01 in UTF-16\n".encode("utf-16-le")),
    ],
)
def test_text_libmagic_calls_binary_is_accepted_when_it_decodes(validator, folder, name, data):
    # The quick call says application/octet-stream for 1-byte files and for text with a stray
    # control character.
    verdict = check(validator, write(folder / name, data))
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    "name, data, mime",
    [
        ("report.txt", b"%PDF-1.4\n1 0 obj\n<< >>\nendobj\ntrailer\n<< >>\n%%EOF\n", "application/pdf"),
        ("letter.md", b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}} Hello}\n", "text/rtf"),
        (
            "poster.txt",
            b"%!PS-Adobe-3.0\n%%Title: poster\n/Times findfont 12 scalefont setfont\nshowpage\n",
            "application/postscript",
        ),
    ],
)
def test_an_ascii_document_format_named_as_text_is_refused(validator, folder, name, data, mime):
    verdict = check(validator, write(folder / name, data))
    assert not verdict.ok
    assert verdict.reason == f"content is {mime}, not text as {Path(name).suffix} should be"


def test_plain_text_needs_only_the_quick_libmagic_call(folder, monkeypatch):
    full_calls = []

    class CountingMagic:
        def __init__(self, magic):
            self.magic = magic

        def from_file(self, path):
            full_calls.append(path)
            return self.magic.from_file(path)

    load = validate._load_magic
    monkeypatch.setattr(validate, "_load_magic", lambda: (CountingMagic(load()[0]), load()[1]))
    validator = Validator(SUPPORTED_TYPES, MAX_FILE_SIZE)
    for name, data in [("notes.txt", "Grüße\n".encode()), ("a.md", b"# PDF-1.4 notes\n"), ("x.txt", b"x")]:
        assert check(validator, write(folder / name, data)).ok
    assert full_calls == []


def test_a_file_removed_before_the_check_says_it_cannot_be_read(validator, folder):
    verdict = validator.check(folder / "vanished.md", 10)
    assert not verdict.ok and verdict.reason.startswith("cannot")


def test_a_validator_is_safe_to_share_between_threads(validator, folder):
    good = [make_pdf(folder / f"r{i}.pdf", "x") for i in range(4)]
    good += [write(folder / f"n{i}.md", b"# ok\n") for i in range(4)]
    bad = [write(folder / f"l{i}.txt", "é".encode("latin-1") * 50) for i in range(4)]
    paths = (good + bad) * 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        verdicts = list(pool.map(lambda p: check(validator, p), paths))
    assert [v.ok for v in verdicts] == [p in good for p in paths]


SMALL_SAMPLES = {
    "plain.txt": b"Plain words about the okapi.\n",
    "accents.md": "Café, crème, naïve — façade ✓\n".encode(),
    "bom16.txt": "UTF-16 with its mark\n".encode("utf-16"),
    "nobom16.txt": "UTF-16 without a mark, words enough to tell\n".encode("utf-16-le"),
    "latin1.txt": "Prix: 12 € — café\n".encode("cp1252"),
    "nul.md": b"text with a \x00 NUL inside\n",
    "binary.txt": bytes(range(256)) * 4,
    "pdf.txt": b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
    "rtf.md": b"{\\rtf1\\ansi hello}\n",
    "one.txt": b"x",
    "ctrlz.txt": b"text ending in a stray ^Z\x1a\n",
    "json.json": b'{"key": ["value", 1, true]}\n',
    "script.sh": b"#!/bin/sh\necho hello\n",
    "page.html": b"<!doctype html><html><body><p>hi</p></body></html>\n",
}


@pytest.mark.parametrize("name", sorted(SMALL_SAMPLES))
def test_a_small_file_read_once_gets_the_verdict_its_path_gets(validator, folder, name):
    path = write(folder / name, SMALL_SAMPLES[name])
    data = validator.read_small(path, path.stat().st_size)
    assert data == SMALL_SAMPLES[name], "a small text file is read whole"
    assert validator.check(path, len(data), data) == check(validator, path)


def test_a_file_over_the_small_size_or_not_text_is_left_to_be_read_as_needed(validator, folder):
    large = write(folder / "large.txt", b"words " * (validate.SMALL // 6 + 1))
    assert validator.read_small(large, large.stat().st_size) is None
    pdf = make_pdf(folder / "doc.pdf", "a page")
    assert validator.read_small(pdf, pdf.stat().st_size) is None
    assert validator.read_small(write(folder / "blank.txt", b""), 0) is None
