"""The one copy of each helper the test files share."""

from __future__ import annotations

from pathlib import Path

from ingest.manifest import FileRow, Manifest


def manifest_rows(state_dir: Path, backend: str = "local") -> dict[str, FileRow]:
    """Every manifest row by path, read as another process would (the embedded store's manifest, or
    the OpenAI backend's with backend="openai")."""
    m = Manifest(state_dir / ("local/manifest.db" if backend == "local" else "manifest.db"))
    try:
        return {row.path: row for row in m.rows().values()}
    finally:
        m.close()
