"""Remote calls sent on a small pool while the caller goes on; each answer is handled on the caller's
thread (the manifest is written there only), where the handler reads it as the call's own result."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

Handler = Callable[[Callable[[], Any]], None]  # called with the call's result(): the value, or its error raised


class Calls:
    def __init__(self, threads: int, name: str):
        self.threads, self.name = threads, name
        self.under_way: dict[Future[Any], Handler] = {}
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, call: Callable[[], Any], then: Handler) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
        self.under_way[self._pool.submit(call)] = then

    def answer(self, future: Future[Any]) -> None:
        """Handle one finished call (one of under_way)."""
        self.under_way.pop(future)(future.result)

    def answer_some(self, timeout: float) -> None:
        """Handle the calls that finish first, waiting at most `timeout` for one."""
        if self.under_way:
            done, _ = wait(self.under_way, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                self.answer(future)

    def drain(self) -> None:
        """Wait for every call under way, handling each answer as it comes."""
        while self.under_way:
            done, _ = wait(self.under_way, return_when=FIRST_COMPLETED)
            for future in done:
                self.answer(future)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
