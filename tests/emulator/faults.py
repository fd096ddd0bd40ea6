"""Emulator options (every switch settable from Python and the CLI) and the fault / rate-limit planner."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

FAULT_KINDS = ("429", "500", "503", "reset", "timeout", "slow")
DEFAULT_MIX = {"429": 3.0, "500": 2.0, "503": 2.0, "reset": 2.0, "timeout": 1.0, "slow": 1.0}
PROFILES = ("openai", "llama-stack")
SET_FIELDS = ("rejected_keys", "accepted_keys", "fault_endpoints", "lost_reply_endpoints", "index_fail_names")


@dataclass
class Options:
    # indexing model
    index_delay: float = 0.2  # seconds an attached file stays in_progress (0 = done on the next read)
    poll_after_ms: int | None = 50  # openai-poll-after-ms on GETs of batches and store files (None = omit)
    reject_undecodable_text: bool = True  # text-type files that are not utf-8/utf-16/ascii fail unsupported_file
    max_file_tokens: int = 5_000_000  # bigger files (bytes / 4) fail invalid_file
    removal_lag_s: float = 0.0  # search keeps returning a detached/deleted file this long
    # auth
    rejected_keys: frozenset = frozenset()  # bearer keys answered with 401 invalid_api_key
    accepted_keys: frozenset | None = None  # if set, every other key is rejected too
    # latency and rate limits
    latency_ms: float = 0.0  # added to every request
    jitter_ms: float = 0.0  # plus uniform 0..jitter_ms
    upload_rps: float | None = None  # POST /files requests per second (token bucket) -> 429 beyond it
    # random faults, before the request is processed (state untouched)
    fault_rate: float = 0.0  # fraction of requests that get a fault from fault_mix
    fault_mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    fault_endpoints: frozenset | None = None  # endpoint names ("POST /files"), None = all
    retry_after_s: float = 0.2  # Retry-After of injected 429s and 503s
    timeout_s: float = 10.0  # a "timeout" fault sleeps this long, then drops the connection
    slow_ms: float = 1500.0  # a "slow" fault processes normally and delays the reply this long
    # lost replies: processed (state changed), then the connection is dropped without a response
    lost_reply_rate: float = 0.0
    lost_reply_endpoints: frozenset = frozenset({"POST /files"})
    # indexing failures (server_error)
    index_fail_names: frozenset = frozenset()  # filenames (full or basename) that fail indexing
    index_fail_rate: float = 0.0  # fraction of attaches that fail indexing
    index_fail_times: int | None = None  # only the first N attaches of a given filename fail (None = always)
    stuck_batches: bool = False  # files of new batches stay in_progress until unstick_batches()
    # server profile: "openai", or "llama-stack" (llama-stack 0.7.3 as met: see llama.py)
    profile: str = "openai"
    embedder_down: bool = False  # every attach fails with a server_error (llama-stack: reported once, then null)
    lose_records_over: int | None = None  # attaches beyond this many in flight lose their store-file record
    lose_records_every: int | None = None  # every Nth attach loses its record (the same, without timing)
    files_created_at: int | None = None  # every new File reports this created_at (a test pins the server clock)
    seed: int = 0

    def update(self, **changes) -> None:
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise TypeError(f"unknown emulator option {key!r}")
            if key in SET_FIELDS and value is not None:
                value = frozenset([value] if isinstance(value, str) else value)
            if key == "profile" and value not in PROFILES:
                raise ValueError(f"unknown profile {value!r}; known: {PROFILES}")
            if key == "fault_mix":
                unknown = set(value) - set(FAULT_KINDS)
                if unknown:
                    raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
                value = {k: float(v) for k, v in value.items()}
            setattr(self, key, value)


class TokenBucket:
    """Requests per second with a burst of max(1, rps), as a per-minute limit enforced per second is.

    take() answers (how long to wait when empty, what is left, how long until the bucket is full
    again): the last is what OpenAI's x-ratelimit-reset-requests means."""

    def __init__(self, rps: float):
        self.rps, self.capacity = rps, max(1.0, rps)
        self.tokens, self.stamp = self.capacity, time.monotonic()

    def take(self) -> tuple[float, int, float]:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rps)
        self.stamp = now
        wait = 0.0
        if self.tokens >= 1.0:
            self.tokens -= 1.0
        else:
            wait = (1.0 - self.tokens) / self.rps
        return wait, int(self.tokens), (self.capacity - self.tokens) / self.rps


@dataclass
class Decision:
    kind: str | None = None  # one of FAULT_KINDS, "ratelimit", or None
    retry_after: float = 0.0
    remaining: int | None = None  # for x-ratelimit-remaining-requests
    reset_s: float = 0.0  # for x-ratelimit-reset-requests: until the bucket is full again
    lose_reply: bool = False


class FaultPlan:
    """Decides, per request, whether it is rate-limited, faulted, or has its reply lost. Seeded, thread-safe."""

    def __init__(self, options: Options):
        self.options = options
        self.lock = threading.Lock()
        self.rng = random.Random(options.seed)
        self.bucket: TokenBucket | None = None
        self.queue: list[list] = []  # [kind, remaining, endpoint or None]

    def reseed(self, seed: int) -> None:
        with self.lock:
            self.rng = random.Random(seed)

    def inject(self, kind: str, count: int = 1, endpoint: str | None = None) -> None:
        if kind not in (*FAULT_KINDS, "lost_reply"):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self.lock:
            self.queue.append([kind, count, endpoint])

    def _queued(self, endpoint: str, kinds: Iterable[str]) -> str | None:
        for entry in self.queue:
            if entry[0] in kinds and entry[2] in (None, endpoint):
                entry[1] -= 1
                if entry[1] <= 0:
                    self.queue.remove(entry)
                return entry[0]
        return None

    def before(self, endpoint: str) -> Decision:
        """Called before processing: rate limit first, then queued faults, then random faults."""
        o = self.options
        with self.lock:
            remaining, reset = None, 0.0
            if endpoint == "POST /files" and o.upload_rps:
                if self.bucket is None or self.bucket.rps != o.upload_rps:
                    self.bucket = TokenBucket(o.upload_rps)
                wait, remaining, reset = self.bucket.take()
                if wait > 0:
                    return Decision("ratelimit", retry_after=wait, remaining=0, reset_s=reset)
            kind = self._queued(endpoint, FAULT_KINDS)
            if kind is None and o.fault_rate > 0 and (o.fault_endpoints is None or endpoint in o.fault_endpoints):
                if self.rng.random() < o.fault_rate:
                    kinds = [k for k, w in o.fault_mix.items() if w > 0]
                    if kinds:
                        kind = self.rng.choices(kinds, weights=[o.fault_mix[k] for k in kinds])[0]
            return Decision(kind, retry_after=o.retry_after_s, remaining=remaining, reset_s=reset)

    def lose_reply(self, endpoint: str) -> bool:
        o = self.options
        with self.lock:
            if self._queued(endpoint, ("lost_reply",)):
                return True
            return (
                o.lost_reply_rate > 0 and endpoint in o.lost_reply_endpoints and self.rng.random() < o.lost_reply_rate
            )

    def delay(self) -> float:
        o = self.options
        with self.lock:
            extra = self.rng.uniform(0, o.jitter_ms) if o.jitter_ms > 0 else 0.0
        return max(0.0, (o.latency_ms + extra) / 1000.0)


def ratelimit_headers(limit_rps: float | None, remaining: int | None, reset_s: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: the limit per minute, what is left, and the time until the
    limit "resets to its initial state" (OpenAI's words), i.e. until the bucket is full again."""
    if not limit_rps:
        return {}
    headers = {
        "x-ratelimit-limit-requests": str(math.ceil(round(limit_rps * 60, 6))),
        "x-ratelimit-remaining-requests": str(max(0, int(remaining or 0))),
        "x-ratelimit-reset-requests": f"{max(0, round(reset_s * 1000))}ms",
    }
    return headers


def retry_headers(seconds: float) -> dict[str, str]:
    """Whole seconds in retry-after (rounded up), the precise value in retry-after-ms (the SDK reads it first)."""
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
    }
