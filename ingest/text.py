"""Uploads of extracted text, for types a server accepts but cannot read (llama-stack: DOCX, PPTX, HTML).

The text is what the embedded store's extractors make of the file; it goes up under the real name plus
".txt", so the server reads it as text, while the attributes keep the real path and the manifest the
real file's hash."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from ingest.config import Settings
from ingest.remote.local.extract import extract_text
from ingest.remote.profile import Profile

READABLE = (".html", ".pdf", ".docx", ".pptx")  # what ingest's extractors read (not legacy .doc)


class TextUploads:
    def __init__(self, settings: Settings, profile: Profile):
        self.settings, self.profile = settings, profile
        self._dir: Path | None = None
        self._n = itertools.count()

    def wanted(self, store: str, ext: str) -> bool:
        """Per store: upload_text = "auto" (the types this server cannot read), true (every document type
        ingest can read), false (never)."""
        mode = self.settings.store_spec(store).upload_text
        types = self.profile.unreadable if mode == "auto" else READABLE if mode is True else ()
        return ext.lower() in types

    def source(self, path: Path, store: str, mime: str | None) -> tuple[Path, str]:
        """What to upload for `path`, and under which name. Raises ExtractError, OSError."""
        if not self.wanted(store, path.suffix):
            return path, path.name
        text = extract_text(path, path.suffix)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ingest-text-"))
        out = self._dir / f"{next(self._n)}.txt"
        out.write_text(text, encoding="utf-8")
        return out, path.name + ".txt"

    def done(self, source: Path | None) -> None:
        if self._dir is not None and source is not None and source.parent == self._dir:
            source.unlink(missing_ok=True)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
