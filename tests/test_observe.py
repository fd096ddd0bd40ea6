"""The one "unchanged?" rule: the stat fingerprint, the racy window, the network-share rules, and
the manifest's query for settled rows agreeing with it."""

from __future__ import annotations

import time

import pytest

from ingest.manifest import INDEXED, FileRow, Manifest
from ingest.observe import RACY_NS, RACY_NS_NETWORK, needs_hash, same_stat
from ingest.scan import Entry
from tests.test_scan import touch

SECOND = 1_000_000_000
MTIME = 1_700_000_000 * SECOND


def entry(size=100, mtime_ns=MTIME, inode=42) -> Entry:
    return Entry("/docs", "a.md", size, mtime_ns, inode)


@pytest.mark.parametrize(
    "stat, recorded, network, expected",
    [
        (entry(), (100, MTIME, 42, MTIME + 60 * SECOND), False, False),  # hashed long after: trusted
        (entry(), (100, MTIME, 42, MTIME + RACY_NS - 1), False, True),  # hashed within 2 s of the mtime
        (entry(), (100, MTIME, 42, MTIME + RACY_NS), False, True),
        (entry(), (100, MTIME, 42, MTIME + RACY_NS + 1), False, False),
        (entry(), (100, MTIME, 42, MTIME + 2_500_000_000), True, True),  # SMB rounds mtimes: 3 s there
        (entry(), (100, MTIME, 42, MTIME + 3_500_000_000), True, False),
        (entry(size=101), (100, MTIME, 42, MTIME + 60 * SECOND), False, True),  # size moved
        (entry(mtime_ns=MTIME + 1), (100, MTIME, 42, MTIME + 60 * SECOND), False, True),
        (entry(inode=43), (100, MTIME, 42, MTIME + 60 * SECOND), False, True),  # replaced by rename
        (entry(inode=0), (100, MTIME, 42, MTIME + 60 * SECOND), True, False),  # network: inode not compared
        (entry(), (None, None, None, None), False, True),  # never hashed
        (entry(), (100, MTIME, 42, None), False, True),
    ],
)
def test_needs_hash(stat, recorded, network, expected):
    assert needs_hash(stat, *recorded, network=network) is expected


def test_a_file_written_just_after_hashing_is_hashed_again(tmp_path):
    path = touch(tmp_path / "a.md", "first")
    hashed_at = time.time_ns()
    path.write_text("again")  # same size, possibly the same mtime tick
    st = path.stat()
    current = Entry(str(tmp_path), "a.md", st.st_size, st.st_mtime_ns, st.st_ino)
    assert needs_hash(current, st.st_size, st.st_mtime_ns, st.st_ino, hashed_at) is True


@pytest.mark.parametrize(
    "known, stat, expected",
    [
        ((100, MTIME, 42), (100, MTIME, 42), True),
        ((100, MTIME, 42), (101, MTIME, 42), False),
        ((100, MTIME, 42), (100, MTIME + 1, 42), False),
        ((100, MTIME, 42), (100, MTIME, 43), False),
        ((100, MTIME, 0), (100, MTIME, 43), True),  # no inode recorded (a share): not compared
        ((100, MTIME, 42), (100, MTIME, 0), True),
    ],
)
def test_same_stat(known, stat, expected):
    assert same_stat(known, *stat) is expected


@pytest.mark.parametrize("network", [False, True])
@pytest.mark.parametrize("after", [RACY_NS - 1, RACY_NS, RACY_NS + 1, RACY_NS_NETWORK, RACY_NS_NETWORK + 1])
def test_the_manifest_trusts_by_stat_exactly_the_rows_the_rule_does_not_rehash(tmp_path, network, after):
    manifest = Manifest(tmp_path / "manifest.db")
    try:
        row = FileRow("/docs", "a.md", INDEXED, "docs", 100, MTIME, 42, MTIME + after, "ab", file_id="file-1")
        manifest.put(row)
        settled, others = manifest.settled("/docs", network, store="docs", attributes=False)
    finally:
        manifest.close()
    rehash = needs_hash(entry(), row.size, row.mtime_ns, row.inode, row.hashed_at_ns, network)
    assert ("a.md" in settled) is not rehash and ("a.md" in others) is rehash
