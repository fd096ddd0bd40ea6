"""Walk roots, apply include/exclude, take stat fingerprints, hash only what moved."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ingest.config import DEFAULT_IGNORES, Root
from ingest.mounts import NETWORK_FS, filesystem_type
from ingest.observe import inode_of, same_stat
from ingest.walk import Walker, threads_for


class Entry(NamedTuple):
    """One regular file found under a root (a tuple: a large tree makes a great many of them)."""

    root: str
    path: str  # relative, '/'-separated
    size: int
    mtime_ns: int
    inode: int  # 0 where the inode is not a stable identity (network filesystems)


@dataclass(frozen=True)
class Problem:
    """A path the scan saw but could not treat as a document: it gets a recorded reason."""

    root: str
    path: str
    reason: str
    is_error: bool  # an error (unreadable) holds deletions back; a refusal (FIFO, symlink out) does not


Seen = tuple[str, int, int, int]  # (path, size, mtime_ns, inode) of a file the walk found
Settled = Mapping[str, tuple]  # path -> (size, mtime_ns, inode, ...) of files known unchanged when last hashed


@dataclass
class ScanResult:
    root: Root
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    missing: bool = False  # the root (or a scoped prefix's parent) does not exist or is not a directory
    calm: list[str] = field(default_factory=list)  # files whose stat matched the `settled` fingerprint given
    seen: list[Seen] = field(default_factory=list)  # every file found, in walk order, until sort_out

    def add(self, path: str, st: os.stat_result, network: bool) -> None:
        self.seen.append((path, st.st_size, st.st_mtime_ns, inode_of(st, network)))

    def sort_out(self, settled: Settled) -> None:
        """Split what the walk found into calm paths (the observe rule: the stat matches a settled
        row) and entries to look at."""
        key, entries, calm, known_at = self.root.key, self.entries, self.calm, settled.get
        for seen in self.seen:
            known = known_at(seen[0])
            if known is not None and same_stat(known, seen[1], seen[2], seen[3]):
                calm.append(seen[0])
            else:
                entries.append(Entry(key, *seen))
        self.seen = []

    @property
    def has_errors(self) -> bool:
        return self.missing or any(p.is_error for p in self.problems)


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """'**' spans folders, '*' and '?' stay within one; a pattern without '/' matches any basename."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def glob_match(path: str, pattern: str) -> bool:
    if "/" not in pattern and pattern != "**":
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return bool(_glob_regex(pattern).match(path))


class NameMatcher:
    """A test of names against fnmatch patterns. It runs on every name in every pass, so the plain
    shapes ('x*', '*x', 'x') are string tests, only the others go to a regular expression, and a
    folder's names are first tested together: in most folders none can match, and one search of the
    joined names says so."""

    def __init__(self, patterns: Iterable[str]):
        prefixes, suffixes, exact, others = [], [], set(), []
        for p in patterns:
            if not any(c in p for c in "*?["):
                exact.add(p)
            elif p.endswith("*") and not any(c in p[:-1] for c in "*?["):
                prefixes.append(p[:-1])
            elif p.startswith("*") and not any(c in p[1:] for c in "*?["):
                suffixes.append(p[1:])
            else:
                others.append(p)
        rest = re.compile("|".join(fnmatch.translate(p) for p in others)) if others else None
        # The others only for a name that starts as one of them does (none may start with a wildcard).
        heads = tuple(re.split(r"[*?\[]", p, maxsplit=1)[0] for p in others)
        if "" in heads:
            heads = ("",)
        starts, ends = tuple(prefixes), tuple(suffixes)
        # What the joined names ("\0"-separated: no name holds a NUL) contain if any name can match.
        self._marks = (
            *("\0" + p for p in (*starts, *heads)),
            *(e + "\0" for e in ends),
            *("\0" + e + "\0" for e in exact),
        )

        def matches(name: str) -> bool:
            if name.startswith(starts) or name.endswith(ends) or name in exact:
                return True
            return rest is not None and name.startswith(heads) and rest.match(name) is not None

        self.matches = matches

    def __call__(self, name: str) -> bool:
        return self.matches(name)

    def none_in(self, names: list[str]) -> bool:
        """True when no name of the list can match: a few substring searches instead of a test each."""
        joined = "\0" + "\0".join(names) + "\0"
        return not any(mark in joined for mark in self._marks)


is_ignored_name = NameMatcher(DEFAULT_IGNORES)


def wanted(root: Root, path: str, parts_checked: bool = False) -> bool:
    """parts_checked: the walk already dropped ignored names on the way down; only globs are left."""
    if root.ignore_defaults and not parts_checked and any(is_ignored_name(p) for p in path.split("/")):
        return False
    if root.include != ("**",) and not any(glob_match(path, p) for p in root.include):
        return False
    return not any(glob_match(path, p) for p in root.exclude)


def walk_rules(root: Root) -> tuple[NameMatcher | None, Callable[[str], bool]]:
    """What a walk of root never looks at: (names to skip, whether to go into a relative folder)."""
    skip = is_ignored_name if root.ignore_defaults else None
    return skip, lambda rel: not _unencodable(rel) and not _excluded_folder(root, rel)


def _excluded_folder(root: Root, path: str) -> bool:
    """A folder an exclude pattern like 'lost+found/**' covers whole is not walked at all."""
    return any(p.endswith("/**") and glob_match(path, p[:-3]) for p in root.exclude)


def scan(
    root: Root,
    prefixes: Iterable[str] = ("",),
    network: bool | None = None,
    settled: Settled | Callable[[], Settled] | None = None,
    threads: int | None = None,
) -> ScanResult:
    """Every wanted file under root (or under the given relative prefixes of it). With `settled`, a
    file whose stat still matches goes to result.calm as a bare path instead of result.entries: the
    no-op pass over a large share is this. `settled` may be a callable (a manifest read running beside
    the walk): it is asked for once the walk is done. `threads` > 1 overlaps the listings and stats
    (default: as many as the filesystem's latency calls for)."""
    result = ScanResult(root=root)
    if not root.path.is_dir():
        result.missing = True
        return result
    if network is None or threads is None:
        fstype = filesystem_type(root.path)
        network = fstype in NETWORK_FS if network is None else network
        threads = threads_for(fstype, network) if threads is None else threads
    real_root = os.path.realpath(root.path)
    with Walker(threads, *walk_rules(root)) as walker:
        for prefix in _collapse(prefixes):
            start = root.path / prefix if prefix else root.path
            parent = os.path.realpath(start.parent) if prefix else real_root
            if not (parent == real_root or parent.startswith(real_root.rstrip("/") + "/")):
                # A folder on the way is a symlink out of the root (polling observers follow them).
                result.problems.append(
                    Problem(root.key, prefix, "symlink points outside the root: not followed", False)
                )
                continue
            try:
                st = os.lstat(start)
            except FileNotFoundError:
                continue  # a scoped path that is gone: the plan sees its rows as deleted
            except OSError as exc:
                result.problems.append(Problem(root.key, prefix, f"cannot read: {exc.strerror}", True))
                continue
            if stat.S_ISDIR(st.st_mode):
                _walk(root, walker, start, prefix, real_root, network, result)
            else:
                _consider(root, prefix, start, st, real_root, network, result)
    result.sort_out((settled() if callable(settled) else settled) or {})
    return result


def _collapse(prefixes: Iterable[str]) -> list[str]:
    """Drop prefixes that lie inside another one."""
    ordered = sorted({p.strip("/") for p in prefixes}, key=len)
    kept: list[str] = []
    for p in ordered:
        if not any(k == "" or p == k or p.startswith(k + "/") for k in kept):
            kept.append(p)
    return kept


def _walk(
    root: Root, walker: Walker, start: Path, prefix: str, real_root: str, network: bool, result: ScanResult
) -> None:
    # The per-file path is the hot loop of every no-op pass: the common case (a world-readable
    # regular file, no globs to apply) is decided inline; everything else goes through _consider.
    plain = root.include == ("**",) and not root.exclude
    key, seen = root.key, result.seen
    S_ISDIR, S_ISREG, S_IROTH = stat.S_ISDIR, stat.S_ISREG, stat.S_IROTH
    stack: list[tuple[str | Path, str]] = [(start, prefix)]
    while stack:
        folder, rel = stack.pop()
        try:
            pairs = walker.folder(folder, rel)
        except OSError as exc:
            result.problems.append(Problem(key, rel or ".", f"cannot list folder: {exc.strerror}", True))
            continue
        head = f"{rel}/" if rel else ""
        for item, st in pairs:
            name = item.name
            path = head + name
            if not name.isascii() and _unencodable(name):
                # A folder's files cannot be seen: an error, so that they do not look deleted.
                result.problems.append(Problem(key, printable(path), BAD_NAME, item.is_dir(follow_symlinks=False)))
                continue
            if isinstance(st, OSError):
                result.problems.append(Problem(key, path, f"cannot read: {st.strerror}", True))
                continue
            mode = st.st_mode
            if S_ISDIR(mode):
                if not _excluded_folder(root, path):
                    stack.append((item.path, path))
            elif plain and S_ISREG(mode) and mode & S_IROTH and "\n" not in path and "\r" not in path:
                seen.append((path, st.st_size, st.st_mtime_ns, inode_of(st, network)))  # ScanResult.add
            else:
                _consider(root, path, item.path, st, real_root, network, result, parts_checked=True)


BAD_NAME = "the name is not valid UTF-8 (an old or foreign encoding): rename it to have it indexed"


def _unencodable(name: str) -> bool:
    """True for a name whose bytes are not UTF-8: Python keeps them as lone surrogates, which
    nothing downstream (the manifest, the API, a JSON report) can carry."""
    if name.isascii():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(path: str) -> str:
    """The name with its undecodable bytes shown as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _consider(
    root: Root,
    path: str,
    full: str | Path,
    st: os.stat_result,
    real_root: str,
    network: bool,
    result: ScanResult,
    parts_checked: bool = False,
) -> None:
    if _unencodable(path):
        result.problems.append(Problem(root.key, printable(path), BAD_NAME, False))
        return
    if "\n" in path or "\r" in path:
        result.problems.append(Problem(root.key, path, "file names with line breaks are not supported", False))
        return
    if not wanted(root, path, parts_checked):
        return
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.path.realpath(full, strict=True)
            st = os.stat(full)
        except (OSError, RuntimeError):
            result.problems.append(Problem(root.key, path, "broken symlink or symlink loop", False))
            return
        if not (target == real_root or target.startswith(real_root.rstrip("/") + "/")):
            result.problems.append(Problem(root.key, path, "symlink points outside the root: not followed", False))
            return
        if stat.S_ISDIR(st.st_mode):
            return  # the folder it points to is inside the root and scanned there
    if not stat.S_ISREG(st.st_mode):
        result.problems.append(Problem(root.key, path, "not a regular file (FIFO, socket or device)", False))
        return
    # World-readable needs no check; otherwise ask (ownership, groups, ACLs decide).
    if not st.st_mode & stat.S_IROTH and not os.access(full, os.R_OK):
        # An error, not a refusal: the remote copy stays until the file can be read again.
        result.problems.append(Problem(root.key, path, "cannot read: permission denied", True))
        return
    result.add(path, st, network)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Stream the bytes; memory stays flat whatever the file size."""
    import hashlib  # here: a pass with nothing to hash (a no-op, a search) does not load OpenSSL

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def iter_files(results: Iterable[ScanResult]) -> Iterator[Entry]:
    for result in results:
        yield from result.entries
