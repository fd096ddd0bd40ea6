"""When the server is declared unreachable: the one rule, kept without the SDK (a LazyRemote carries it).

Tries that fail for the server's or the network's reason (a connection refused or reset, a timeout)
and calls that give up on 5xx count against the server; any answer of its own (a success, a 400, a
429) clears the count. Once as many count in a row as one call may try (and MIN_IN_A_ROW), with
no answer in between, the breaker trips: it sets the run's stop, so that nothing more is sent and
calls waiting or not yet sent end at once, and the run ends saying the server stopped answering."""

from __future__ import annotations

import threading

MIN_IN_A_ROW = 6  # however few tries a call is given (request_retries), a few lost answers are not an outage


class Breaker:
    def __init__(self, url: str, stop: threading.Event, in_a_row: int):
        self.url, self.stop = url, stop
        self.in_a_row = max(MIN_IN_A_ROW, in_a_row)
        self.count = 0
        self.causes: dict[str, None] = {}  # of the failures in a row, in the order first met
        self.tripped = False
        self._stopped = False  # the stop was set by this breaker, not by a signal or a caller
        self._reason: object = None  # the stop's reason as the trip found it: a signal since changes it
        self._lock = threading.Lock()

    def answered(self) -> None:
        """The server answered a try (whatever it said): it is reachable."""
        with self._lock:
            if not self.tripped:
                self.count, self.causes = 0, {}

    def failed(self, cause: str) -> None:
        """A try failed for the network's or server's reason (cause: "connection refused", "HTTP 503")."""
        with self._lock:
            self.count += 1
            self.causes[cause] = None
            if self.tripped or self.count < self.in_a_row:
                return
            self.tripped = True
            if not self.stop.is_set():
                self._stopped, self._reason = True, getattr(self.stop, "reason", None)
                self.stop.set()

    def ended_the_run(self) -> bool:
        """Whether the run's stop is this breaker's: no signal or caller stopped the run first or since."""
        return self._stopped and self.stop.is_set() and getattr(self.stop, "reason", None) is self._reason

    def sentence(self) -> str:
        return f"the server at {self.url} stopped answering ({'; '.join(list(self.causes)[:3])})"

    def reset(self) -> None:
        """For the next run (a daemon's next pass): closed again, and the stop it set cleared."""
        with self._lock:
            if self.ended_the_run():
                self.stop.clear()
            self.count, self.causes, self.tripped, self._stopped = 0, {}, False, False
