"""The table and the report of `scripts/compat`: one row per step (expected, observed, PASS/FAIL,
seconds), then each step's commands, ingest's output and what the server answered."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Step:
    name: str
    expected: str
    observed: str = ""
    ok: bool = False
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


@dataclass
class Ran:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        try:
            out = json.loads(self.stdout)
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {"items": out}


def describe_checkout(checkout: Path, ref: str | None = None) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True).stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    branch, commit = ref or git("rev-parse", "--abbrev-ref", "HEAD"), git("rev-parse", "--short", "HEAD")
    subject = git("log", "-1", "--format=%s")[:100]
    return f"{checkout} (branch {branch}, commit {commit} “{subject}”{dirty})"


def checkout_state(checkout: Path) -> str:
    """HEAD and the uncommitted diff: a run whose checkout changes under it tests no one version."""
    git = ["git", "-C", str(checkout)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    diff = subprocess.run([*git, "diff", "HEAD"], capture_output=True, text=True).stdout
    return hashlib.sha256((head + diff).encode()).hexdigest()


def table(steps: list[Step]) -> str:
    rows = ["| step | expected | observed | result | s |", "|---|---|---|---|--:|"]
    for s in steps:
        cell = s.observed.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {s.name} | {s.expected} | {cell[:400]} | {'PASS' if s.ok else 'FAIL'} | {s.seconds:.1f} |")
    return "\n".join(rows)


def report(steps: list[Step], header: str, seconds: float, run_dir: Path) -> str:
    passed = sum(s.ok for s in steps)
    lines = [
        f"# scripts/compat against llama-stack 0.7.3 — {passed}/{len(steps)} steps pass",
        "",
        header,
        f"Total {seconds:.0f} s. Logs and state of this run: {run_dir}",
        "",
        table(steps),
        "",
    ]
    for s in steps:
        lines += [
            f"## {'PASS' if s.ok else 'FAIL'}: {s.name} ({s.seconds:.1f} s)",
            "",
            f"Expected: {s.expected}  ",
            f"Observed: {s.observed}",
            "",
        ]
        lines += ["```", "\n\n".join(s.details) or "(no details)", "```", ""]
    return "\n".join(lines)
