"""The scan finds every document under a root, skips temporaries, and explains what it will not read."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from ingest import mounts
from ingest import scan as scanning
from ingest.config import Root
from ingest.mounts import filesystem_type, is_network_fs
from ingest.scan import Entry, glob_match, scan
from ingest.survey import sha256_file
from tests.conftest import as_unprivileged


def touch(path: Path, text: str = "text\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def found(result) -> set[str]:
    return {e.path for e in result.entries}


def problems(result) -> dict[str, tuple[str, bool]]:
    return {p.path: (p.reason, p.is_error) for p in result.problems}


@pytest.fixture
def docs_root(tmp_path) -> Path:
    root = tmp_path / "docs"
    touch(root / "readme.md")
    touch(root / "guides" / "install.md")
    touch(root / "guides" / "deep" / "tuning.txt")
    touch(root / "drafts" / "idea.md")
    touch(root / "report.pdf")
    return root


@pytest.fixture
def shared_root():
    """A root an unprivileged user may enter (pytest's own tmp folders are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="ingest-test-"))
    base.chmod(0o755)
    root = base / "docs"
    root.mkdir(mode=0o755)
    yield root
    for folder, dirs, _ in os.walk(base):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o755)
    shutil.rmtree(base, ignore_errors=True)


def test_scan_finds_every_file_with_its_stat(docs_root):
    result = scan(Root(docs_root, "docs"), network=False)
    assert found(result) == {"readme.md", "guides/install.md", "guides/deep/tuning.txt", "drafts/idea.md", "report.pdf"}
    assert not result.problems and not result.has_errors
    entry = next(e for e in result.entries if e.path == "guides/deep/tuning.txt")
    st = os.stat(docs_root / "guides" / "deep" / "tuning.txt")
    assert entry == Entry(str(docs_root), "guides/deep/tuning.txt", st.st_size, st.st_mtime_ns, st.st_ino)


def test_on_a_network_share_the_inode_is_left_out(docs_root):
    result = scan(Root(docs_root, "docs"), network=True)
    assert len(result.entries) == 5
    assert {e.inode for e in result.entries} == {0}


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.md",
        ".git/config.txt",
        "~$report.docx",
        "draft.tmp",
        "movie.pdf.part",
        "file.pdf.crdownload",
        ".~lock.report.docx#",
        ".notes.txt.swp",
        "notes.txt.swp",
        "guides/.cache/page.html",
        "backup.txt~",
    ],
)
def test_temporaries_and_hidden_files_are_ignored_silently(docs_root, name):
    touch(docs_root / name)
    result = scan(Root(docs_root, "docs"), network=False)
    assert name not in found(result)
    assert len(result.entries) == 5 and not result.problems, "ignored, not reported"


def test_ignore_defaults_off_keeps_hidden_files(docs_root):
    touch(docs_root / ".well-known" / "about.md")
    touch(docs_root / "draft.tmp")
    result = scan(Root(docs_root, "docs", ignore_defaults=False), network=False)
    assert {".well-known/about.md", "draft.tmp"} <= found(result)


def test_include_and_exclude_globs(docs_root):
    touch(docs_root / "guides" / "secret.private.md")
    root = Root(docs_root, "docs", include=("**/*.md",), exclude=("drafts/**", "*.private.md"))
    assert found(scan(root, network=False)) == {"readme.md", "guides/install.md"}


def test_include_limited_to_one_folder(docs_root):
    root = Root(docs_root, "docs", include=("guides/**",))
    assert found(scan(root, network=False)) == {"guides/install.md", "guides/deep/tuning.txt"}


@pytest.mark.parametrize(
    "path, pattern, expected",
    [
        ("a/b/c.md", "**/*.md", True),
        ("c.md", "**/*.md", True),
        ("c.md", "*.md", True),
        ("a/b/c.md", "*.md", True),  # no '/': any basename
        ("a/c.md", "a/*.md", True),
        ("a/b/c.md", "a/*.md", False),  # '*' stays within one folder
        ("drafts/x/y.md", "drafts/**", True),
        ("old/drafts/y.md", "drafts/**", False),
        ("old/drafts/y.md", "**/drafts/**", True),
        ("a/b/c.md", "a/**/c.md", True),
        ("a/c.md", "a/**/c.md", True),
        ("a/bc.md", "a/?c.md", True),
        ("a/b/c.md", "a?b/c.md", False),
        ("anything/at/all", "**", True),
        ("notes(1).md", "notes(1).md", True),  # regex characters are literal
        ("notes1.md", "notes(1).md", False),
    ],
)
def test_glob_match(path, pattern, expected):
    assert glob_match(path, pattern) is expected


# symlinks, FIFOs, odd names -----------------------------------------------------------------------


def test_a_symlink_to_a_file_inside_the_root_is_a_document(docs_root):
    (docs_root / "latest.md").symlink_to(docs_root / "guides" / "install.md")
    result = scan(Root(docs_root, "docs"), network=False)
    entry = next(e for e in result.entries if e.path == "latest.md")
    assert entry.size == (docs_root / "guides" / "install.md").stat().st_size
    assert not result.problems


def test_a_symlink_out_of_the_root_is_refused_not_followed(docs_root, tmp_path):
    outside = touch(tmp_path / "private" / "salaries.txt")
    (docs_root / "salaries.txt").symlink_to(outside)
    (docs_root / "private").symlink_to(outside.parent)
    result = scan(Root(docs_root, "docs"), network=False)
    assert "salaries.txt" not in found(result) and "private/salaries.txt" not in found(result)
    reasons = problems(result)
    assert reasons["salaries.txt"] == ("symlink points outside the root: not followed", False)
    assert reasons["private"] == ("symlink points outside the root: not followed", False)
    assert not result.has_errors, "a refusal does not hold deletions back"


def test_a_symlink_to_a_folder_inside_the_root_is_not_scanned_twice(docs_root):
    (docs_root / "shortcut").symlink_to(docs_root / "guides")
    result = scan(Root(docs_root, "docs"), network=False)
    assert len(result.entries) == 5 and not result.problems


@pytest.mark.parametrize("make", ["loop", "broken"])
def test_broken_symlinks_and_loops_are_refused(docs_root, make):
    if make == "loop":
        (docs_root / "a.md").symlink_to(docs_root / "b.md")
        (docs_root / "b.md").symlink_to(docs_root / "a.md")
        names = ("a.md", "b.md")
    else:
        (docs_root / "gone.md").symlink_to(docs_root / "never-there.md")
        names = ("gone.md",)
    result = scan(Root(docs_root, "docs"), network=False)
    for name in names:
        assert problems(result)[name] == ("broken symlink or symlink loop", False)
    assert len(result.entries) == 5


@pytest.mark.timeout(120)
def test_a_fifo_is_refused_and_never_opened(docs_root):
    os.mkfifo(docs_root / "pipe.txt")  # opening it for reading would block: the timeout catches that
    (docs_root / "to-pipe.txt").symlink_to(docs_root / "pipe.txt")
    result = scan(Root(docs_root, "docs"), network=False)
    assert "pipe.txt" not in found(result)
    assert problems(result)["pipe.txt"] == ("not a regular file (FIFO, socket or device)", False)
    assert problems(result)["to-pipe.txt"] == ("not a regular file (FIFO, socket or device)", False)
    assert len(result.entries) == 5 and not result.has_errors


def test_a_name_with_a_line_break_is_refused(docs_root):
    touch(docs_root / "two\nlines.md")
    result = scan(Root(docs_root, "docs"), network=False)
    assert problems(result)["two\nlines.md"] == ("file names with line breaks are not supported", False)
    assert len(result.entries) == 5


def test_an_unreadable_folder_is_an_error_and_the_rest_is_still_scanned(shared_root):
    touch(shared_root / "open.md").chmod(0o644)
    locked = shared_root / "locked"
    touch(locked / "inside.md").chmod(0o644)
    locked.chmod(0o000)
    result = as_unprivileged(lambda: scan(Root(shared_root, "docs"), network=False))
    assert found(result) == {"open.md"}
    assert problems(result) == {"locked": ("cannot list folder: Permission denied", True)}
    assert result.has_errors, "an unreadable folder holds deletions back"


def test_an_unreadable_file_is_an_error_not_a_document(shared_root):
    touch(shared_root / "open.md").chmod(0o644)
    touch(shared_root / "secret.md").chmod(0o000)
    result = as_unprivileged(lambda: scan(Root(shared_root, "docs"), network=False))
    assert found(result) == {"open.md"}
    reason, is_error = problems(result)["secret.md"]
    assert is_error and "cannot read" in reason
    assert result.has_errors


def test_a_missing_root_is_reported_missing(tmp_path):
    result = scan(Root(tmp_path / "unmounted", "docs"), network=False)
    assert result.missing and result.has_errors and not result.entries


def test_a_file_where_the_root_should_be_is_missing(tmp_path):
    result = scan(Root(touch(tmp_path / "docs"), "docs"), network=False)
    assert result.missing


# scoped scans ------------------------------------------------------------------------------------


def test_a_scoped_scan_looks_only_under_its_prefixes(docs_root):
    result = scan(Root(docs_root, "docs"), prefixes=("guides/deep", "readme.md"), network=False)
    assert found(result) == {"guides/deep/tuning.txt", "readme.md"}


def test_nested_prefixes_are_scanned_once(docs_root):
    result = scan(Root(docs_root, "docs"), prefixes=("guides", "guides/deep", "/guides/"), network=False)
    assert sorted(e.path for e in result.entries) == ["guides/deep/tuning.txt", "guides/install.md"]


def test_an_empty_prefix_means_the_whole_root(docs_root):
    result = scan(Root(docs_root, "docs"), prefixes=("guides", ""), network=False)
    assert len(result.entries) == 5


def test_a_vanished_prefix_is_no_error(docs_root):
    result = scan(Root(docs_root, "docs"), prefixes=("guides/removed.md", "gone/folder"), network=False)
    assert not result.entries and not result.problems and not result.has_errors


def test_a_scoped_scan_still_applies_ignores_and_excludes(docs_root):
    touch(docs_root / "guides" / "~$install.docx")
    touch(docs_root / "drafts" / "plan.md")
    root = Root(docs_root, "docs", exclude=("drafts/**",))
    result = scan(root, prefixes=("guides/~$install.docx", "drafts"), network=False)
    assert not result.entries and not result.problems


@pytest.mark.timeout(60)
def test_a_folder_of_ten_thousand_files(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    for i in range(10_000):
        (root / f"doc{i:05}.txt").write_bytes(b"x")
    result = scan(Root(root, "big"), network=False)  # its speed is a row of scripts/bench (big-folder)
    assert len(result.entries) == 10_000 and len(found(result)) == 10_000


# filesystems -------------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path) -> Path:
    """The test's folder as the mount table spells it (no symlinks)."""
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def mount_table(tmp_path) -> Path:
    return tmp_path / "mounts"


@pytest.mark.parametrize(
    "fstype, network",
    [
        ("nfs4", True),
        ("nfs", True),
        ("cifs", True),
        ("smb3", True),
        ("fuse.sshfs", True),
        ("ext4", False),
        ("xfs", False),
        ("tmpfs", False),
        ("fuse.ntfs-3g", False),
    ],
)
def test_filesystem_type_and_network_shares(base, mount_table, monkeypatch, fstype, network):
    table = mount_table
    share = base / "share"
    share.mkdir()
    table.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export {share} {fstype} rw 0 0\n")
    assert filesystem_type(share / "docs", str(table)) == fstype
    assert filesystem_type(base / "elsewhere", str(table)) == "ext4"
    monkeypatch.setattr(mounts.filesystem_type, "__defaults__", (str(table),))
    assert is_network_fs(share) is network
    assert is_network_fs(base) is False


def test_the_deepest_mount_wins_and_escaped_spaces_are_read(base, mount_table):
    table = mount_table
    table.write_text(
        f"/dev/vda / ext4 rw 0 0\n"
        f"//nas/public {base}/My\\040Share cifs rw 0 0\n"
        f"/dev/sdb {base}/My\\040Share/local ext4 rw 0 0\n"
    )
    assert filesystem_type(base / "My Share" / "report.pdf", str(table)) == "cifs"
    assert filesystem_type(base / "My Share" / "local" / "a.md", str(table)) == "ext4"
    assert filesystem_type(base / "My Shared" / "a.md", str(table)) == "ext4", "a prefix is not a parent"


def test_a_later_mount_on_the_same_point_hides_the_earlier_one(base, mount_table):
    table = mount_table
    table.write_text(f"/dev/vda / ext4 rw 0 0\n/dev/sdb {base} ext4 rw 0 0\nsrv:/x {base} nfs4 rw 0 0\n")
    assert filesystem_type(base / "a", str(table)) == "nfs4"


def test_an_unreadable_mount_table_means_unknown(tmp_path):
    assert filesystem_type(tmp_path, str(tmp_path / "no-such-mounts")) == ""


def test_scan_asks_the_mount_table_when_not_told(docs_root, monkeypatch, mount_table):
    table = mount_table
    table.write_text(f"srv:/export {os.path.realpath(docs_root)} nfs4 rw 0 0\n")
    monkeypatch.setattr(mounts.filesystem_type, "__defaults__", (str(table),))
    result = scan(Root(docs_root, "docs"))
    assert {e.inode for e in result.entries} == {0}, "NFS inodes are not a stable identity"


# hashing -----------------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "a.pdf"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.timeout(60)
def test_sha256_of_a_gigabyte_keeps_memory_flat(tmp_path):
    path = tmp_path / "huge.pdf"
    size = 1 << 30
    with open(path, "wb") as fh:  # sparse: no gigabyte of disk
        fh.write(b"head")
        fh.truncate(size)
        fh.seek(size - 4)
        fh.write(b"tail")
    expected = hashlib.sha256()
    zeros = bytes(1 << 20)
    expected.update(b"head" + zeros[4:])
    for _ in range(size // len(zeros) - 2):
        expected.update(zeros)
    expected.update(zeros[:-4] + b"tail")

    tracemalloc.start()
    try:
        digest = sha256_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected.hexdigest()
    assert peak < 8 * (1 << 20), f"hashing 1 GB peaked at {peak:,} bytes"


def test_a_folder_excluded_whole_is_not_walked(tmp_path, monkeypatch):
    root_dir = tmp_path / "share"
    (root_dir / "lost+found" / "deep").mkdir(parents=True)
    (root_dir / "lost+found" / "deep" / "x.txt").write_text("x")
    (root_dir / "a.txt").write_text("a")
    listed = []
    real = os.scandir
    monkeypatch.setattr(scanning.os, "scandir", lambda p: listed.append(str(p)) or real(p))
    result = scan(Root(root_dir, "s", exclude=("lost+found/**",)))
    assert [e.path for e in result.entries] == ["a.txt"]
    assert not any("lost+found" in p for p in listed), "an unreadable excluded folder must not cause errors"


def test_a_scoped_path_through_a_symlinked_folder_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "salary.txt").write_text("secret")
    root_dir = tmp_path / "docs"
    root_dir.mkdir()
    (root_dir / "link").symlink_to(outside)
    result = scan(Root(root_dir, "s"), prefixes=("link/salary.txt",))
    assert result.entries == []
    assert result.problems and "outside the root" in result.problems[0].reason


@pytest.mark.parametrize(
    "name",
    [".x", "a.tmp", "~$a.docx", "#a#", "#a", "Thumbs.db", "thumbs.db", "a~", "x.lnk", "a.md", ".~lock.a#", "a.TMP"],
)
def test_the_ignore_test_is_fnmatch_over_the_default_patterns(name):
    from ingest.config import DEFAULT_IGNORES

    assert scanning.is_ignored_name(name) is any(fnmatch.fnmatchcase(name, p) for p in DEFAULT_IGNORES)
    if scanning.is_ignored_name(name):  # a folder holding it is tested name by name
        assert not scanning.is_ignored_name.none_in(["a.md", name, "b.txt"])


def test_a_folder_whose_names_cannot_match_is_passed_whole_and_one_that_can_is_not():
    matcher = scanning.NameMatcher(["*.tmp", "draft-*", "README", "#*#"])
    assert matcher.none_in(["a.md", "notes.tmp.md", "x-draft-1", "README.md", "a#b#"])
    for name in ("a.tmp", "draft-2", "README", "#x#"):
        assert matcher(name) and not matcher.none_in(["a.md", name])
    assert not matcher.none_in(["#no-closing"]), "a head only asks for the test name by name"
    assert not matcher("#no-closing")


def test_the_mount_commands_output_gives_the_type_on_macos_and_elsewhere(base, monkeypatch):
    text = (
        "/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)\n"
        "//ann@nas.local/Team Docs on /Volumes/Team Docs (smbfs, nodev, nosuid, mounted by ann)\n"
        "nas:/export on /Volumes/nfs (nfs, asynchronous)\n"
        "server:/x on /mnt/with space type nfs4 (rw,relatime)\n"
    )
    assert mounts.parse_mount_output(text) == [
        ("/", "apfs"),
        ("/Volumes/Team Docs", "smbfs"),
        ("/Volumes/nfs", "nfs"),
        ("/mnt/with space", "nfs4"),
    ]
    share = base / "Team Docs"
    share.mkdir()
    monkeypatch.setattr(mounts.sys, "platform", "darwin")
    monkeypatch.setattr(mounts, "_mount_command", lambda: [("/", "apfs"), (str(share), "smbfs")])
    assert filesystem_type(share / "a.md", str(base / "no-proc-mounts")) == "smbfs"
    assert filesystem_type(base, str(base / "no-proc-mounts")) == "apfs"
    monkeypatch.setattr(mounts.filesystem_type, "__defaults__", (str(base / "no-proc-mounts"),))
    assert is_network_fs(share) is True
