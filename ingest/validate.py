"""Extension + magic + size + encoding → a verdict with a reason a person understands."""
from __future__ import annotations

import codecs
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The text types file_search takes, with the MIME type it documents for each: what the manifest
# records once the content is known to be text (libmagic's quick answer is only "text/plain").
TEXT_MIMES = {".c": "text/x-c", ".cpp": "text/x-c++", ".cs": "text/x-csharp", ".css": "text/css",
              ".go": "text/x-golang", ".html": "text/html", ".java": "text/x-java", ".js": "text/javascript",
              ".json": "application/json", ".md": "text/markdown", ".php": "text/x-php", ".py": "text/x-python",
              ".rb": "text/x-ruby", ".sh": "application/x-sh", ".tex": "text/x-tex",
              ".ts": "application/typescript", ".txt": "text/plain"}
TEXT_TYPES = set(TEXT_MIMES)
# What libmagic may call a valid file of each binary type.
BINARY_MIMES = {
    ".pdf": {"application/pdf"},
    ".doc": {"application/msword", "application/cdfv2", "application/x-ole-storage",
             "application/vnd.ms-office"},
    ".docx": {"application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    ".pptx": {"application/vnd.openxmlformats-officedocument.presentationml.presentation"},
}
# Office files written by some tools are seen as plain zips: the part inside decides.
OOXML_PART = {".docx": "word/document.xml", ".pptx": "ppt/presentation.xml"}
TEXT_LIKE_MIMES = {"application/json", "application/javascript", "application/x-sh",
                   "application/x-shellscript", "application/typescript", "application/x-php",
                   "application/x-empty", "inode/x-empty"}
_NAMES = {".pdf": "PDF", ".doc": "Word 97-2003", ".docx": "Word", ".pptx": "PowerPoint"}


class MagicUnavailable(Exception):
    """libmagic could not be loaded."""


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
        magic.magic_setflags(quick.cookie, magic.MAGIC_MIME_TYPE | magic.MAGIC_MIME_ENCODING
                             | magic.MAGIC_NO_CHECK_SOFT)
        return magic.Magic(mime=True), quick
    except (ImportError, OSError) as exc:  # python-magic raises ImportError when libmagic is absent
        raise MagicUnavailable(
            f"libmagic is not installed ({exc}); install it with 'apt-get install libmagic1' "
            "(Debian/Ubuntu), 'dnf install file-libs' or 'brew install libmagic'") from None


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

    def check(self, path: Path, size: int) -> Verdict:
        ext = path.suffix.lower()
        if ext not in self.types:
            allowed = " ".join(sorted(self.types))
            return Verdict(False, "", f"type {ext or '(no extension)'} is not supported by file_search "
                                      f"(supported: {allowed})")
        if size == 0:
            return Verdict(False, "", "empty file")
        if size > self.max_size:
            return Verdict(False, "", f"too large: {size:,} bytes, the limit is {self.max_size:,} bytes")
        full_magic, quick_magic = self._magic()
        # libmagic reports a symlink as inode/symlink: look at what it points to (scan kept it in the root).
        target = os.path.realpath(path) if path.is_symlink() else str(path)
        try:
            if ext in TEXT_TYPES:
                mime, _, charset = quick_magic.from_file(target).lower().partition("; charset=")
                if mime.startswith("text/") or mime in TEXT_LIKE_MIMES:
                    return self._check_text(path, TEXT_MIMES[ext], charset)
                mime = full_magic.from_file(target).lower()  # only to name what it is instead
                if mime.startswith("text/") or mime in TEXT_LIKE_MIMES:
                    return self._check_text(path, TEXT_MIMES[ext], "")
                return Verdict(False, mime, f"content is {mime}, not text as {ext} should be")
            return _check_binary(path, ext, full_magic.from_file(target).lower())
        except OSError as exc:
            return Verdict(False, "", f"cannot read: {exc.strerror or exc}")
        except Exception as exc:  # libmagic errors are plain exceptions
            return Verdict(False, "", f"cannot identify the content: {exc}")

    def _check_text(self, path: Path, mime: str, encoding: str) -> Verdict:
        candidates = ["utf-16"] if encoding.startswith("utf-16") else ["utf-8"]
        try:
            for name in candidates:
                if _decodes(path, name):
                    return Verdict(True, mime)
        except OSError as exc:
            return Verdict(False, mime, f"cannot read: {exc.strerror or exc}")
        seen = f" (looks like {encoding})" if encoding and encoding not in ("binary", "unknown-8bit") else ""
        return Verdict(False, mime, f"text is not valid UTF-8, UTF-16 or ASCII{seen}: "
                                    "save it as UTF-8 to have it indexed")


def _decodes(path: Path, encoding: str) -> bool:
    """Decode the whole file in pieces; memory stays flat."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _check_binary(path: Path, ext: str, mime: str) -> Verdict:
    if mime in BINARY_MIMES[ext]:
        return Verdict(True, mime)
    if ext in OOXML_PART and mime in ("application/zip", "application/octet-stream"):
        try:
            with zipfile.ZipFile(path) as archive:
                if OOXML_PART[ext] in archive.namelist():
                    return Verdict(True, next(iter(BINARY_MIMES[ext])))
        except (zipfile.BadZipFile, OSError):
            pass
        return Verdict(False, mime, f"a zip archive that is not a {_NAMES[ext]} document")
    return Verdict(False, mime, f"content is {mime}, not a {_NAMES[ext]} document as {ext} says")
