"""The pacer's decisions under an injected clock: how many at once, how fast, and what a 429 does."""

from __future__ import annotations

import math
import threading

import pytest

from ingest.pacing import (
    NEUTRAL,
    OVERLOADED,
    THROTTLED,
    Pacer,
    RateHeaders,
    Ticket,
    parse_duration,
    rate_headers,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill(pacer: Pacer, now: float) -> list[Ticket]:
    """Start every call the pacer allows right now."""
    started = []
    while isinstance(got := pacer.try_start(now), Ticket):
        started.append(got)
    return started


def answer(pacer: Pacer, tickets: list[Ticket], now: float, *args, **kwargs) -> None:
    for ticket in tickets:
        pacer.done(ticket, now, *args, **kwargs)


def rounds(pacer: Pacer, clock: Clock, count: int, latency: float, outcome: str = "ok") -> list[int]:
    """`count` round trips of a saturated window; the window after each."""
    seen = []
    for _ in range(count):
        tickets = fill(pacer, clock.now)
        clock.now += latency
        answer(pacer, tickets, clock.now, outcome)
        seen.append(pacer.window)
    return seen


class Server:
    """A token bucket of `rps` a second holding up to `burst`, counting each call on arrival, with
    OpenAI's headers on every reply."""

    def __init__(self, clock: Clock, rps: float, burst: float):
        self.clock, self.rps, self.burst = clock, rps, burst
        self.tokens, self.at = burst, clock.now
        self.refused = 0

    def arrive(self) -> tuple[bool, RateHeaders]:
        now = self.clock.now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rps)
        self.at = now
        ok = self.tokens >= 1
        if ok:
            self.tokens -= 1
        else:
            self.refused += 1
        return ok, RateHeaders(round(self.rps * 60), int(self.tokens), (self.burst - self.tokens) / self.rps)


def serve(pacer: Pacer, clock: Clock, server: Server | None, seconds: float, latency: float) -> list[Ticket]:
    """Calls answered after `latency` for `seconds` of the clock, in small steps; the calls answered OK."""
    in_flight: list[tuple[Ticket, bool, RateHeaders | None]] = []
    answered = []
    end = clock.now + seconds
    while clock.now < end:
        for entry in [e for e in in_flight if clock.now - e[0].at >= latency]:
            in_flight.remove(entry)
            ticket, ok, said = entry
            pacer.done(ticket, clock.now, "ok" if ok else THROTTLED, None if ok else 0.05, said)
            if ok:
                answered.append(ticket)
        while isinstance(got := pacer.try_start(clock.now), Ticket):
            ok, said = server.arrive() if server else (True, None)
            in_flight.append((got, ok, said))
        clock.now += 0.002
    return answered


def test_the_window_grows_from_its_start_while_calls_succeed_at_flat_latency():
    clock = Clock()
    pacer = Pacer(4, ceiling=64, clock=clock)
    assert len(fill(pacer, clock.now)) == 4 and pacer.try_start(clock.now) == math.inf
    pacer = Pacer(4, ceiling=64, clock=clock)
    windows = rounds(pacer, clock, 6, latency=0.1)
    assert windows[:4] == [8, 16, 32, 64]  # slow start: one more for each success of a full window
    assert windows[-1] == 64  # and never past the ceiling


def test_a_window_that_is_not_full_does_not_grow():
    clock = Clock()
    pacer = Pacer(8, clock=clock)
    for _ in range(50):
        ticket = pacer.try_start(clock.now)
        assert isinstance(ticket, Ticket)
        clock.now += 0.1
        pacer.done(ticket, clock.now)
    assert pacer.window == 8


def test_climbing_latency_stops_the_growth_and_then_shrinks_the_window_once_per_window():
    clock = Clock()
    pacer = Pacer(8, clock=clock)
    rounds(pacer, clock, 2, latency=0.1)
    grown = pacer.window
    assert grown == 32
    tickets = fill(pacer, clock.now)
    clock.now += 0.14  # within 1.5x of the quietest: still flat enough to grow
    answer(pacer, tickets, clock.now)
    assert pacer.window > grown
    before = pacer.window
    tickets = fill(pacer, clock.now)
    clock.now += 1.0  # ten times the quietest: the server is queueing
    answer(pacer, tickets, clock.now)
    assert pacer.window < before
    assert pacer.window >= before // 2, "a whole window of slow replies is one cut, not one per reply"


def test_paced_calls_keep_enough_in_flight_to_carry_the_rate_when_latency_climbs():
    clock = Clock()
    pacer = Pacer(8, ceiling=64, clock=clock)
    serve(pacer, clock, Server(clock, 20, 20), 5.0, latency=0.1)
    answered = serve(pacer, clock, Server(clock, 20, 20), 10.0, latency=1.0)  # ten times slower
    assert pacer.window >= 20, "never fewer than rate x latency, however the latency climbs"
    late = [t.at for t in answered if t.at > clock.now - 6.0]
    assert len(late) >= 20 * (late[-1] - late[0]) * 0.95


def test_429s_without_a_stated_rate_halve_the_window_once_per_window_and_pause_everyone():
    clock = Clock()
    pacer = Pacer(16, clock=clock)
    tickets = fill(pacer, clock.now)
    clock.now += 0.1
    answer(pacer, tickets, clock.now, THROTTLED, retry_after=2.0)
    assert pacer.window == 8, "sixteen refusals of one crowd are one halving, not a collapse to 1"
    assert pacer.try_start(clock.now) == pytest.approx(2.0)  # Retry-After holds every caller back
    clock.now += 2.0
    assert isinstance(pacer.try_start(clock.now), Ticket)


def test_errors_that_say_the_server_is_strained_shrink_the_window_and_a_refused_request_does_not():
    clock = Clock()
    pacer = Pacer(16, clock=clock)
    tickets = fill(pacer, clock.now)
    answer(pacer, tickets[:8], clock.now + 0.1, NEUTRAL)  # a 400 or a 404: nothing about load
    assert pacer.window == 16
    answer(pacer, tickets[8:], clock.now + 0.1, OVERLOADED)
    assert pacer.window == 12


@pytest.mark.parametrize(("rps", "latency"), [(100, 0.1), (1000 / 60, 1.0), (10, 0.2), (2, 0.05)])
def test_a_stated_rate_is_used_and_never_exceeded(rps, latency):
    """Knowing the rate only from the replies, the pacer is refused nothing and uses the rate."""
    clock = Clock()
    pacer = Pacer(8, ceiling=64, clock=clock)
    server = Server(clock, rps, burst=max(1.0, rps))
    answered = serve(pacer, clock, server, 30.0, latency)
    assert pacer.stated_rate == pytest.approx(rps, rel=0.01)
    assert server.refused <= max(0, 8 - int(server.burst)), "only the first window, sent before anything is known"
    later = [t.at for t in answered if t.at >= 1000.0 + 2 * latency]
    span = later[-1] - later[0]
    assert len(later) <= rps * span + max(1.0, rps) + 1, "no more than the rate, plus one second's burst"
    assert len(later) >= rps * span * 0.97, "and no less: the rate is used"
    gaps = [b - a for a, b in zip(later[-20:], later[-19:], strict=False)]
    assert min(gaps) >= 0.5 / rps, "spaced, not in bursts, once the bucket is spent"


def test_a_minute_budget_is_not_spent_in_one_burst():
    clock = Clock()
    pacer = Pacer(8, ceiling=64, clock=clock)
    tickets = fill(pacer, clock.now)
    clock.now += 0.5
    # 1,000 a minute with 990 left: the limit may be enforced per second (16.7), so no more than that at once
    pacer.done(tickets[0], clock.now, rate=RateHeaders(1000, 990, 0.6))
    pacer.limit = 64.0
    burst = fill(pacer, clock.now)
    assert len(burst) <= 1000 / 60


def test_what_the_server_says_is_left_bounds_the_burst():
    clock = Clock()
    pacer = Pacer(8, ceiling=64, clock=clock)
    tickets = fill(pacer, clock.now)
    clock.now += 0.01
    pacer.done(tickets[0], clock.now, rate=RateHeaders(6000, 30, 0.7))  # 100/s, 30 left, 7 still in flight
    pacer.limit = 64.0
    burst = fill(pacer, clock.now)
    assert 10 <= len(burst) <= 30 - 7


def test_a_429_the_model_did_not_expect_lowers_the_rate_which_then_creeps_back():
    clock = Clock()
    pacer = Pacer(8, clock=clock)
    first = fill(pacer, clock.now)
    clock.now += 0.1
    answer(pacer, first, clock.now, rate=RateHeaders(600, 9, 0.1))
    clock.now += 1.0
    crowd = fill(pacer, clock.now)
    assert crowd and all(t.paced for t in crowd)
    clock.now += 0.1
    # another client took the server's bucket meanwhile
    answer(pacer, crowd, clock.now, THROTTLED, retry_after=0.5, rate=RateHeaders(600, 0, 1.0))
    assert pacer.rate == pytest.approx(9.0), "one cut for the crowd"
    assert pacer.window >= 8, "with a stated rate, the rate is the lever, not the window"
    assert pacer.try_start(clock.now) == pytest.approx(0.5)
    serve(pacer, clock, Server(clock, 10, 10), 60.0, latency=0.1)
    assert pacer.rate == pytest.approx(10.0)


def test_429s_of_calls_sent_before_the_rate_was_known_do_not_lower_it():
    clock = Clock()
    pacer = Pacer(8, clock=clock)
    tickets = fill(pacer, clock.now)
    clock.now += 0.1
    pacer.done(tickets[0], clock.now, rate=RateHeaders(120, 0, 1.0))
    for ticket in tickets[1:]:
        pacer.done(ticket, clock.now, THROTTLED, retry_after=0.5, rate=RateHeaders(120, 0, 1.0))
    assert pacer.rate == 2.0


def test_nothing_left_and_no_rate_stated_waits_for_the_reset():
    clock = Clock()
    pacer = Pacer(8, clock=clock)
    tickets = fill(pacer, clock.now)
    clock.now += 0.1
    pacer.done(tickets[0], clock.now, rate=RateHeaders(None, 3, 0.4))
    assert isinstance(pacer.try_start(clock.now), Ticket), "something is left: go on"
    pacer.done(tickets[1], clock.now, rate=RateHeaders(None, 0, 0.4))
    assert pacer.try_start(clock.now) == pytest.approx(0.4)


def test_durations_and_headers_as_openai_writes_them():
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("17ms") == pytest.approx(0.017)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("0.25") == 0.25
    assert parse_duration("soon") is None and parse_duration("5s later") is None
    said = rate_headers(
        {
            "x-ratelimit-limit-requests": "1000",
            "x-ratelimit-remaining-requests": "997",
            "x-ratelimit-reset-requests": "180ms",
        }
    )
    assert said == RateHeaders(1000, 997, pytest.approx(0.18))
    assert rate_headers({"content-type": "application/json"}) is None
    assert rate_headers({"x-ratelimit-limit-requests": "many"}) is None


def test_a_waiting_caller_is_released_by_stop():
    pacer = Pacer(1)
    held = pacer.acquire()
    assert held is not None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pacer.acquire()))
    waiter.start()
    pacer.stop.set()
    waiter.join(timeout=30)
    assert not waiter.is_alive() and got == [None]


def test_waiting_callers_start_in_turn_as_calls_finish():
    pacer = Pacer(1)
    first = pacer.acquire()
    assert first is not None
    started: list[Ticket] = []
    done = threading.Event()

    def take():
        ticket = pacer.acquire()
        assert ticket is not None
        started.append(ticket)
        pacer.release(ticket)
        if len(started) == 3:
            done.set()

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert not started
    pacer.release(first)
    assert done.wait(30)
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(t.seq for t in started) == [2, 3, 4]
