"""Text for people: run summaries, status tables, search hits, the progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from ingest.events import FileEvent, Report
    from ingest.indexing import Progress

ORDER = (
    "new",
    "changed",
    "resumed",
    "moved",
    "moved_store",
    "attributes",
    "deleted",
    "excluded",
    "unchanged",
    "ignored",
    "rejected",
    "failed",
    "held",
)
OPTIONAL = ("resumed", "moved_store", "attributes", "excluded", "ignored")  # said only when there are some
# How a person reads a count's or a plan line's key (the keys stay as they are in --json).
LABELS = {
    "moved_store": "moved store",
    "attributes": "with new attributes",
    "kept_failed": "failed earlier",
    "held_back": "held back",
    "retry_failed": "retried",
}
SHOWN_ALIKE = 5  # past this many files with one reason, a list names the reason once
SHOWN_PROBLEMS = 20  # lines of problem (or ignored) files `ingest status` shows; --json lists all


def count(n: int, noun: str) -> str:
    """'1 store', '2 stores'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _label(key: str) -> str:
    return LABELS.get(key, key)


def summary(report: Report, verbose: bool = True, named: bool = False) -> str:
    """named: the files were told one line each already (-v), so the summary counts them and names
    none again: each file is named once a run."""
    c = report.counts
    # A stopped run's counts are what it found to do, not what it synced: the last line says what is left.
    head = "plan" if report.dry_run else "found" if report.interrupted or report.unreachable else "synced"
    lines = [
        f"{head}: "
        + ", ".join(
            f"{c.get(k, 0)} {_label(k)}" for k in ORDER if (k in c and (k not in OPTIONAL or c[k])) or k == "failed"
        )
        + (f" in {report.seconds:.1f} s" if not report.dry_run else "")
    ]
    if not report.dry_run:
        lines.append(
            f"uploaded {c.get('uploaded', 0)}, indexed {c.get('indexed', 0)}, "
            f"remote files deleted {c.get('remote_deleted', 0)}"
        )
    if report.dry_run:
        shown = {kind: paths for kind, paths in report.planned.items() if paths and (verbose or kind != "unchanged")}
        width = max((len(_label(kind)) for kind in shown), default=0)
        for kind, paths in shown.items():
            lines += [f"  {_label(kind):<{width}} {path}" for path in paths]
    for title, items in (
        ("failed", report.failures),
        ("failed earlier, not retried", report.kept_failed),
        ("rejected", report.rejected),
        ("held back (not deleted)", report.held),
    ):
        if items and not named:
            lines.append(f"{title}:")
            lines += _grouped(items)
    if report.still_indexing:
        lines.append(f"still indexing: {count(len(report.still_indexing), 'file')}")
    lines += [f"note: {n.describe()}" for n in report.notes]
    if report.interrupted or report.unreachable:
        left = [
            count(c[key], noun)
            for key, noun in (("left", "file"), ("remote_deletes_left", "remote deletion"))
            if c.get(key)
        ]
        lines.append(
            (report.unreachable or f"interrupted by {report.interrupted}")
            + ": "
            + (
                f"{' and '.join(left)} left for the next run"
                if left
                else "nothing of its plan was left undone"
                if "left" in c
                else "stopped before it had looked at the files"
            )
            + "; what was done is recorded and the next run goes on from there"
        )
    return "\n".join(lines)


def files(report: Report) -> str:
    """One line per file acted on, as `rclone -v` prints them: the action, the path, why."""
    return "\n".join(f"{e.action:<10} {e.shown}" + (f"  ({e.reason})" if e.reason else "") for e in report.files)


def _grouped(items: list[FileEvent]) -> list[str]:
    return grouped([(event.shown, event.reason) for event in items])


def grouped(items: list[tuple[str, str]], most: int | None = None, more: str = "--json lists all") -> list[str]:
    """One line per file (path, reason); but a reason shared by many files (a mass deletion held back)
    is said once, and past `most` lines the rest is one count: thousands of rejected files do not
    flood the terminal. `more` says where to see them all."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in items:
        by_reason.setdefault(reason, []).append(path)
    lines: list[tuple[str, int]] = []  # each line, and how many files it names
    for reason, paths in by_reason.items():
        if len(paths) > SHOWN_ALIKE:
            lines += [(f"  {len(paths)} files: {reason}", 0)] + [(f"    {path}", 1) for path in paths[:3]]
            lines.append((f"    … and {len(paths) - 3} more ({more})", len(paths) - 3))
        else:
            lines += [(f"  {path}: {reason}", 1) for path in paths]
    if most is not None and len(lines) > most:
        lines = lines[: most - 1]
        lines.append((f"  … and {len(items) - sum(n for _, n in lines)} more files ({more})", 0))
    return [line for line, _ in lines]


def status(data: dict[str, Any]) -> str:
    lines = [f"backend: {data['backend']}   manifest: {data['manifest']}", f"config: {data['config']}"]
    changes = data.get("local_changes") or {}
    pending = sum(changes.get(k, 0) for k in ("new", "changed", "deleted"))
    if changes:
        lines.append(
            f"local changes not synced yet: {pending}"
            + (
                f" ({', '.join(f'{changes[k]} {k}' for k in ('new', 'changed', 'deleted') if changes[k])})"
                if pending
                else ""
            )
            + (f"; {count(changes['unreachable_roots'], 'folder')} missing" if changes.get("unreachable_roots") else "")
        )
    if data.get("server"):
        lines.append(f"server: {data['server']['base_url']} ({data['server']['describe']})")
    daemon = data.get("daemon")
    if daemon:
        beat = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(daemon["heartbeat_at"]))
        state = f"running (pid {daemon['pid']})" if daemon["running"] else "not running"
        lines.append(f"daemon: {state}, last heartbeat {beat}, queue {daemon.get('queue', 0)}")
    for store in data["stores"]:
        files = ", ".join(f"{n} {state}" for state, n in sorted(store["files"].items())) or "no files"
        if store.get("unplaced"):  # the files turned away before a store was chosen
            lines.append(f"not in any store (rejected or unreadable): {files}")
            continue
        ids = ", ".join(store["vector_store_ids"]) or "(not created yet)"
        lines.append(f"store {store['name']}: {ids}")
        lines.append(f"  files: {files}")
        for folder in store.get("folders", []):
            lines.append(f"  from: {folder}")
        if store["vector_store_ids"] and store["usage_bytes"] is None:
            lines.append("  usage: unknown (the server reports 0 bytes for stores that hold files)")
        elif store["vector_store_ids"]:
            lines.append(f"  usage: {store['usage_bytes']:,} bytes, about ${store['cost_per_day_usd']:.4f}/day")
        unknown = [s for s in store["remote_status"] if s.startswith("unknown")]
        if unknown:
            lines.append(f"  remote: {unknown[0]}; the usage shown is incomplete")
    if data["recent_runs"]:
        lines.append("recent runs:")
        for run in data["recent_runs"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started_at"]))
            counts = ", ".join(f"{v} {_label(k)}" for k, v in run["counts"].items() if v)
            if run.get("state") == "running":
                lines.append(f"  {when} {run['command']} running")
                continue
            if run.get("state") == "ended":
                lines.append(f"  {when} {run['command']} ended without recording an end (killed or crashed)")
                continue
            cut = f" (interrupted by {run['interrupted']})" if run.get("interrupted") else ""
            if run.get("error"):
                counts = f"{counts}; failed: {run['error']}" if counts else f"failed: {run['error']}"
            elif not counts:
                counts = "failed" if run["exit_code"] else "nothing to do"
            lines.append(f"  {when} {run['command']} exit {run['exit_code']}{cut}: {counts}")
    if data["problems"]:
        problems = data["problems"]
        lines.append(f"problems: {count(len(problems), 'file')}")
        states = sorted({p["state"] for p in problems})
        lines += grouped(
            [(p["path"], f"{p['state']}: {p['reason']}") for p in problems],
            SHOWN_PROBLEMS,
            "ingest status --json lists all, " + " or ".join(f"ingest ls --state {state}" for state in states),
        )
    if data.get("ignored"):
        lines.append("ignored (ingest ignore --undo PATH to look again):")
        lines += grouped(
            [(i["path"], i["reason"] or "acknowledged") for i in data["ignored"]],
            SHOWN_PROBLEMS,
            "ingest status --json lists all",
        )
    return "\n".join(lines)


def forgotten(done) -> str:
    verb = "would delete" if done.dry_run else "deleted"
    lines = [f"{'plan' if done.dry_run else 'forgot'}: {', '.join(done.folders)}"]
    lines.append(f"{verb} {count(len(done.deleted), 'remote file')}" + (":" if done.deleted else ""))
    lines += [f"  deleted   {path}" for path in done.deleted]
    for name in done.stores_removed:
        lines.append(f"{'would remove' if done.dry_run else 'removed'} the store {name!r}, left empty")
    lines += [f"failed: {path}: {reason}" for path, reason in done.failures]
    lines += [f"note: {n}" for n in done.notes]
    return "\n".join(lines)


def ignored(done, undo: bool) -> str:
    if undo:
        return "\n".join(f"{'looking at' if i.done else 'was not ignored:'} {i.path}" for i in done)
    return "\n".join(f"ignored {i.path}" + (f" ({i.reason})" if i.reason else "") for i in done)


def listing(files: list[dict[str, Any]]) -> str:
    if not files:
        return "no files"
    out = []
    for f in files:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(f["synced_at"])) if f["synced_at"] else "-"
        size = f"{f['size']:,}" if f["size"] is not None else "-"
        line = f"{f['state']:<9} {f['store'] or '-':<14} {f['file_id'] or '-':<30} {size:>12} {when}  {f['path']}"
        out.append(line + (f"  ({f['reason']})" if f["reason"] else ""))
    return "\n".join(out)


def hits(results: list[dict[str, Any]]) -> str:
    if not results:
        return "no results"
    out = []
    for i, hit in enumerate(results, 1):
        snippet = " ".join(hit["text"].split())[:200]
        out.append(f"{i}. {hit['path']}  (score {hit['score']:.3f})\n   {snippet}")
    return "\n".join(out)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | None]:
    """click's progress bars on stderr, one per phase (upload, index); None when not enabled (not a TTY)."""
    if not enabled:
        yield None
        return
    bars: dict[str, ProgressBar[int]] = {}
    drawn: set[str] = set()  # phases whose bar is finished on screen (click's `finished` is set by the last step)

    def show(phase: str, done: int, total: int) -> None:
        if not total or phase in drawn:
            return
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = click.progressbar(length=total, label=f"{phase:<7}", file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.length = total
        if done > bar.pos:
            bar.update(done - bar.pos)
        if done >= total:
            bar.render_finish()
            drawn.add(phase)

    try:
        yield show
    finally:
        for phase, bar in bars.items():
            if phase not in drawn:
                bar.render_finish()


def findings(found) -> str:
    if not found.drifts:
        return f"in sync: {count(found.stores_checked, 'store')}, {count(found.files_checked, 'store file')} checked"
    lines = [f"drift: {count(len(found.drifts), 'problem')} in {count(found.stores_checked, 'store')}"]
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
                or report.store_news
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
