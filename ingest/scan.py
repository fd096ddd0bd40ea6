"""Walk roots, apply include/exclude, take stat fingerprints, hash only what moved."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ingest import spread
from ingest.config import Root
from ingest.globs import BAD_NAME, NameMatcher, glob_match, is_ignored_name, printable, unencodable
from ingest.mounts import NETWORK_FS, filesystem_type
from ingest.observe import folder_digest, inode_of, same_stat
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
Digests = Mapping[str, tuple[str, int]]  # folder ('' or 'a/b/') -> (digest, files) recorded when all were settled
Part = tuple[
    list[Seen], list[tuple[str | None, int, int]], dict[str, int], dict[str, tuple[str, int]], list[str], list[Problem]
]
SettledFor = Callable[[Mapping[str, int]], Settled]  # the settled rows outside the vouched folders given


@dataclass(frozen=True)
class FolderDigests:
    """The digests recorded for a root's folders, and the context (store, share or not) they were taken in."""

    known: Digests
    context: str


@dataclass
class ScanResult:
    root: Root
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    missing: bool = False  # the root (or a scoped prefix's parent) does not exist or is not a directory
    calm: list[str] = field(default_factory=list)  # files whose stat matched the `settled` fingerprint given
    seen: list[Seen] = field(default_factory=list)  # every file found, in walk order, until sort_out
    # Each folder listed whole: (folder, start, end) of its files in `seen` (folder None: a scoped file).
    folders: list[tuple[str | None, int, int]] = field(default_factory=list)
    vouched: dict[str, int] = field(default_factory=dict)  # folders whose digest matched -> their files
    digests: dict[str, tuple[str, int]] = field(default_factory=dict)  # the other folders' digests now
    whole: list[str] = field(default_factory=list)  # folders not vouched whose every file was calm
    unsure: list[str] = field(default_factory=list)  # settled paths the walk did not find calm
    # False: a vouched folder's files are counted (in `vouched`), not listed in calm, where no one lists
    # unchanged files (a pass that is not a dry run): 100,000 paths fewer to build, send and keep.
    list_vouched: bool = True

    @property
    def calm_count(self) -> int:
        return len(self.calm) + (0 if self.list_vouched else sum(self.vouched.values()))

    def add(self, path: str, st: os.stat_result, network: bool) -> None:
        self.seen.append((path, st.st_size, st.st_mtime_ns, inode_of(st, network)))

    def vouch(self, digests: FolderDigests) -> None:
        """Find the folders whose digest matches the recorded one: their files are calm without a row."""
        known, seen = digests.known.get, self.seen
        for folder, start, end in self.folders:
            if folder is None or folder in self.vouched or folder in self.digests:
                continue  # a scoped file, or a folder a process of a spread walk vouched for already
            now = (folder_digest(digests.context, seen[start:end]), end - start)
            if known(folder) == now:
                self.vouched[folder] = end - start
            else:
                self.digests[folder] = now

    def sort_out(self, settled: Settled) -> None:
        """Split what the walk found into calm paths (the observe rule: the stat matches a settled
        row, or the folder's digest vouches for it) and entries to look at."""
        key, entries, calm, known_at, vouched = self.root.key, self.entries, self.calm, settled.get, self.vouched
        compared: set[str] = set()
        for folder, start, end in self.folders:
            if folder in vouched:
                if self.list_vouched:
                    calm += [seen[0] for seen in self.seen[start:end]]
                continue
            before = len(entries)
            for seen in self.seen[start:end]:
                known = known_at(seen[0])
                if known is not None and same_stat(known, seen[1], seen[2], seen[3]):
                    calm.append(seen[0])
                    compared.add(seen[0])
                else:
                    entries.append(Entry(key, *seen))
            if folder is not None and len(entries) == before:
                self.whole.append(folder)
        self.unsure = [path for path in settled if path not in compared]
        self.seen, self.folders = [], []

    def settled_folders(self, settled: Settled, others: Iterable[str]) -> dict[str, tuple[str, int]]:
        """The digests to record: folders whose every file was calm by its row, holding no other row."""
        if not self.whole:
            return {}
        rows: dict[str, int] = {}
        for path in (*settled, *others):
            folder = path[: path.rfind("/") + 1]
            rows[folder] = rows.get(folder, 0) + 1
        return {f: self.digests[f] for f in self.whole if f in self.digests and rows.get(f, 0) == self.digests[f][1]}

    def part(self) -> Part:
        """What a process of a spread walk sends back (after vouch): the vouched folders' files as paths."""
        seen: list[Seen] = []
        folders: list[tuple[str | None, int, int]] = []
        calm: list[str] = []
        for folder, start, end in self.folders:
            if folder in self.vouched:
                if self.list_vouched:
                    calm += [item[0] for item in self.seen[start:end]]
            else:
                folders.append((folder, len(seen), len(seen) + end - start))
                seen += self.seen[start:end]
        return seen, folders, self.vouched, self.digests, calm, self.problems

    def merge(self, part: Part) -> None:
        seen, folders, vouched, digests, calm, problems = part
        base = len(self.seen)
        self.seen += seen
        self.folders += [(folder, base + start, base + end) for folder, start, end in folders]
        self.vouched.update(vouched)
        self.digests.update(digests)
        self.calm += calm
        self.problems += problems

    @property
    def has_errors(self) -> bool:
        return self.missing or any(p.is_error for p in self.problems)


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
    return skip, lambda rel: not unencodable(rel) and not _excluded_folder(root, rel)


def _excluded_folder(root: Root, path: str) -> bool:
    """A folder an exclude pattern like 'lost+found/**' covers whole is not walked at all."""
    return any(p.endswith("/**") and glob_match(path, p[:-3]) for p in root.exclude)


def scan(
    root: Root,
    prefixes: Iterable[str] = ("",),
    network: bool | None = None,
    settled: Settled | SettledFor | None = None,
    threads: int | None = None,
    digests: FolderDigests | None = None,
    list_vouched: bool = True,
) -> ScanResult:
    """Every wanted file under root (or under the given relative prefixes of it). With `settled`, a
    file whose stat still matches goes to result.calm as a bare path instead of result.entries: the
    no-op pass over a large share is this. With `digests`, a folder whose digest matches the recorded
    one is calm whole, its rows unread (its files only counted, with list_vouched False). `settled`
    may be a callable (a manifest read running beside the walk): it is asked, once the walk is done,
    for the rows outside the vouched folders. `threads` > 1 overlaps the listings and stats (default:
    as many as the filesystem's latency calls for)."""
    result = ScanResult(root=root, list_vouched=list_vouched)
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
                if threads == 1 and not prefix:
                    _walk_spread(root, walker, start, real_root, network, result, digests)
                else:
                    _walk(root, walker, [(start, prefix)], real_root, network, result)
            else:
                first = len(result.seen)
                _consider(root, prefix, start, st, real_root, network, result)
                result.folders.append((None, first, len(result.seen)))
    if digests is not None:
        result.vouch(digests)
    result.sort_out((settled(result.vouched) if callable(settled) else settled) or {})
    return result


def _collapse(prefixes: Iterable[str]) -> list[str]:
    """Drop prefixes that lie inside another one."""
    ordered = sorted({p.strip("/") for p in prefixes}, key=len)
    kept: list[str] = []
    for p in ordered:
        if not any(k == "" or p == k or p.startswith(k + "/") for k in kept):
            kept.append(p)
    return kept


FILE_TYPE = stat.S_IFMT(0o177777)  # the bits of st_mode that say what kind of entry it is


SPREAD_FOLDERS = 4  # per process: the folders of one level that a walk is spread at


def _walk_spread(
    root: Root,
    walker: Walker,
    start: Path,
    real_root: str,
    network: bool,
    result: ScanResult,
    digests: FolderDigests | None,
) -> None:
    """A whole root on a local disk: walked level by level until one level has folders enough for every
    process of a spread (see ingest.spread), then each process walks (and vouches for) its share."""
    n = spread.processes()
    level: list[tuple[str | Path, str]] = [(start, "")]
    if n == 1:
        _walk(root, walker, level, real_root, network, result)
        return
    while level and len(level) < SPREAD_FOLDERS * n:
        below: list[tuple[str | Path, str]] = []
        _walk(root, walker, level, real_root, network, result, below)
        level = below
    if not level:
        return
    if digests is not None:
        folder_digest(digests.context, [])  # its imports, before the fork: a child imports nothing

    def share(folders: list[tuple[str | Path, str]]) -> Part:
        part = ScanResult(root=root, list_vouched=result.list_vouched)
        _walk(root, walker, folders, real_root, network, part)
        if digests is not None:
            part.vouch(digests)
        return part.part()

    for part in spread.spread(level, share, n):
        result.merge(part)


def _walk(
    root: Root,
    walker: Walker,
    stack: list[tuple[str | Path, str]],
    real_root: str,
    network: bool,
    result: ScanResult,
    below: list[tuple[str | Path, str]] | None = None,
) -> None:
    """Walk the folders of the stack and every folder under them; with `below`, only the stack's
    folders, leaving their subfolders there."""
    # The per-file path is the hot loop of every no-op pass: the common case (a world-readable
    # regular file with an ASCII name, no globs to apply) is decided inline, with the mode's bits
    # tested in place; everything else goes through _odd and _consider.
    plain_root = root.include == ("**",) and not root.exclude
    key, seen, folders, appended = root.key, result.seen, result.folders, result.seen.append
    inodes = not network
    S_IFMT, S_IFREG, S_IFDIR, S_IROTH, stat_result = FILE_TYPE, stat.S_IFREG, stat.S_IFDIR, stat.S_IROTH, os.stat_result
    push = (stack if below is None else below).append
    while stack:
        folder, rel = stack.pop()
        try:
            pairs = walker.folder(folder, rel)
        except OSError as exc:
            result.problems.append(Problem(key, rel or ".", f"cannot list folder: {exc.strerror}", True))
            continue
        head = f"{rel}/" if rel else ""
        plain = plain_root and "\n" not in head and "\r" not in head
        first = len(seen)
        for item, st in pairs:
            name = item.name
            if type(st) is not stat_result or not name.isascii():
                _odd(root, item, st, head, real_root, network, result, push)
                continue
            mode = st.st_mode
            if mode & S_IFMT == S_IFREG and plain and mode & S_IROTH and "\n" not in name and "\r" not in name:
                appended((head + name, st.st_size, st.st_mtime_ns, st.st_ino if inodes else 0))  # ScanResult.add
            elif mode & S_IFMT == S_IFDIR:
                if not _excluded_folder(root, head + name):
                    push((item.path, head + name))
            else:
                _consider(root, head + name, item.path, st, real_root, network, result, parts_checked=True)
        folders.append((head, first, len(seen)))


def _odd(
    root: Root,
    item: os.DirEntry,
    st: os.stat_result | OSError,
    head: str,
    real_root: str,
    network: bool,
    result: ScanResult,
    push: Callable[[tuple[str | Path, str]], None],
) -> None:
    """An entry the walk's inline test does not settle: a name that is not ASCII, a stat that failed."""
    path = head + item.name
    if unencodable(item.name):
        # A folder's files cannot be seen: an error, so that they do not look deleted.
        result.problems.append(Problem(root.key, printable(path), BAD_NAME, item.is_dir(follow_symlinks=False)))
    elif isinstance(st, OSError):
        result.problems.append(Problem(root.key, path, f"cannot read: {st.strerror}", True))
    elif stat.S_ISDIR(st.st_mode):
        if not _excluded_folder(root, path):
            push((item.path, path))
    else:
        _consider(root, path, item.path, st, real_root, network, result, parts_checked=True)


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
    if unencodable(path):
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
