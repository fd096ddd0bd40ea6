"""Extraction in worker processes gives what extraction in the store's process gives, and a file
that kills its worker fails alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ingest.remote.base import AttachItem
from ingest.remote.local import LocalRemote
from ingest.remote.local.prepare import Job, Prepared, Preparer, prepare
from tests.docs import make_pdf

FOREVER = float("inf")


def crash_on_request(blob: Path, filename: str, rule) -> Prepared:
    """prepare(), except that a file named crash* kills the worker process like a native crash."""
    if filename.startswith("crash"):
        os._exit(70)
    return prepare(blob, filename, rule)


def _jobs(tmp_path: Path) -> list[Job]:
    files = {
        "notes.txt": "ledger harbour lantern",
        "page.html": "<p>orchard <b>quarry</b></p><script>hidden()</script>",
        "broken.pdf": "%PDF-1.4 not really",
    }
    jobs = []
    for n, (name, text) in enumerate(files.items()):
        (tmp_path / name).write_text(text)
        jobs.append(Job((n,), tmp_path / name, name, None, len(text)))
    make_pdf(tmp_path / "report.pdf", "meadow beacon")
    jobs.append(Job((len(jobs),), tmp_path / "report.pdf", "report.pdf", None, 1))
    jobs.append(Job((len(jobs),), tmp_path / "gone.txt", "gone.txt", None, 1))  # its blob is missing
    return jobs


def _results(preparer: Preparer, jobs: list[Job], deadline: float = FOREVER) -> dict:
    return {job.key: prepared for group in preparer.run(jobs, deadline) for job, prepared in group}


def test_workers_prepare_what_the_store_process_prepares(tmp_path):
    jobs = _jobs(tmp_path)
    pooled = Preparer(2, min_bytes=0)
    try:
        in_workers = _results(pooled, jobs)
        assert pooled._pool is not None  # the work did go to worker processes
    finally:
        pooled.close()
    here = _results(Preparer(0), jobs)
    assert in_workers == here
    assert here[(0,)].chunks == ("ledger harbour lantern",)
    assert here[(1,)].chunks == ("orchard quarry",)
    assert here[(2,)].error[0] == "invalid_file"
    assert here[(3,)].chunks == ("meadow beacon",)
    assert here[(4,)].error == ("server_error", "the local store's copy of the file is missing")


def signalled_as_its_group(blob: Path, filename: str, rule) -> Prepared:
    """prepare(), after the worker got the signal the file's name says, as a Ctrl-C or a systemd stop
    sends it to the whole process group (the store's process handles its own)."""
    import signal

    os.kill(os.getpid(), getattr(signal, filename.split("-")[0]))
    time.sleep(0.05)  # a signal not ignored has acted by now
    return prepare(blob, filename, rule)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_sent_to_the_whole_group_leaves_the_workers_at_their_jobs(tmp_path, sig):
    jobs = []
    for n in range(4):
        (tmp_path / f"{sig}-{n}.txt").write_text(f"memo number {n}")
        jobs.append(Job((n,), tmp_path / f"{sig}-{n}.txt", f"{sig}-{n}.txt", None, 16))
    preparer = Preparer(2, min_bytes=0, fn=signalled_as_its_group)
    try:
        results = _results(preparer, jobs)
    except BaseException as exc:  # a worker's KeyboardInterrupt comes back as the job's result
        pytest.fail(f"a worker took the {sig} meant for the store's process: {exc!r}")
    finally:
        preparer.close()
    assert {key: prepared.chunks for key, prepared in results.items()} == {
        (n,): (f"memo number {n}",) for n in range(4)
    }, "each job done once, by a worker that lived through the signal"


def test_little_work_is_done_without_starting_workers(tmp_path):
    preparer = Preparer(2)  # the default threshold: a few small files are not worth a process
    assert len(_results(preparer, _jobs(tmp_path))) == 5
    assert preparer._pool is None


def test_a_file_that_kills_its_worker_fails_alone(tmp_path):
    jobs = _jobs(tmp_path)
    (tmp_path / "crash.txt").write_text("boom")
    jobs.insert(1, Job(("crash",), tmp_path / "crash.txt", "crash.txt", None, 4))
    preparer = Preparer(2, min_bytes=0, fn=crash_on_request)
    try:
        results = _results(preparer, jobs)
        broken = preparer._pool
        assert results.pop(("crash",)).error == ("server_error", "the local store's extractor crashed on this file")
        assert results == _results(Preparer(0), _jobs(tmp_path))
        # The broken pool is replaced: later work still goes to workers.
        assert _results(preparer, [jobs[0], jobs[2]]) == {(0,): results[(0,)], (1,): results[(1,)]}
        assert preparer._pool is not None and preparer._pool is not broken
    finally:
        preparer.close()


def test_a_passed_deadline_still_prepares_one_group_and_leaves_the_rest(tmp_path):
    jobs = [Job((n,), tmp_path / f"{n}.txt", f"{n}.txt", None, 300_000) for n in range(6)]
    for job in jobs:
        job.blob.write_text(f"text {job.key[0]}")
    preparer = Preparer(2, min_bytes=0)
    try:
        groups = list(preparer.run(jobs, time.monotonic() - 1))
    finally:
        preparer.close()
    assert len(groups) == 1
    assert [job.key for job, _ in groups[0]] == [(0,), (1,)]  # a group is about 512 KB


def test_the_store_indexes_through_workers_and_stops_them_on_close(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    remote = LocalRemote(tmp_path / "store", preparer=Preparer(2, min_bytes=0))
    store = remote.create_store("s", {}, None, None)
    ids = []
    for n in range(5):
        (docs / f"{n}.html").write_text(f"<h1>Chapter {n}</h1><p>the kestrel number{n} flies</p>")
        ids.append(remote.upload(docs / f"{n}.html", f"{n}.html").id)
    batch = remote.attach_batch(store.id, [AttachItem(i, {"n": n}) for n, i in enumerate(ids)])
    assert remote.get_batch(store.id, batch.id).completed == 5
    hits = remote.search(store.id, "number3")
    assert [h.file_id for h in hits] == [ids[3]]
    assert hits[0].text == "Chapter 3\nthe kestrel number3 flies"
    pool = remote._preparer._pool
    assert pool is not None
    workers = list(pool._processes.values())
    assert workers
    remote.close()
    assert all(not worker.is_alive() for worker in workers)


def wait_for_the_kill(blob: Path, filename: str, rule) -> Prepared:
    """A worker busy for longer than any test: only its parent's death can end it."""
    time.sleep(3600)
    return Prepared()


# A store's process with a pool at work, killed by SIGTERM as `timeout` kills a command (no handler:
# nothing of the pool is shut down). It prints its workers' pids and the resource tracker's.
KILLED = r"""
import json, sys, threading, time
from multiprocessing import resource_tracker
from pathlib import Path
from ingest.remote.local.prepare import Job, Preparer
from tests.test_prepare import wait_for_the_kill
blob = Path(sys.argv[1])
preparer = Preparer(2, min_bytes=0, fn=wait_for_the_kill)
jobs = [Job((n,), blob, f"{n}.txt", None, 1 << 20) for n in range(4)]
threading.Thread(target=lambda: next(preparer.run(jobs, float("inf"))), daemon=True).start()
while preparer._pool is None or len(preparer._pool._processes or ()) < 2:
    time.sleep(0.01)  # until both workers were started
print(json.dumps([*preparer._pool._processes, resource_tracker._resource_tracker._pid]), flush=True)
threading.Event().wait()
"""


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie that nobody reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_killing_the_stores_process_leaves_no_worker_behind(tmp_path):
    import json
    import signal
    import subprocess
    import sys

    (tmp_path / "a.txt").write_text("text")
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path / "a.txt")], stdout=subprocess.PIPE, text=True, cwd=root
    )
    pids: list[int] = []
    try:
        pids += json.loads(child.stdout.readline())
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == -signal.SIGTERM
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition, with a generous deadline
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        child.kill()
        child.wait()
        for pid in pids:
            if _alive(pid):  # what this test started, should it fail
                os.kill(pid, signal.SIGKILL)
