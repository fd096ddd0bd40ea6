"""A walk spread over processes gives the serial walk's result; a child that fails has its share redone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ingest import scan as scanning
from ingest import spread
from ingest.config import Root
from ingest.observe import digest_context

OLD = time.time() - 3600


@pytest.fixture
def wide(tmp_path) -> Path:
    """Twelve folders on the first level (enough to spread over two processes), two levels deep."""
    root = tmp_path / "wide"
    for top in range(12):
        for sub in range(2):
            folder = root / f"t{top:02d}" / f"s{sub}"
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"n{i}.txt").write_text(f"{top} {sub} {i}\n")
        (root / f"t{top:02d}" / "top.md").write_text("top\n")
    (root / "t03" / "s1" / "pipe").unlink(missing_ok=True)
    os.mkfifo(root / "t03" / "s1" / "pipe")  # a problem found by a child
    return root


def outcome(result: scanning.ScanResult) -> tuple:
    return (
        sorted(result.entries),
        sorted(result.calm),
        sorted((p.path, p.reason) for p in result.problems),
        result.vouched,
        result.digests,
    )


def test_a_spread_walk_gives_the_serial_walks_result(wide, monkeypatch):
    root, context = Root(wide, "s"), digest_context("s", False)
    monkeypatch.setattr(spread, "processes", lambda: 1)
    serial = scanning.scan(root, network=False, digests=scanning.FolderDigests({}, context))
    spawned: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        spawned.append(pid)
        return pid

    monkeypatch.setattr(spread, "processes", lambda: 2)
    monkeypatch.setattr(os, "fork", fork)
    spread_out = scanning.scan(root, network=False, digests=scanning.FolderDigests({}, context))
    assert len(spawned) == 1, "the walk was spread over a second process (the comparison below can fail)"
    assert outcome(spread_out) == outcome(serial)
    assert len(serial.entries) == 12 * 7 and [p.path for p in serial.problems] == ["t03/s1/pipe"]

    # With the digests recorded, the children vouch for their folders as this process would.
    known = scanning.FolderDigests(serial.digests, context)
    os.utime(wide / "t07" / "s0" / "n1.txt", (OLD, OLD))
    again = scanning.scan(root, network=False, digests=known)
    assert set(again.vouched) == set(serial.digests) - {"t07/s0/"}
    assert {e.path for e in again.entries} == {f"t07/s0/n{i}.txt" for i in range(3)}
    monkeypatch.setattr(spread, "processes", lambda: 1)
    assert outcome(scanning.scan(root, network=False, digests=known)) == outcome(again)

    # Unlisted, a vouched folder's files are counted alike, whether a child or this process vouched.
    for processes in (1, 2):
        monkeypatch.setattr(spread, "processes", lambda n=processes: n)
        counted = scanning.scan(root, network=False, digests=known, list_vouched=False)
        assert counted.calm == [] and counted.vouched == again.vouched
        assert counted.calm_count == again.calm_count == len(again.calm) == sum(again.vouched.values())


def test_a_child_that_fails_has_its_share_done_here():
    parent = os.getpid()

    def work(share: list[int]) -> list[int]:
        if os.getpid() != parent:
            raise RuntimeError("a child that dies")
        return [x * 10 for x in share]

    assert spread.spread(list(range(7)), work, 3) == [[0, 30, 60], [10, 40], [20, 50]]


def test_no_spread_with_other_threads_running(monkeypatch):
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert spread.processes() == 1
    finally:
        stop.set()
        other.join()


def test_the_cores_in_use_are_the_runnable_tasks_besides_this_one(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("3.50 2.00 1.00 3/412 12345\n")
    assert spread.busy(str(loadavg)) == 2  # two others runnable now, whatever the minute's average says
    loadavg.write_text("0.00 0.00 0.00 1/90 12345\n")
    assert spread.busy(str(loadavg)) == 0
    monkeypatch.setattr(spread.os, "getloadavg", lambda: (2.6, 1.0, 1.0))
    assert spread.busy(str(tmp_path / "none")) == 2  # no such file: the load average, this process in it


def test_a_spread_takes_the_cores_no_one_else_is_using(monkeypatch):
    monkeypatch.setattr(spread.os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(spread, "busy", lambda: 1)
    assert spread.processes() == 3
    monkeypatch.setattr(spread, "busy", lambda: 7)
    assert spread.processes() == 1
