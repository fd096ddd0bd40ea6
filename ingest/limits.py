"""The API's limits and the one table of the file types file_search takes (/work/shared/openai-api.md):
config, validation, extraction and the embedded store read them here."""

from __future__ import annotations

from dataclasses import dataclass

MAX_FILE_SIZE = 512 * 1024 * 1024  # bytes per uploaded file
MAX_FILE_TOKENS = 5_000_000  # per file for file search: more is `invalid_file` "too large"
BATCH_LIMIT = 500  # ids per file batch: the guide's figure; the spec's 2,000 is not honoured everywhere
MAX_BATCH_FILES = 2_000  # what the spec allows in one batch (the embedded store refuses more)
MAX_ATTRIBUTES = 16  # keys per file
MAX_ATTRIBUTE_KEY = 64  # characters
MAX_ATTRIBUTE_VALUE = 256  # characters of a string value: the safe figure (512 is documented, not honoured everywhere)
MAX_METADATA = 16  # pairs of a store's metadata
MAX_METADATA_VALUE = 512  # characters of a metadata value
MAX_SEARCH_RESULTS = 50
EXPIRES_AFTER_DAYS = (1, 365)
CHUNK_TOKENS = (100, 4096)  # a static chunking_strategy's max_chunk_size_tokens; overlap ≤ half
AUTO_CHUNK_TOKENS, AUTO_CHUNK_OVERLAP = 800, 400  # what "auto" chunking means


@dataclass(frozen=True)
class FileType:
    """One type file_search takes."""

    ext: str
    mime: str  # the MIME type the API documents for it: what the manifest records
    text: bool  # text (decoded and checked for encoding) or a binary document (checked by libmagic)
    extractor: str | None  # how the embedded store reads it: text, html, pdf, docx, pptx (None: it cannot)
    magic: frozenset[str] = frozenset()  # a binary type: what libmagic may call a valid file of it
    name: str = ""  # a binary type: how a person calls it
    zip_part: str | None = None  # an Office Open XML type: the part that tells it from any zip


def _text(ext: str, mime: str, extractor: str = "text") -> FileType:
    return FileType(ext, mime, True, extractor)


_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
FILE_TYPES: dict[str, FileType] = {
    t.ext: t
    for t in (
        _text(".c", "text/x-c"),
        _text(".cpp", "text/x-c++"),
        _text(".cs", "text/x-csharp"),
        _text(".css", "text/css"),
        FileType(
            ".doc",
            "application/msword",
            False,
            None,
            frozenset(
                {"application/msword", "application/cdfv2", "application/x-ole-storage", "application/vnd.ms-office"}
            ),
            "Word 97-2003",
        ),
        FileType(".docx", _DOCX, False, "docx", frozenset({_DOCX}), "Word", "word/document.xml"),
        _text(".go", "text/x-golang"),
        _text(".html", "text/html", "html"),
        _text(".java", "text/x-java"),
        _text(".js", "text/javascript"),
        _text(".json", "application/json"),
        _text(".md", "text/markdown"),
        FileType(".pdf", "application/pdf", False, "pdf", frozenset({"application/pdf"}), "PDF"),
        _text(".php", "text/x-php"),
        FileType(".pptx", _PPTX, False, "pptx", frozenset({_PPTX}), "PowerPoint", "ppt/presentation.xml"),
        _text(".py", "text/x-python"),
        _text(".rb", "text/x-ruby"),
        _text(".sh", "application/x-sh"),
        _text(".tex", "text/x-tex"),
        _text(".ts", "application/typescript"),
        _text(".txt", "text/plain"),
    )
}
# The extensions file_search accepts; .csv/.xlsx/.xml and images are not among them.
SUPPORTED_TYPES = tuple(FILE_TYPES)
BY_MIME = {t.mime: t for t in FILE_TYPES.values()}
