"""Extension + magic + size + encoding → a verdict with a reason a person understands."""

from __future__ import annotations

import codecs
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import MagicUnavailable
from ingest.limits import FILE_TYPES, SUPPORTED_TYPES

# The MIME type each text type is recorded with once the content is known to be text (libmagic's
# quick answer is only "text/plain"), what libmagic may call a valid file of each binary type, and the
# part inside that tells an Office file from a plain zip (some tools write them so).
TEXT_MIMES = {t.ext: t.mime for t in FILE_TYPES.values() if t.text}
TEXT_TYPES = set(TEXT_MIMES)
BINARY_MIMES = {t.ext: t.magic for t in FILE_TYPES.values() if not t.text}
OOXML_PART = {t.ext: t.zip_part for t in FILE_TYPES.values() if t.zip_part}
TEXT_LIKE_MIMES = {
    "application/json",
    "application/x-ndjson",
    "application/javascript",
    "application/x-sh",
    "application/x-shellscript",
    "application/typescript",
    "application/x-php",
    "application/x-empty",
    "inode/x-empty",
}
# ASCII documents that are not text (PDF, RTF, PostScript): the quick call skips the rules naming them.
DISGUISES = (b"%PDF-", b"{\\rtf", b"%!PS")
# Files up to this size are read once for their verdict and hash: under the bytes libmagic reads of a
# file (its bytes_max, 1 MiB in every release since 5.21), so judging the bytes in hand is the same.
SMALL = 1 << 18
# Charsets libmagic names that tell nothing about which legacy encoding to convert from.
NOT_LEGACY = {"", "us-ascii", "utf-8", "binary", "unknown-8bit"}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    mime: str
    reason: str = ""


def _load_magic():
    try:
        import magic

        # For text types one quick call answers "text or not, and which charset": the rule database
        # (soft magic) is skipped, which makes it ~50x faster; binaries still come back as binary.
        quick = magic.Magic(mime=True, mime_encoding=True)
        magic.magic_setflags(
            quick.cookie, magic.MAGIC_MIME_TYPE | magic.MAGIC_MIME_ENCODING | magic.MAGIC_NO_CHECK_SOFT
        )
        return magic.Magic(mime=True), quick
    except (ImportError, OSError) as exc:  # python-magic raises ImportError when libmagic is absent
        raise MagicUnavailable(
            f"libmagic is not installed ({exc}); install it with 'apt-get install libmagic1' "
            "(Debian/Ubuntu), 'dnf install file-libs' or 'brew install libmagic'"
        ) from None


class Validator:
    """Checks a file before any API call is spent on it. Safe to share between threads."""

    def __init__(self, types: tuple[str, ...], max_size: int):
        self.types = {t.lower() for t in types}
        self.max_size = max_size
        self._local = threading.local()

    def _magic(self):
        if not hasattr(self._local, "pair"):
            self._local.pair = _load_magic()  # a libmagic handle is not thread-safe
        return self._local.pair

    def read_small(self, path: Path, size: int) -> bytes | None:
        """The whole file, when check() would read it and it is a text type small enough to judge and
        hash from one read (check(data=...), then its sha256); otherwise None, and each reads the file
        as it needs. Raises OSError as a read does."""
        ext = path.suffix.lower()
        if not 0 < size <= min(SMALL, self.max_size) or ext not in self.types or ext not in TEXT_TYPES:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
        return data if len(data) <= SMALL else None  # grown since its stat: read as a large one is

    def check(self, path: Path, size: int, data: bytes | None = None) -> Verdict:
        """data: the whole file, read already (see read_small): a text type is then judged from it."""
        ext = path.suffix.lower()
        if ext not in self.types:
            allowed = " ".join(sorted(self.types))
            if ext in SUPPORTED_TYPES:
                return Verdict(False, "", f"type {ext} is left out by limits.types in the config (allowed: {allowed})")
            return Verdict(
                False, "", f"type {ext or '(no extension)'} is not supported by file_search (supported: {allowed})"
            )
        if size == 0:
            return Verdict(False, "", "empty file")
        if size > self.max_size:
            return Verdict(False, "", f"too large: {size:,} bytes, the limit is {self.max_size:,} bytes")
        full_magic = self._magic()[0]
        # libmagic reports a symlink as inode/symlink: look at what it points to (scan kept it in the root).
        target = os.path.realpath(path) if path.is_symlink() else str(path)
        try:
            if ext in TEXT_TYPES:
                return self._check_text_type(path, target, ext, data)
            return _check_binary(path, ext, full_magic.from_file(target).lower())
        except OSError as exc:
            return Verdict(False, "", f"cannot read: {exc.strerror or exc}")
        except Exception as exc:  # libmagic errors are plain exceptions
            return Verdict(False, "", f"cannot identify the content: {exc}")

    def _check_text_type(self, path: Path, target: str, ext: str, data: bytes | None) -> Verdict:
        full_magic, quick_magic = self._magic()
        if data is None:
            with open(target, "rb") as fh:
                head = fh.read(5)
        else:
            head = data[:5]
        if head.startswith(DISGUISES) and (mime := full_magic.from_file(target).lower()) != "text/plain":
            return Verdict(False, mime, f"content is {mime}, not text as {ext} should be")
        # A whole file in hand is what libmagic would read of it (read_small stays under its limit).
        quick = quick_magic.from_file(target) if data is None else quick_magic.from_buffer(data)
        mime, _, charset = quick.lower().partition("; charset=")
        verdict = None
        if mime == "application/octet-stream":
            # The quick call also gives up on 1-byte files and on text with a stray ^Z, DEL or SOH:
            # decoding decides, and the rules only name what a refused file is.
            utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
            verdict = _check_text(path, ext, "utf-16" if utf16 else "binary", data)
            if verdict.ok:
                return verdict
        elif _is_text(mime):
            return _check_text(path, ext, charset, data)
        mime = full_magic.from_file(target).lower()  # only to name what it is instead
        if verdict and (_is_text(mime) or mime == "application/octet-stream"):
            return verdict  # the rules know no more than decoding found
        if _is_text(mime):
            return _check_text(path, ext, "", data)
        return Verdict(False, mime, f"content is {mime}, not text as {ext} should be")


def _is_text(mime: str) -> bool:
    return mime.startswith("text/") or mime in TEXT_LIKE_MIMES


def _check_text(path: Path, ext: str, charset: str, data: bytes | None = None) -> Verdict:
    """The whole file must decode (UTF-16 when libmagic saw its BOM, else UTF-8) and hold no NUL."""
    mime = TEXT_MIMES[ext]
    encoding = "utf-16" if charset.startswith("utf-16") else "utf-8"
    try:
        bad, nul = _scan(path, encoding, data)
        if bad is None and not nul:
            return Verdict(True, mime)
        if charset == "binary" and _utf16_without_bom(path):
            return Verdict(
                False, mime, "text is UTF-16 without a byte order mark (BOM): save it as UTF-8 to have it indexed"
            )
    except OSError as exc:
        return Verdict(False, mime, f"cannot read: {exc.strerror or exc}")
    legacy = charset not in NOT_LEGACY and not charset.startswith("utf-16")
    if (nul or charset == "binary") and (not legacy or bad is None):  # no advice to re-save: not text at all
        return Verdict(False, mime, f"content is binary, not text as {ext} should be")
    seen = f" (it looks like {charset})" if legacy else ""
    return Verdict(
        False,
        mime,
        f"text is not valid UTF-8, UTF-16 or ASCII{seen}: the first bad byte is at "
        f"offset {bad:,}; save it as UTF-8 to have it indexed",
    )


def _scan(path: Path, encoding: str, data: bytes | None = None) -> tuple[int | None, bool]:
    """Offset of the first byte that does not decode (None: all do), and whether a NUL is in there."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    bad, nul, offset = None, False, 0
    with open(path, "rb") if data is None else io.BytesIO(data) as fh:  # in pieces: memory stays flat
        while not nul:
            block = fh.read(1 << 20)
            if bad is None:
                start = offset - len(decoder.getstate()[0])  # the decoder holds back a split character
                try:
                    nul = "\0" in decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    bad = start + exc.start
                    if encoding != "utf-8":
                        break  # NUL bytes are normal in UTF-16
            if bad is not None:
                nul = b"\0" in block  # tells binary content from text in a legacy encoding
            if not block:
                break
            offset += len(block)
    return bad, nul


def _utf16_without_bom(path: Path) -> bool:
    """UTF-16 without a BOM looks binary to libmagic: Latin script has a NUL in every other byte."""
    with open(path, "rb") as fh:
        sample = fh.read(4096)
    if sample.count(0) * 4 < len(sample):  # else any ASCII pairs up into printable CJK
        return False
    for encoding in ("utf-16-le", "utf-16-be"):
        try:
            if "".join(sample[: len(sample) // 2 * 2].decode(encoding).split()).isprintable():
                return True
        except UnicodeDecodeError:
            pass
    return False


def _check_binary(path: Path, ext: str, mime: str) -> Verdict:
    if mime in BINARY_MIMES[ext]:
        return Verdict(True, mime)
    if ext in OOXML_PART and mime in ("application/zip", "application/octet-stream"):
        import zipfile  # here: only a file to validate needs it, and a pass with nothing to do has none

        try:
            with zipfile.ZipFile(path) as archive:
                if OOXML_PART[ext] in archive.namelist():
                    return Verdict(True, FILE_TYPES[ext].mime)
        except (zipfile.BadZipFile, OSError):
            pass
        return Verdict(False, mime, f"a zip archive that is not a {FILE_TYPES[ext].name} document")
    return Verdict(False, mime, f"content is {mime}, not a {FILE_TYPES[ext].name} document as {ext} says")
