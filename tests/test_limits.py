"""The one table of file types and the API's limits, as config, validation and extraction read them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest import validate
from ingest.config import ConfigError, Settings, parse
from ingest.limits import FILE_TYPES, MAX_ATTRIBUTE_VALUE, SUPPORTED_TYPES
from ingest.remote.filters import validate_attributes
from ingest.remote.local import extract


def test_the_table_is_the_documented_list_of_types():
    documented = {
        ".c": "text/x-c",
        ".cpp": "text/x-c++",
        ".cs": "text/x-csharp",
        ".css": "text/css",
        ".doc": "application/msword",
        ".go": "text/x-golang",
        ".html": "text/html",
        ".java": "text/x-java",
        ".js": "text/javascript",
        ".json": "application/json",
        ".md": "text/markdown",
        ".pdf": "application/pdf",
        ".php": "text/x-php",
        ".py": "text/x-python",
        ".rb": "text/x-ruby",
        ".sh": "application/x-sh",
        ".tex": "text/x-tex",
        ".ts": "application/typescript",
        ".txt": "text/plain",
    }
    assert {ext: t.mime for ext, t in FILE_TYPES.items() if ext not in (".docx", ".pptx")} == documented
    assert "wordprocessingml" in FILE_TYPES[".docx"].mime and "presentationml" in FILE_TYPES[".pptx"].mime
    assert not {".csv", ".xlsx", ".xml"} & set(SUPPORTED_TYPES)


def test_validation_extraction_and_config_read_the_same_table():
    assert validate.TEXT_TYPES | set(validate.BINARY_MIMES) == set(FILE_TYPES)
    assert set(validate.OOXML_PART) == {".docx", ".pptx"}
    assert set(FILE_TYPES) == extract.SUPPORTED_EXTENSIONS
    assert {extract.MIME_TO_EXT[t.mime] for t in FILE_TYPES.values()} == set(FILE_TYPES)
    assert Settings().types == SUPPORTED_TYPES
    with pytest.raises(ConfigError, match=re.escape("'.csv' is not a type file_search accepts")):
        parse({"limits": {"types": [".md", ".csv"]}}, "ingest.toml", Path())


def test_one_attribute_length_everywhere():
    validate_attributes({"k": "x" * MAX_ATTRIBUTE_VALUE})
    with pytest.raises(ValueError, match=str(MAX_ATTRIBUTE_VALUE)):
        validate_attributes({"k": "x" * (MAX_ATTRIBUTE_VALUE + 1)})
    too_long = {"stores": [{"name": "kb", "attributes": {"team": "x" * (MAX_ATTRIBUTE_VALUE + 1)}}]}
    with pytest.raises(ConfigError, match=f"≤ {MAX_ATTRIBUTE_VALUE} characters"):
        parse(too_long, "ingest.toml", Path())
