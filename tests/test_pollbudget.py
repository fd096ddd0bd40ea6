"""How often a run asks about its batches: one budget for all of them, and a pause that grows after a
failed question. Time is the run's own clock, moved on only when the run waits (no wall clock)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import ingest.indexing
from ingest.attach import Attacher

POLLS = "GET /vector_stores/{vector_store_id}/file_batches/{batch_id}"
LISTINGS = "GET /vector_stores/{vector_store_id}/file_batches/{batch_id}/files"


class _Sleeper:
    """The run's stop event, where waiting moves the run's clock on instead of the wall's."""

    def __init__(self, stop: threading.Event, now: list[float]):
        self.stop, self.now = stop, now

    def is_set(self) -> bool:
        return self.stop.is_set()

    def set(self) -> None:
        self.stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        self.now[0] += timeout or 0.0
        return self.stop.is_set()


def _run_clock(monkeypatch) -> list[float]:
    """The attach stage's clock, at 0 until the stage waits: then on by what it waited."""
    now = [0.0]

    class OnRunClock(Attacher):
        def __init__(self, settings, manifest, remote, stores, profile, outcome, emit, stop, clock=None, progress=None):
            sleeper = _Sleeper(stop, now)
            super().__init__(
                settings, manifest, remote, stores, profile, outcome, emit, sleeper, lambda: now[0], progress
            )

    monkeypatch.setattr(ingest.indexing, "Attacher", OnRunClock)
    return now


def _arrivals(emu, endpoint: str, now: list[float], most: int = 400) -> list[float]:
    """The run's clock as each request to endpoint arrives."""
    seen: list[float] = []
    for n in range(1, most + 1):
        emu.when(endpoint, n, lambda: seen.append(now[0]))
    return seen


def _notes(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"n{i:03d}.txt").write_text(f"note {i} about the pangolin\n")
    return folder


def test_the_batch_polls_a_second_stay_a_few_however_many_batches_are_in_progress(
    openai_cli, fake_openai, tmp_path, monkeypatch
):
    monkeypatch.setattr("ingest.attach.BATCH_LIMIT", 4)
    (tmp_path / "ingest.toml").write_text("request_timeout = 60\nindex_timeout = 3600\n")
    now = _run_clock(monkeypatch)
    polls = _arrivals(fake_openai, POLLS, now)
    fake_openai.configure(stuck_batches=True)  # 30 batches in progress together
    fake_openai.when(POLLS, 40, fake_openai.unstick_batches)
    report = openai_cli.json("sync", str(_notes(tmp_path / "many", 120)))
    assert report["counts"]["indexed"] == 120 and report["exit_code"] == 0
    assert len(fake_openai.state.batches) >= 30 and len(polls) >= 40
    busiest = max(sum(t <= u < t + 1.0 for u in polls) for t in polls)
    assert busiest <= 10, f"{busiest} batch polls in one second of the run, for 30 batches"
    assert fake_openai.counters()["peak_in_flight"][POLLS] <= 4


def test_a_failing_batch_poll_is_asked_again_after_a_growing_pause(
    openai_cli, fake_openai, docs_root, tmp_path, monkeypatch
):
    (tmp_path / "ingest.toml").write_text("request_retries = 0\nindex_timeout = 3600\n")
    now = _run_clock(monkeypatch)
    polls = _arrivals(fake_openai, POLLS, now)
    fake_openai.inject("500", 3, POLLS)
    report = openai_cli.json("sync", str(docs_root))
    assert report["counts"]["indexed"] == 4 and report["exit_code"] == 0
    assert len(polls) >= 4
    gaps = [b - a for a, b in itertools.pairwise(polls[:4])]  # after each of the three failures
    assert gaps[0] >= 1.0 and gaps[1] > gaps[0] and gaps[2] > gaps[1], polls


def test_a_failing_listing_of_a_batch_is_asked_again_after_a_pause(
    openai_cli, fake_openai, docs_root, tmp_path, monkeypatch
):
    (tmp_path / "ingest.toml").write_text("request_retries = 0\nindex_timeout = 3600\n")
    now = _run_clock(monkeypatch)
    polls = _arrivals(fake_openai, POLLS, now)
    listings = _arrivals(fake_openai, LISTINGS, now)
    fake_openai.configure(index_fail_names=frozenset({"install.md"}), index_fail_times=1)  # read file by file
    fake_openai.inject("500", 2, LISTINGS)
    report = openai_cli.json("sync", str(docs_root))
    assert len(listings) >= 3, (polls, listings)
    assert listings[1] - listings[0] >= 1.0 and listings[2] - listings[1] > listings[1] - listings[0], listings
    assert report["counts"]["indexed"] >= 3


def test_the_budget_asks_the_longest_due_first_and_one_or_two_batches_as_promptly_as_their_pause():
    from ingest.pollbudget import POLL_EVERY, PollBudget

    now = [0.0]
    budget = PollBudget(lambda: now[0])
    for n in range(12):
        budget.track(f"b{n}")
    first = budget.take(waiting=False)
    assert 1 <= len(first) < 12
    for batch_id in first:
        budget.answered(batch_id)
    now[0] += 1.0
    assert set(budget.take(waiting=False)).isdisjoint(first), "those never asked go before those asked"

    two = PollBudget(lambda: now[0])
    two.track("x"), two.track("y")
    assert sorted(two.take(waiting=False)) == ["x", "y"]
    two.answered("x", hint=0.2), two.answered("y", hint=0.2)
    now[0] += 0.2
    assert two.take(waiting=False) == [], "while uploads go on, each is asked at most every POLL_EVERY s"
    assert sorted(two.take(waiting=True)) == ["x", "y"], "waiting: as soon as the server's hint says"
    two.answered("x"), two.answered("y")
    now[0] += POLL_EVERY
    assert sorted(two.take(waiting=False)) == ["x", "y"]
