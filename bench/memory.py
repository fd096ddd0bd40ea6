"""Issue 7 P3: peak RSS of the large no-op resync, and the RSS hashing a 2 GB file adds."""

from __future__ import annotations

import json

from bench.common import PYTHON, Context, Outcome, run_child
from bench.noop import noop_child, synced_tree

SPARSE_BYTES = 2 * 1024**3
NOOP_LIMIT_MB = 150.0
HASH_LIMIT_MB = 20.0

# Runs in a child: RSS after the imports, peak reset, then the peak while sha256_file streams the file.
HASH_CHILD = r"""
import json, sys, time
from pathlib import Path
from ingest.survey import sha256_file

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
    return float("nan")

try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
before_rss, before_hwm = status("VmRSS"), status("VmHWM")
started = time.perf_counter()
digest = sha256_file(Path(sys.argv[1]))
seconds = time.perf_counter() - started
after_hwm = status("VmHWM")
base = before_rss if reset else before_hwm
print(json.dumps({"digest": digest, "seconds": seconds, "rss_before_mb": before_rss, "hwm_before_mb": before_hwm,
                  "hwm_after_mb": after_hwm, "added_mb": max(0.0, after_hwm - base), "hwm_reset": reset}))
"""


def run(ctx: Context) -> Outcome:
    out = Outcome()
    synced = synced_tree(ctx)
    ctx.log(f"memory: peak RSS of a no-op `ingest sync` over {synced.files:,} files")
    child, report = noop_child(synced)
    out.details["noop"] = {"maxrss_mb": child.maxrss_mb, "seconds": child.seconds, "counts": report.get("counts")}
    out.add(
        "memory",
        f"peak RSS, `ingest sync` no-op of {synced.files:,} files",
        child.maxrss_mb,
        "MB",
        ("<=", NOOP_LIMIT_MB),
        "the child process's own VmHWM at exit",
    )

    sparse = ctx.cache / "sparse-2GiB.bin"
    if not sparse.is_file() or sparse.stat().st_size != SPARSE_BYTES:
        with open(sparse, "wb") as fh:
            fh.truncate(SPARSE_BYTES)  # sparse: no disk used, but every byte is read and hashed
    ctx.log("memory: RSS added by ingest.survey.sha256_file on a 2 GiB sparse file")
    hashed = run_child([PYTHON, "-c", HASH_CHILD, str(sparse)], synced.env, synced.home)
    try:
        data = json.loads(hashed.stdout)
    except ValueError:
        raise RuntimeError(f"the hashing child failed (exit {hashed.returncode}): {hashed.stderr[-400:]}") from None
    out.details["hash"] = {**data, "child_maxrss_mb": hashed.maxrss_mb, "bytes": SPARSE_BYTES}
    how = "VmHWM after − VmRSS before, peak reset" if data["hwm_reset"] else "VmHWM after − VmHWM before"
    out.add(
        "memory",
        "RSS added by sha256_file on a 2 GiB file",
        data["added_mb"],
        "MB",
        ("<=", HASH_LIMIT_MB),
        f"{how}; child peak {hashed.maxrss_mb:.0f} MB",
    )
    out.add(
        "memory",
        "sha256_file throughput",
        SPARSE_BYTES / 1e6 / data["seconds"],
        "MB/s",
        None,
        "sparse file: page cache only, no disk reads",
    )
    return out
