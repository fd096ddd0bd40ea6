"""One writer at a time: a second ingest is told who holds the manifest, or queues behind it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ingest.lock import LockBusy, ManifestLock

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ingest.lock import ManifestLock
    lock = ManifestLock(Path(sys.argv[1]), sys.argv[2]).acquire()
    print("ready", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    lock.release()
""")


@pytest.fixture
def manifest_path(tmp_path) -> Path:
    return tmp_path / "state" / "manifest.db"


@pytest.fixture
def holder(manifest_path):
    """Another ingest process holding the lock; close its stdin to let it go."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(manifest_path), "watch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.timeout(120)
def test_a_second_process_is_told_who_holds_the_manifest(manifest_path, holder):
    with pytest.raises(LockBusy) as info:
        ManifestLock(manifest_path, "sync").acquire()
    message = str(info.value)
    assert f"'ingest watch' (pid {holder.pid})" in message
    assert "--wait" in message


@pytest.mark.timeout(120)
def test_the_lock_is_free_once_the_holder_finishes(manifest_path, holder):
    holder.stdin.close()
    lock = ManifestLock(manifest_path, "sync").acquire(wait=60)
    try:
        assert holder.wait(timeout=60) == 0
        assert f"'ingest sync' (pid {os.getpid()})" in lock.holder()
    finally:
        lock.release()


@pytest.mark.timeout(120)
def test_a_crashed_holder_leaves_no_stale_lock(manifest_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    lock = ManifestLock(manifest_path, "sync").acquire()  # no wait: the kernel dropped the lock
    lock.release()


def test_two_locks_in_one_process_exclude_each_other(manifest_path):
    first = ManifestLock(manifest_path, "reindex").acquire()
    try:
        with pytest.raises(LockBusy, match=rf"'ingest reindex' \(pid {os.getpid()}\)"):
            ManifestLock(manifest_path, "sync").acquire()
    finally:
        first.release()
    ManifestLock(manifest_path, "sync").acquire().release()


@pytest.mark.timeout(120)
def test_wait_queues_behind_the_holder(manifest_path):
    first = ManifestLock(manifest_path, "watch").acquire()
    released = threading.Event()

    def release_later():
        released.set()  # set before the release: whoever gets the lock must see it
        first.release()

    releaser = threading.Timer(0.3, release_later)  # the other run finishing a little later
    releaser.start()
    second = ManifestLock(manifest_path, "sync").acquire(wait=60)
    try:
        assert released.is_set(), "the lock was granted while the first holder still had it"
        assert "'ingest sync'" in second.holder(), "the lock file now names the new holder"
    finally:
        releaser.join()
        second.release()


@pytest.mark.timeout(120)
def test_wait_gives_up_at_its_deadline(manifest_path):
    first = ManifestLock(manifest_path, "watch").acquire()
    try:
        started = time.monotonic()
        with pytest.raises(LockBusy, match="'ingest watch'"):
            ManifestLock(manifest_path, "sync").acquire(wait=0.5)
        assert time.monotonic() - started >= 0.5, "it gave up before its deadline"
    finally:
        first.release()


def test_a_released_lock_names_no_one(manifest_path):
    with ManifestLock(manifest_path, "sync").acquire() as lock:
        assert "'ingest sync'" in lock.holder()
    assert lock.holder() == "another ingest process"
    assert lock.path.read_text() == ""


def test_the_lock_file_is_private_and_its_folder_is_created(manifest_path):
    lock = ManifestLock(manifest_path, "sync").acquire()
    try:
        assert lock.path == Path(str(manifest_path) + ".lock")
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(manifest_path.parent.stat().st_mode) == 0o700
    finally:
        lock.release()
