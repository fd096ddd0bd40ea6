"""Run a pure function over shares of a list in forked processes, one share each, the first one here.

A walk of a large tree on a local disk is work for the interpreter (a stat answered from the kernel's
cache in a microsecond, then Python's own work on the entry), and threads only take turns at its lock:
processes are the only way to use a second core. A fork starts with everything already imported and
the walk's state in hand; each child sends its result back pickled and exits. Only where this process
runs one thread (a fork copies a lock another thread holds, held for ever) and only on a machine with
more than one core for it. A child that fails has its share done here, so the result is the same.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_PROCESSES = 4


def processes() -> int:
    """How many processes a spread runs in (1: not at all): one for each core not already busy. A fork
    costs a fifth more work than a serial walk, for half the wall time where a core is idle; on a
    machine whose cores are all taken it is only the fifth more."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores - busy(), MAX_PROCESSES))


def busy(loadavg: str = "/proc/loadavg") -> int:
    """How many cores other processes are using now. Linux says how many tasks are runnable at this
    moment (this one among them); the load average, the fallback, trails by a minute: a cron job run
    after another would find the cores taken by the one before it, and one started beside a new hog
    would not see it."""
    try:
        with open(loadavg, encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(0, running - 1)
    except (OSError, ValueError, IndexError):
        return max(0, int(os.getloadavg()[0] + 0.5) - 1) if hasattr(os, "getloadavg") else 0


def spread(items: Sequence[T], work: Callable[[list[T]], R], n: int) -> list[R]:
    """work() of each of n interleaved shares of items, in share order; the first runs in this process."""
    shares = [list(items[i::n]) for i in range(n)]
    children: list[tuple[int, int, list[T]]] = []
    try:
        for share in shares[1:]:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: do the share, send it, leave without running anything of the parent's
                code = 1
                try:
                    os.close(read)
                    data = pickle.dumps(work(share), protocol=pickle.HIGHEST_PROTOCOL)
                    with os.fdopen(write, "wb") as out:
                        out.write(data)
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            children.append((pid, read, share))
        results = [work(shares[0])]
        while children:
            pid, read, share = children.pop(0)
            with os.fdopen(read, "rb") as inp:
                data = inp.read()
            _, status = os.waitpid(pid, 0)
            results.append(pickle.loads(data) if status == 0 and data else work(share))
        return results
    finally:
        for pid, read, _ in children:  # an error here: the children still running are not left behind
            os.close(read)
            os.waitpid(pid, 0)
