"""How many remote calls at once, and how fast: learned from the server's replies, not set by hand.

One Pacer per kind of call. A call takes a Ticket before it is sent and hands back what came of it.
- The window (calls in flight) starts at the configured value and grows while calls that had to
  wait for a slot succeed and latency stays flat (slow start, then one more per window); climbing
  latency, overload errors, and 429s from a server that states no rate shrink it, at most once per
  window, so a burst of refusals that all answer the same crowd counts once.
- A server that states its rate (OpenAI's x-ratelimit-limit/remaining/reset-requests) gets its own
  token bucket mirrored here: calls are spaced at the allowed rate and burst only what it says is
  left. Rate limits may be enforced per second rather than per minute, so no burst exceeds one
  second's worth; a 429 despite the model shrinks the burst and the rate, which then creep back.
- Every 429 pauses all callers for its Retry-After.
Pure bookkeeping under an injected clock (try_start / done), and a blocking front (acquire / release)
for threads; the blocking front serves waiters in order and wakes only the first.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

CEILING = 64  # calls in flight, whatever the window learns: threads and open files stay bounded
GROW_TOLERANCE = 1.5  # latency within this multiple of the quietest seen counts as flat
CUT_TOLERANCE = 2.0  # beyond this multiple the server (or this machine) is queueing: fewer at once
RESERVE_S = 0.1  # server tokens left unspent: how much sooner than spaced a call may reach it
MAX_BURST_S = 1.0  # never more than one second's worth at once, whatever a minute's budget says
RATE_CUT = 0.9  # a 429 despite the model: the rate that really is left is lower than stated
RATE_FLOOR = 0.1  # ... but never below this share of the stated rate
RATE_RECOVERY = 0.002  # share of the stated rate won back by each success after a cut
MAX_PAUSE_S = 120.0  # the longest wait a reset value earns (beyond it, a later call finds out for itself)
OVERLOAD_CUT = 0.75
THROTTLE_CUT = 0.5

OK, THROTTLED, OVERLOADED, NEUTRAL = "ok", "throttled", "overloaded", "neutral"


@dataclass(frozen=True)
class RateHeaders:
    """What a reply said about the request rate limit; any part may be missing."""

    limit: int | None  # requests per minute
    remaining: int | None
    reset_s: float | None  # until the limit is whole again


@dataclass(frozen=True)
class Ticket:
    seq: int
    at: float
    waited_for_slot: bool  # the window held it back: a larger one would have started it sooner
    timed: bool  # its latency says something about the server (not dominated by its own size)
    paced: bool = False  # started under a stated rate: a 429 then means the model is off


_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset values: "1s", "6m0s", "17ms", "1h2m3.5s"; a bare number is seconds."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def rate_headers(headers: Mapping[str, str] | None) -> RateHeaders | None:
    if headers is None:
        return None

    def number(name: str) -> int | None:
        value = headers.get(name)
        try:
            return int(float(value)) if value is not None else None
        except ValueError:
            return None

    reset = headers.get("x-ratelimit-reset-requests")
    found = RateHeaders(
        number("x-ratelimit-limit-requests"),
        number("x-ratelimit-remaining-requests"),
        parse_duration(reset) if reset is not None else None,
    )
    return found if found != RateHeaders(None, None, None) else None


class Pacer:
    """The window and pace of one kind of call (see the module's docstring); thread-safe."""

    def __init__(
        self,
        start: int,
        ceiling: int = CEILING,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ):
        self.start = max(1, start)
        self.ceiling = max(self.start, ceiling)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.limit = float(self.start)
        self.ssthresh = math.inf
        self.in_flight = 0
        self.not_before = 0.0
        # latency: the quietest seen (creeping up slowly, so a lasting change is followed) and a recent average
        self.base: float | None = None
        self.recent: float | None = None
        # the server's rate, per second, and the mirror of its bucket
        self.stated_rate: float | None = None
        self.rate: float | None = None
        self.capacity = 1.0
        self.burst_cap = math.inf  # learned from 429s the model did not expect
        self.tokens = 0.0
        self.stamp = clock()
        self._seq = 0
        self._cut_after = 0  # the window shrinks only for calls started after its last cut
        self._rate_cut_after = 0
        self._modelled = 0  # the newest call whose reply set the bucket
        self._full_at = 0  # the last call that filled the window
        self.counts = {OK: 0, THROTTLED: 0, OVERLOADED: 0, NEUTRAL: 0}
        self._lock = threading.Lock()
        self._waiters: deque[threading.Condition] = deque()

    @property
    def window(self) -> int:
        return max(1, int(self.limit))

    @property
    def wanted(self) -> int:
        """How many calls are worth having under way: the window, or when paced, what covers the
        latency at the rate (Little's law) plus what may go at once."""
        if self.rate is None or self.recent is None:
            return self.window
        return min(self.window, math.ceil(self.rate * self.recent + max(0.0, self.tokens)) + 2)

    # bookkeeping -------------------------------------------------------------------------------
    def try_start(self, now: float, waited_for_slot: bool = False, timed: bool = True) -> Ticket | float:
        """A ticket, or how long to wait before asking again (math.inf: until a call finishes)."""
        if now < self.not_before:
            return self.not_before - now
        if self.in_flight >= self.window:
            return math.inf
        if self.rate is not None:
            self._refill(now)
            need = 1.0 + min(self.rate * RESERVE_S, self.capacity - 1.0)
            if self.tokens < need:
                return (need - self.tokens) / self.rate
            self.tokens -= 1.0
        self.in_flight += 1
        self._seq += 1
        if self.in_flight >= self.window:
            self._full_at = self._seq
        return Ticket(self._seq, now, waited_for_slot, timed, self.rate is not None)

    def done(
        self,
        ticket: Ticket,
        now: float,
        outcome: str = OK,
        retry_after: float | None = None,
        rate: RateHeaders | None = None,
    ) -> None:
        self.in_flight -= 1
        self.counts[outcome] += 1
        if rate is not None:
            self._learn(ticket, now, rate)
        if outcome == THROTTLED:
            self._throttled(ticket, now, retry_after)
        elif outcome == OVERLOADED:
            self._cut(ticket, OVERLOAD_CUT)
        elif outcome == OK:
            self._succeeded(ticket, now)

    def _succeeded(self, ticket: Ticket, now: float) -> None:
        if ticket.timed:
            latency = max(now - ticket.at, 1e-6)
            self.base = latency if self.base is None else min(latency, self.base + (latency - self.base) * 0.01)
            self.recent = latency if self.recent is None else self.recent + (latency - self.recent) * 0.2
        if self.rate is not None and self.stated_rate is not None:
            self.rate = min(self.stated_rate, self.rate + self.stated_rate * RATE_RECOVERY)
        limited = ticket.waited_for_slot or self._full_at >= ticket.seq  # the window was full meanwhile
        if self.base is not None and self.recent is not None and self.recent > GROW_TOLERANCE * self.base:
            # Paced, the server has said what it allows: enough in flight to carry that rate at this
            # latency (Little's law) adds no load, however slow the replies.
            carry = math.ceil(self.rate * self.recent) + 1 if self.rate is not None else 1
            if self.recent > CUT_TOLERANCE * self.base:
                self._cut(ticket, max(THROTTLE_CUT, GROW_TOLERANCE * self.base / self.recent), carry)
            if limited and self.limit < min(carry, self.ceiling):
                self.limit += 1.0
            return
        if limited and self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + (1.0 if self.limit < self.ssthresh else 1.0 / self.limit))

    def _cut(self, ticket: Ticket, factor: float, floor: float = 1.0) -> None:
        if ticket.seq <= self._cut_after:
            return
        self._cut_after = self._seq
        self.limit = min(self.limit, max(floor, 1.0, self.limit * factor))
        self.ssthresh = self.limit

    def _throttled(self, ticket: Ticket, now: float, retry_after: float | None) -> None:
        self.not_before = max(self.not_before, now + (retry_after if retry_after is not None else 1.0))
        if self.rate is None:
            self._cut(ticket, THROTTLE_CUT)  # no stated rate: fewer at once is the only lever
            return
        if not ticket.paced or ticket.seq <= self._rate_cut_after:
            return  # sent before the rate was known, or one of a crowd already answered for
        self._rate_cut_after = self._seq
        assert self.stated_rate is not None
        self.rate = max(self.stated_rate * RATE_FLOOR, self.rate * RATE_CUT)
        self.burst_cap = max(1.0, min(self.burst_cap, self.capacity) / 2)
        self.capacity = min(self.capacity, self.burst_cap)
        self.tokens = min(self.tokens, 0.0)

    def _learn(self, ticket: Ticket, now: float, said: RateHeaders) -> None:
        if said.limit:
            stated = said.limit / 60.0
            if stated != self.stated_rate:
                self.stated_rate = stated
                self.rate = stated if self.rate is None else min(self.rate, stated)
        if self.stated_rate is None or self.rate is None:
            if said.remaining == 0 and said.reset_s is not None:
                # No rate to space calls by, but nothing is left: none goes before the limit is whole.
                self.not_before = max(self.not_before, now + min(said.reset_s, MAX_PAUSE_S))
            return
        full = self.stated_rate * MAX_BURST_S
        if said.remaining is not None and said.reset_s is not None:
            full = min(full, said.remaining + said.reset_s * self.stated_rate)
        self.capacity = max(1.0, min(full, self.burst_cap))
        self._refill(now)
        if said.remaining is not None and ticket.seq > self._modelled:
            # The server counted this call somewhere between its start and now; either way the next
            # call finds what was left (rounded down: less than one more), plus what refilled since
            # the call started, less the calls started since. That can overstate what is left (a full
            # bucket loses its refill), so it only ever lowers the mirror; the first time, it starts
            # it from the bucket capped and the count as given.
            first, self._modelled = self._modelled == 0, ticket.seq
            since = self._seq - ticket.seq
            refill = self.rate * max(0.0, now - ticket.at)
            if first:
                self.tokens = min(self.capacity, said.remaining + refill) - since
            else:
                self.tokens = min(self.tokens, said.remaining + 1 + refill - since)
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self, now: float) -> None:
        assert self.rate is not None
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    # threads -----------------------------------------------------------------------------------
    def acquire(self, timed: bool = True) -> Ticket | None:
        """Block until the call may start; None if told to stop meanwhile."""
        with self._lock:
            me = threading.Condition(self._lock)
            waited = self.in_flight >= self.window
            self._waiters.append(me)
            try:
                while not self.stop.is_set():
                    if self._waiters[0] is not me:
                        me.wait(0.5)
                        continue
                    got = self.try_start(self.clock(), waited, timed)
                    if isinstance(got, Ticket):
                        return got
                    waited = waited or got == math.inf
                    me.wait(min(got, 0.5))
                return None
            finally:
                self._waiters.remove(me)
                if self._waiters:
                    self._waiters[0].notify()

    def release(
        self, ticket: Ticket, outcome: str = OK, retry_after: float | None = None, rate: RateHeaders | None = None
    ) -> None:
        with self._lock:
            self.done(ticket, self.clock(), outcome, retry_after, rate)
            if self._waiters:
                self._waiters[0].notify()

    def describe(self) -> str:
        with self._lock:
            paced = ""
            if self.rate is not None and self.stated_rate is not None:
                paced = f", paced at {self.rate:.1f}/s of {self.stated_rate:.1f}/s"
            return f"window {self.window}{paced}; " + ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
