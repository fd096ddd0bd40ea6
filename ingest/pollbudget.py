"""When each attached batch is asked about: one budget for all of a run's batches, so that the questions
per second do not grow with their number (a 100,000-file cold sync makes 200 batches), while one or two
batches are asked as promptly as the server's hint allows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

POLL_EVERY = 1.0  # seconds between questions about one batch while uploads go on (waiting: the server's hint)
AT_ONCE = 4  # batch questions in flight at once, however many batches there are
PER_SECOND = 5.0  # batch questions started per second, across all batches (OpenAI limits requests per minute)
BACKOFF_MAX = 30.0  # seconds: the longest pause after questions about one batch kept failing


@dataclass
class _Entry:
    answered: float  # when it was last answered (or tracked); the next question is due from then
    asking: bool = False
    hint: float | None = None  # the server's last openai-poll-after-ms, in seconds
    errors: int = 0  # failed questions in a row: each doubles the pause

    def due(self, waiting: bool) -> float:
        if self.errors:
            return self.answered + min(POLL_EVERY * 2**self.errors, BACKOFF_MAX)
        if self.answered == float("-inf"):
            return self.answered  # never asked: at once
        if waiting:  # nothing else to do: as often as the server says (1 s if it says nothing)
            return self.answered + max(0.05, min(self.hint if self.hint is not None else POLL_EVERY, 10.0))
        return self.answered + max(POLL_EVERY, self.hint or 0.0)


class PollBudget:
    """Which batches to ask about now: the one due longest ago first (round robin), at most AT_ONCE in
    flight and PER_SECOND started per second (a token bucket one second deep)."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._tokens, self._filled = PER_SECOND, clock()

    def track(self, batch_id: str, answered: bool = False, hint: float | None = None) -> None:
        """A batch to ask about: at once, or (answered) after the usual pause."""
        self._entries[batch_id] = _Entry(self.clock() if answered else float("-inf"), hint=hint)

    def forget(self, batch_id: str) -> None:
        self._entries.pop(batch_id, None)

    def take(self, waiting: bool) -> list[str]:
        """The batches to ask about now, each marked as being asked until answered() or failed()."""
        now = self.clock()
        self._tokens = min(PER_SECOND, self._tokens + (now - self._filled) * PER_SECOND)
        self._filled = now
        in_flight = sum(e.asking for e in self._entries.values())
        due = sorted(
            (e.due(waiting), batch_id)
            for batch_id, e in self._entries.items()
            if not e.asking and e.due(waiting) <= now
        )
        out: list[str] = []
        for _, batch_id in due:
            if in_flight >= AT_ONCE or self._tokens < 1:
                break
            self._entries[batch_id].asking = True
            self._tokens -= 1
            in_flight += 1
            out.append(batch_id)
        return out

    def answered(self, batch_id: str, hint: float | None = None) -> None:
        """Still in progress: asked again after the usual pause."""
        if (entry := self._entries.get(batch_id)) is not None:
            entry.asking, entry.answered, entry.hint, entry.errors = False, self.clock(), hint, 0

    def failed(self, batch_id: str) -> None:
        """The question (or the listing after it) failed: asked again after a pause that doubles each time."""
        if (entry := self._entries.get(batch_id)) is not None:
            entry.asking, entry.answered, entry.errors = False, self.clock(), entry.errors + 1

    def next_in(self, waiting: bool) -> float:
        """Seconds until take() may give a batch (POLL_EVERY when there is none to ask about)."""
        now = self.clock()
        dues = [e.due(waiting) for e in self._entries.values() if not e.asking]
        if not dues:
            return POLL_EVERY
        tokens = min(PER_SECOND, self._tokens + (now - self._filled) * PER_SECOND)
        return max(min(dues) - now, (1 - tokens) / PER_SECOND, 0.0)
