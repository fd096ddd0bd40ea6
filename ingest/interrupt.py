"""Ctrl-C and SIGTERM end a run cleanly: start nothing new, record what was done, exit 130 (143)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def reason(stop: threading.Event) -> str | None:
    """The signal that stopped a run, if one did ("stopped": told to by a caller of the API)."""
    return (getattr(stop, "reason", None) or "stopped") if stop.is_set() else None


class Interrupt:
    """While active, the first SIGINT or SIGTERM sets `stop` (the run winds down and records itself);
    a second one raises KeyboardInterrupt for a hard stop."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and getattr(self.stop, "reason", None):  # (a server's outage gives no reason)
            raise KeyboardInterrupt
        self.stop.reason = signal.Signals(signum).name  # type: ignore[attr-defined]
        self.stop.set()

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
