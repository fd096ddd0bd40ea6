"""Text for people: run summaries, status tables, search hits, the progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a search imports render: not the whole sync pipeline with it
    from ingest.sync import Report

ORDER = ("new", "changed", "resumed", "moved", "deleted", "unchanged", "rejected", "failed", "held")
SHOWN_ALIKE = 5  # past this many files with one reason, a list names the reason once


def summary(report: Report, verbose: bool = True) -> str:
    c = report.counts
    head = "plan" if report.dry_run else "synced"
    lines = [
        f"{head}: "
        + ", ".join(f"{c.get(k, 0)} {k}" for k in ORDER if (k in c and (k != "resumed" or c[k])) or k == "failed")
        + (f" in {report.seconds:.1f} s" if not report.dry_run else "")
    ]
    if not report.dry_run:
        lines.append(
            f"uploaded {c.get('uploaded', 0)}, indexed {c.get('indexed', 0)}, "
            f"remote files deleted {c.get('remote_deleted', 0)}"
        )
    if report.dry_run:
        for kind, paths in report.planned.items():
            if kind == "unchanged" and not verbose:
                continue
            for path in paths:
                lines.append(f"  {kind:<9} {path}")
    for title, items in (
        ("failed", report.failures),
        ("failed earlier, not retried", report.kept_failed),
        ("rejected", report.rejected),
        ("held back (not deleted)", report.held),
    ):
        if items:
            lines.append(f"{title}:")
            lines += _grouped(items)
    if report.still_indexing:
        lines.append(f"still indexing: {len(report.still_indexing)} files")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _grouped(items: list[tuple[str, str]]) -> list[str]:
    """One line per file; but a reason shared by many files (a mass deletion held back) is said once."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in items:
        by_reason.setdefault(reason, []).append(path)
    lines = []
    for reason, paths in by_reason.items():
        if len(paths) > SHOWN_ALIKE:
            lines.append(f"  {len(paths)} files: {reason}")
            lines += [f"    {path}" for path in paths[:3]] + [f"    … and {len(paths) - 3} more (--json lists all)"]
        else:
            lines += [f"  {path}: {reason}" for path in paths]
    return lines


def status(data: dict[str, Any]) -> str:
    lines = [f"backend: {data['backend']}   manifest: {data['manifest']}"]
    daemon = data.get("daemon")
    if daemon:
        beat = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(daemon["heartbeat_at"]))
        state = f"running (pid {daemon['pid']})" if daemon["running"] else "not running"
        lines.append(f"daemon: {state}, last heartbeat {beat}, queue {daemon.get('queue', 0)}")
    for store in data["stores"]:
        ids = ", ".join(store["vector_store_ids"]) or "(not created yet)"
        files = ", ".join(f"{n} {state}" for state, n in sorted(store["files"].items())) or "no files"
        lines.append(f"store {store['name']}: {ids}")
        lines.append(f"  files: {files}")
        if store["vector_store_ids"]:
            lines.append(f"  usage: {store['usage_bytes']:,} bytes, about ${store['cost_per_day_usd']:.4f}/day")
        unknown = [s for s in store["remote_status"] if s.startswith("unknown")]
        if unknown:
            lines.append(f"  remote: {unknown[0]}; the usage shown is incomplete")
    if data["recent_runs"]:
        lines.append("recent runs:")
        for run in data["recent_runs"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started_at"]))
            counts = ", ".join(f"{v} {k}" for k, v in run["counts"].items() if v)
            lines.append(f"  {when} {run['command']} exit {run['exit_code']}: {counts or 'nothing to do'}")
    if data["problems"]:
        lines.append("problems:")
        lines += [f"  {p['state']:<8} {p['path']}: {p['reason']}" for p in data["problems"]]
    return "\n".join(lines)


def hits(results: list[dict[str, Any]]) -> str:
    if not results:
        return "no results"
    out = []
    for i, hit in enumerate(results, 1):
        snippet = " ".join(hit["text"].split())[:200]
        out.append(f"{i}. {hit['path']}  (score {hit['score']:.3f})\n   {snippet}")
    return "\n".join(out)


def progress_bar() -> Callable[[str, int, int], None]:
    """A one-line progress display on stderr (only used on a TTY)."""

    def show(phase: str, done: int, total: int) -> None:
        if total:
            width = 30
            filled = int(width * done / total)
            sys.stderr.write(f"\r{phase:<7}[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return show


def findings(found) -> str:
    if not found.drifts:
        return f"in sync: {found.stores_checked} stores, {found.files_checked} store files checked"
    lines = [f"drift: {len(found.drifts)} problems in {found.stores_checked} stores"]
    lines += [f"  {d.kind:<18} {d.path}: {d.detail}" for d in found.drifts]
    return "\n".join(lines)


def repairs(result, verbose: bool = False) -> str:
    """Nothing at all when nothing needed doing: cron mails only what matters. Files rejected as
    before are no news; held-back deletions are, every night, until someone looks."""
    report = result.report
    busy = (
        result.actions
        or result.left_alone
        or (
            report
            and (
                report.failures
                or report.held
                or report.newly_rejected
                or any(report.counts.get(k) for k in ("new", "changed", "moved", "deleted", "uploaded"))
            )
        )
    )
    if not busy and not verbose:
        return ""
    lines = [f"repaired: {a}" for a in result.actions] + [f"left alone: {a}" for a in result.left_alone]
    if report:
        lines.append(summary(report, verbose=False))
    return "\n".join(lines)
