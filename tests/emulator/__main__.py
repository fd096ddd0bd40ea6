"""python -m tests.emulator --port 0 --latency-ms 100 --upload-rps 100 ...

Prints "listening on http://127.0.0.1:PORT/v1" (flushed) and serves until SIGTERM / SIGINT.
Every field of faults.Options is a flag (--index-delay, --fault-rate, --fault-mix 429=3,reset=1, ...);
set-valued options take comma-separated values and may repeat; booleans have --x / --no-x.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import fields

from .emulator import Emulator
from .faults import SET_FIELDS, Options

OPTIONAL_NUMBERS = {"upload_rps": float, "poll_after_ms": int, "index_fail_times": int}


def _mix(text: str) -> dict:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, _, weight = item.partition("=")
        out[kind.strip()] = float(weight or 1)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.emulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    defaults = Options()
    for f in fields(Options):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if f.name in SET_FIELDS:
            p.add_argument(
                flag,
                dest=f.name,
                action="append",
                default=None,
                metavar="A,B",
                help=f"comma-separated, repeatable (default {sorted(default) if default else default})",
            )
        elif f.name == "fault_mix":
            p.add_argument(
                flag,
                dest=f.name,
                type=_mix,
                default=None,
                metavar="KIND=W,...",
                help=f"weights of 429,500,503,reset,timeout,slow (default {default})",
            )
        elif isinstance(default, bool):
            p.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=f"(default {default})"
            )
        else:
            kind = OPTIONAL_NUMBERS.get(f.name) or type(default)
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=f"(default {default})")
    p.add_argument("--no-poll-after", action="store_true", help="omit the openai-poll-after-ms header")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    options = {}
    for f in fields(Options):
        value = getattr(args, f.name)
        if value is None:
            continue
        if f.name in SET_FIELDS:
            value = frozenset(x.strip() for item in value for x in item.split(",") if x.strip())
        options[f.name] = value
    if args.no_poll_after:
        options["poll_after_ms"] = None
    emu = Emulator(host=args.host, port=args.port, **options).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"listening on {emu.base_url}", flush=True)
    try:
        while not done.wait(0.2):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
