"""Loaded by the Python children scripts/bench starts: at exit, write this process's peak RSS (VmHWM).

wait4()'s ru_maxrss cannot be trusted for this: exec() carries the parent's high-water mark into the
child's, so a child of a large benchmark process would report the parent's size.
"""

import atexit
import os


def _write_peak() -> None:
    target = os.environ.get("BENCH_PEAK_FILE")
    if not target:
        return
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    with open(target, "w") as out:
                        out.write(line.split()[1])  # kB
                    return
    except OSError:
        pass


atexit.register(_write_peak)
