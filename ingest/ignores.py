"""`ingest ignore`: a file with a permanent problem, acknowledged, is left alone until it changes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import ConfigError
from ingest.manifest import PROBLEM_STATES, Manifest
from ingest.scan import Entry, Problem


@dataclass(frozen=True)
class Ignored:
    path: str  # root/path, as shown
    reason: str | None  # the problem acknowledged
    done: bool  # False: there was nothing to undo


def split(
    root: str,
    base: Path,
    entries: list[Entry],
    problems: list[Problem],
    ignores: dict[tuple[str, str], dict[str, Any]],
) -> tuple[list[Entry], list[Problem], list[str], list[str]]:
    """The entries and problems left to plan, the paths still ignored, and the paths whose ignore
    lapsed (their size or mtime moved: the file changed, so it is looked at again)."""
    mine = {path: how for (r, path), how in ignores.items() if r == root}
    if not mine:
        return entries, problems, [], []
    ignored, lapsed = [], []

    def still(path: str, size: int | None, mtime_ns: int | None) -> bool:
        how = mine.get(path)
        if how is None:
            return False
        if (how["size"], how["mtime_ns"]) == (size, mtime_ns):
            ignored.append(path)
            return True
        lapsed.append(path)
        return False

    kept = [e for e in entries if not still(e.path, e.size, e.mtime_ns)]
    left = []
    for problem in problems:
        try:
            st = os.lstat(base / problem.path)
        except OSError:
            st = None
        if st is None or not still(problem.path, st.st_size, st.st_mtime_ns):
            left.append(problem)
    return kept, left, ignored, lapsed


def ignore(manifest: Manifest, roots: set[str], paths: list[Path], undo: bool = False) -> list[Ignored]:
    """Record (or, with undo, drop) an acknowledgement for each file: only files ingest knows with a
    problem. Every path is checked before any is recorded, so a refused command changes nothing."""
    out, todo = [], []
    for raw in paths:
        path = Path(os.path.abspath(raw.expanduser()))
        owner = next((r for r in sorted(roots, key=len, reverse=True) if Path(r) in path.parents), None)
        if owner is None and str(path) in roots:  # a root: the folder itself, not a file in it
            raise ConfigError(
                f"{path}: a folder; ignore names files (leave a folder out with sync --exclude or ingest forget)"
            )
        if owner is None:
            raise ConfigError(f"{path}: not inside a folder ingest syncs ({', '.join(sorted(roots)) or 'none yet'})")
        rel = path.relative_to(owner).as_posix()
        row = manifest.row(owner, rel)
        if undo:
            out.append(Ignored(str(path), row.reason if row else None, manifest.unignore(owner, rel)))
            continue
        if path.is_dir():
            raise ConfigError(
                f"{path}: a folder; ignore names files (leave a folder out with sync --exclude or ingest forget)"
            )
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot ignore it: {exc.strerror or exc}") from None
        if row is None:
            raise ConfigError(f"{path}: ingest has not seen this file yet; sync first, then ignore what it reports")
        if row.state not in PROBLEM_STATES and not row.reason:
            raise ConfigError(
                f"{path}: not rejected or failed ({row.state}), so there is nothing to acknowledge; "
                "ignore takes the files sync, status or verify report with a problem "
                "(leave a file out with sync --exclude)"
            )
        todo.append((owner, rel, st, row.reason, str(path)))
    for owner, rel, st, reason, shown in todo:
        manifest.ignore(owner, rel, st.st_size, st.st_mtime_ns, reason)
        out.append(Ignored(shown, reason, True))
    return out
