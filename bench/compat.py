"""`scripts/compat`: the whole lifecycle of `ingest` against a real llama-stack 0.7.3 on this machine.

It installs llama-stack and an embeddings endpoint in venvs under a cache folder (bench/compat_servers),
starts both on 127.0.0.1, then drives the ingest CLI of a checkout (`--checkout`, default this one)
through first sync, re-sync, edit, rename, delete, a store deleted on the server, an embedder outage
mid-sync, verify and filtered search. After each step it asks the server itself (bench/compat_checks)
whether every document is searchable exactly once with its current attributes, and prints a table:
step, expected, observed, PASS/FAIL, seconds. Everything it started is stopped at the end, on a
failure and on Ctrl-C. Not part of the test suite: it needs the installs (~10 min the first time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from bench import compat_corpus as corpus
from bench import compat_servers as servers
from bench.common import ROOT, isolated_env
from bench.compat_checks import Doc, ServerLog, client, files_gone, observe, stray_hits, tail
from bench.compat_report import Ran, Step, checkout_state, describe_checkout, report, table

STORE = "compat-docs"  # the root folder's name: zero-config ingest names the store after it
COMMAND_TIMEOUT_S = 900.0


class Compat:
    def __init__(self, checkout: Path, run_dir: Path, inst: servers.Install):
        self.checkout, self.run_dir, self.inst = checkout, run_dir, inst
        self.root = run_dir / STORE
        self.queries: dict[str, Doc] = {}
        self.steps: list[Step] = []
        self.embed_port, self.stack_port = servers.free_port(), servers.free_port()
        self.embed = servers.embedder(inst, run_dir, self.embed_port)
        self.stack = servers.stack(inst, run_dir, self.stack_port, self.embed_port)
        self.base_url = f"http://127.0.0.1:{self.stack_port}/v1"
        self.api = client(self.base_url)
        self.log = ServerLog(self.stack.log)
        self.env = isolated_env(run_dir / "home", OPENAI_BASE_URL=self.base_url, OPENAI_API_KEY="compat")
        self.background: subprocess.Popen[bytes] | None = None
        self.known: dict[str, str] = {}  # path → file ID last seen serving it
        self.deleted_store: str | None = None

    # ---- running things -------------------------------------------------------------------------
    def ingest(self, step: Step, *args: str, quiet: bool = False) -> Ran:
        started = time.monotonic()
        try:
            done = subprocess.run(
                [str(self.checkout / "scripts/run"), *args],
                env=self.env,
                cwd=self.run_dir,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
            ran = Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as exc:
            ran = Ran(-1, str(exc.stdout or ""), f"timed out after {COMMAND_TIMEOUT_S:.0f} s", COMMAND_TIMEOUT_S)
        if not quiet or ran.rc != 0:
            self.record(step, args, ran)
        return ran

    def record(self, step: Step, args: tuple[str, ...] | list[str], ran: Ran) -> None:
        step.details.append(f"$ ingest {' '.join(args)}  → exit {ran.rc} in {ran.seconds:.1f} s")
        summary = ran.summary()
        wanted = ("counts", "failed", "failed_earlier", "still_indexing", "notes")
        keep = {k: summary[k] for k in wanted if summary.get(k)}
        if keep:
            step.details.append("ingest's JSON (excerpt):\n" + json.dumps(keep, indent=1)[:3000])
        elif ran.stdout.strip():
            step.details.append("stdout:\n" + tail(ran.stdout, 30))
        if ran.stderr.strip():
            step.details.append("stderr:\n" + tail(ran.stderr, 25))

    def store_id(self, step: Step) -> str | None:
        ran = self.ingest(step, "status", "--json", quiet=True)
        ids = [s.get("vector_store_ids") for s in ran.summary().get("stores", []) if s.get("name") == STORE]
        if len(ids) == 1 and ids[0] and len(ids[0]) == 1:
            return str(ids[0][0])
        step.details.append(f"`ingest status --json` names these vector stores for {STORE!r}: {ids}")
        return None

    def docs(self) -> list[Doc]:
        return [self.queries[path] for path in sorted(self.queries)]

    def check(self, step: Step, superseded: Sequence[str] = ()) -> tuple[bool, str]:
        """The server's own answer: listing, filtered searches, stray chunks, superseded files."""
        store_id = self.store_id(step)
        obs = observe(self.api, store_id, self.root, self.docs())
        if store_id and obs.files:
            obs.problems += stray_hits(self.api, store_id, self.docs(), set(obs.files))
        obs.problems += files_gone(self.api, [f for f in superseded if f])
        self.known.update(obs.current)
        step.details.extend(obs.notes)
        if obs.files:
            rows = sorted(obs.files.items(), key=lambda kv: str(kv[1]["attributes"].get("path")))
            listing = "\n".join(
                f"  {fid} {i['status']:<10} path={i['attributes'].get('path')!r} "
                f"folder={i['attributes'].get('folder')!r}"
                + (f" last_error={i['last_error']!r}" if i["last_error"] else "")
                for fid, i in rows
            )
            step.details.append("the store's own file listing:\n" + listing)
        if obs.problems:
            step.details.append("problems seen on the server:\n" + "\n".join(f"- {p}" for p in obs.problems))
        self.server_log(step)
        return obs.ok, obs.summary(len(self.queries))

    def server_log(self, step: Step) -> None:
        requests, errors = self.log.read()
        if requests:
            step.details.append(
                "llama-stack answered ≥ 400 to:\n" + "\n".join(f"  {n} × {r}" for r, n in requests.most_common())
            )
        if errors:
            step.details.append("llama-stack logged:\n" + "\n".join(f"  {n} × {e}" for e, n in errors.most_common(12)))

    def run_step(self, name: str, expected: str, body: Callable[[Step], None]) -> Step:
        step = Step(name, expected)
        self.steps.append(step)
        self.log.skip()
        started = time.monotonic()
        print(f"compat: {name} …", file=sys.stderr, flush=True)
        try:
            body(step)
        except KeyboardInterrupt:
            step.observed = "interrupted during this step"
            step.seconds = time.monotonic() - started
            raise
        except Exception as exc:  # a broken step is a FAIL with its traceback; the next steps still run
            step.ok = False
            step.observed = f"the step itself broke: {type(exc).__name__}: {str(exc)[:200]}"
            step.details.append(traceback.format_exc())
            self.server_log(step)
        step.seconds = time.monotonic() - started
        return step

    # ---- the lifecycle --------------------------------------------------------------------------
    def sync_and_check(self, step: Step, superseded: Sequence[str] = ()) -> Ran:
        ran = self.ingest(step, "sync", str(self.root), "--json")
        ok, seen = self.check(step, superseded)
        counts = ran.summary().get("counts", {})
        said = f"exit {ran.rc}, uploaded {counts.get('uploaded', '?')}, indexed {counts.get('indexed', '?')}"
        step.ok = ran.rc == 0 and ok
        step.observed = f"{said}; {seen}"
        if ran.rc == 0 and not ok:
            step.observed += " — ingest exited 0 though the server disagrees"
        return ran

    def first_sync(self, step: Step) -> None:
        self.queries = corpus.write_corpus(self.root)
        self.sync_and_check(step)

    def resync(self, step: Step) -> None:
        before = dict(self.known)
        ran = self.sync_and_check(step)
        uploaded = ran.summary().get("counts", {}).get("uploaded")
        if uploaded != 0 or self.known != before:
            step.ok = False
            step.observed += f"; store files changed: {before != self.known}"

    def edit(self, step: Step) -> None:
        old = self.known.get(corpus.EDITED)
        (self.root / corpus.EDITED).write_text(corpus.GUIDE_V2_TEXT)
        self.queries[corpus.EDITED] = corpus.GUIDE_V2
        self.sync_and_check(step, superseded=[old] if old else [])

    def rename(self, step: Step) -> None:
        old, new = corpus.RENAMED
        (self.root / new).parent.mkdir(parents=True, exist_ok=True)
        (self.root / old).rename(self.root / new)
        self.queries[new] = dataclasses.replace(self.queries.pop(old), path=new)
        ran = self.sync_and_check(step)
        found = self.search(step, self.queries[new].query, {"folder": "kitchen"}, new)
        uploaded = ran.summary().get("counts", {}).get("uploaded")
        step.ok = step.ok and found and uploaded == 0
        step.observed += f"; re-uploads {uploaded}; `ingest search --filter folder=kitchen` " + (
            "finds it" if found else "does not find it"
        )

    def delete(self, step: Step) -> None:
        old = self.known.get(corpus.DELETED)
        (self.root / corpus.DELETED).unlink()
        del self.queries[corpus.DELETED]
        self.sync_and_check(step, superseded=[old] if old else [])

    def store_deleted(self, step: Step) -> None:
        store_id = self.store_id(step)
        if store_id is None:
            step.observed = "ingest names no single vector store to delete"
            return
        self.api.vector_stores.delete(store_id)
        step.details.append(f"deleted vector store {store_id} on the server")
        ran = self.ingest(step, "verify", "--json")
        said = (ran.stdout + ran.stderr).lower()
        step.ok = ran.rc == 1 and "deleted" in said
        step.observed = f"verify exit {ran.rc}; " + ("says deleted" if "deleted" in said else "never says deleted")
        if ran.stderr.strip():
            step.observed += f"; stderr: {tail(ran.stderr, 1)[:200]}"
        self.server_log(step)
        self.deleted_store = store_id

    def after_store_deleted(self, step: Step) -> None:
        self.sync_and_check(step)
        new = self.store_id(step)
        if new is None or new == self.deleted_store:
            step.ok = False
            step.observed += f"; store now {new}"

    def outage(self, step: Step) -> None:
        added = corpus.outage_files(self.root)
        self.queries.update(added)
        baseline = {f.id for f in self.api.files.list(purpose="assistants")}
        store_id = self.store_id(step)
        out, err = (self.run_dir / "outage-sync.out").open("w+"), (self.run_dir / "outage-sync.err").open("w+")
        args = ["sync", str(self.root), "--json"]
        started = time.monotonic()
        self.background = subprocess.Popen(
            [str(self.checkout / "scripts/run"), *args],
            env=self.env, cwd=self.run_dir, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        when, mid_sync = self.stop_embedder_mid_sync(store_id, baseline, started, len(added))
        step.details.append(when)
        try:
            rc = self.background.wait(COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.background.pid, signal.SIGKILL)
            rc = -1
        self.background = None
        out.seek(0)
        err.seek(0)
        ran = Ran(rc, out.read(), err.read(), time.monotonic() - started)
        self.record(step, args, ran)
        # Searching needs the embedder: start it before asking the server what the sync left.
        restart = self.embed.start()
        step.details.append(f"embedder started again in {restart:.1f} s")
        ok, seen = self.check(step)
        failed = len(ran.summary().get("failed", []))
        # With the embedder gone some files cannot be indexed: honest is exit 1 naming them.
        step.ok = mid_sync and (ran.rc == 1 or (ran.rc == 0 and ok))
        step.observed = f"{when.split(':')[0]}; sync exit {ran.rc}, {failed} failed per ingest; server: {seen}"
        if not mid_sync:
            step.observed = "NOT EXERCISED: " + step.observed

    def stop_embedder_mid_sync(
        self, store_id: str | None, baseline: set[str], started: float, total: int
    ) -> tuple[str, bool]:
        """Stop the embedder once the sync has a new file completed (or has uploaded for 20 s).
        Mid-sync means: the sync still runs and fewer than all `total` new files are completed."""
        first_upload, new, completed = None, set(), 0
        assert self.background is not None
        while self.background.poll() is None and time.monotonic() - started < 300:
            try:
                new = {f.id for f in self.api.files.list(purpose="assistants")} - baseline
                completed = 0
                if store_id and new:
                    listed = self.api.vector_stores.files.list(vector_store_id=store_id, limit=100)
                    completed = sum(1 for f in listed if f.id in new and f.status == "completed")
            except Exception:
                pass  # an answer missed while the server is busy; the next poll asks again
            if new and first_upload is None:
                first_upload = time.monotonic()
            if completed or (first_upload and time.monotonic() - first_upload > 20):
                break
            time.sleep(0.2)
        running = self.background.poll() is None
        self.embed.stop(grace_s=0)
        at = f"{time.monotonic() - started:.1f} s into the sync"
        if not running:
            return f"embedder stopped after the sync had ended (exit {self.background.poll()}), {at}", False
        mid = completed < total
        return f"embedder stopped {at}: {len(new)} new uploads seen, {completed}/{total} completed in the store", mid

    def verify(self, step: Step) -> None:
        ran = self.ingest(step, "verify", "--json")
        ok, seen = self.check(step)
        step.ok = ran.rc == 0 and ok
        step.observed = f"verify exit {ran.rc}; {seen}"
        status = self.ingest(step, "status", quiet=True)
        step.details.append("`ingest status` (not judged):\n" + tail(status.stdout, 30))

    def search(self, step: Step, query: str, filters: dict[str, str], want: str) -> bool:
        args = ["search", query, "--json", *[f"--filter={k}={v}" for k, v in filters.items()]]
        ran = self.ingest(step, *args)
        hits = ran.summary().get("items", [])
        paths = [str(h.get("attributes", {}).get("path")) for h in hits]
        obeys = all(str(h.get("attributes", {}).get(k)) == v for h in hits for k, v in filters.items())
        step.details.append(f"hits: {paths}")
        serving = {h.get("file_id") for h in hits if h.get("attributes", {}).get("path") == want}
        return ran.rc == 0 and want in paths and obeys and len(serving) == 1  # one document, one file

    def filtered_search(self, step: Step) -> None:
        cases = [
            ("kitchen/sourdough.md", {"folder": "kitchen"}),
            ("reports/annual-report.pdf", {"ext": "pdf"}),
            ("reports/safety-memo.docx", {"folder": "reports", "ext": "docx"}),
            ("web/holidays.html", {"ext": "html"}),
            ("guide.md", {"path": "guide.md"}),
            ("outage/night-trains.md", {"folder": "outage"}),
        ]
        missed = [want for want, filters in cases if not self.search(step, self.queries[want].query, filters, want)]
        step.ok = not missed
        step.observed = f"{len(cases) - len(missed)}/{len(cases)} filtered searches find their document" + (
            f"; not: {', '.join(missed)}" if missed else ""
        )

    def run(self) -> None:
        self.run_step("start embedder + llama-stack", "both answer on 127.0.0.1", self.start)
        if not (self.steps[-1].ok):
            return
        once = "every doc searchable once, attributes current"
        plan = [
            ("first sync: md, html, pdf, docx", f"exit 0; {once}", self.first_sync),
            ("re-sync, nothing changed", "exit 0; nothing uploaded; same store files", self.resync),
            ("edit guide.md", f"exit 0; {once}; old version detached + deleted", self.edit),
            ("rename notes/ → kitchen/", f"exit 0; no re-upload; {once}; filter folder=kitchen finds it", self.rename),
            ("delete notes/minutes.md", f"exit 0; detached + deleted on the server; {once}", self.delete),
            ("store deleted on server: verify", "verify exit 1, reports the store deleted", self.store_deleted),
            ("store deleted on server: sync", f"exit 0; a new store; {once}", self.after_store_deleted),
            ("embedder stopped mid-sync", "sync exit 1 naming failures (never 0 with docs unindexed)", self.outage),
            ("sync after embedder is back", f"exit 0 without --retry-failed; {once}", self.sync_plain),
            ("verify", f"exit 0 (in sync); {once}", self.verify),
            ("search with filters (CLI)", "each finds its document, only matching hits", self.filtered_search),
        ]  # fmt: skip
        for name, expected, body in plan:
            self.run_step(name, expected, body)

    def sync_plain(self, step: Step) -> None:
        self.sync_and_check(step)

    def start(self, step: Step) -> None:
        bootstrap = subprocess.run(
            [str(self.checkout / "scripts/run"), "--version"],
            env=self.env,
            cwd=self.run_dir,
            capture_output=True,
            text=True,
        )
        step.details.append(
            f"{self.checkout}/scripts/run --version → {bootstrap.stdout.strip()} {tail(bootstrap.stderr, 3)}"
        )
        embed_s = self.embed.start()
        stack_s = self.stack.start()
        step.ok = bootstrap.returncode == 0
        step.observed = (
            f"embedder :{self.embed_port} in {embed_s:.1f} s, llama-stack :{self.stack_port} in {stack_s:.1f} s"
        )

    def stop(self) -> None:
        if self.background is not None and self.background.poll() is None:
            try:
                os.killpg(self.background.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.stack.stop()
        self.embed.stop()


def snapshot(repo: Path, ref: str, into: Path) -> Path:
    """A clean clone of `repo` at `ref`, kept under the cache (its .venv too) and moved to the new
    tip on each run: a working tree someone is editing or merging in is no one version of the code."""
    target = into / "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in ref)

    def git(*args: str, cwd: Path = target) -> None:
        subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True)

    if not (target / ".git").exists():
        into.mkdir(parents=True, exist_ok=True)
        git("clone", "--quiet", "--shared", "--no-checkout", str(repo), str(target), cwd=repo)
    git("fetch", "--quiet", str(repo), ref)
    git("checkout", "--quiet", "--force", "--detach", "FETCH_HEAD")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/compat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the ingest checkout to test (its scripts/run)")
    parser.add_argument(
        "--cache", type=Path, default=servers.default_cache(), help="venvs and runs (default %(default)s)"
    )
    parser.add_argument(
        "--ref", help="test this branch or commit of the checkout's repository in a clean clone under the cache"
    )
    parser.add_argument("--report", type=Path, help="also write the full report (markdown) here")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if args.ref:
        try:
            checkout = snapshot(checkout, args.ref, args.cache / "checkouts")
        except subprocess.CalledProcessError as exc:
            print(f"compat: cannot check out {args.ref!r} of {checkout}: {exc.stderr.strip()}", file=sys.stderr)
            return 2
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"compat: installing into {args.cache} (once: ~10 min on 2 cores) …", file=sys.stderr, flush=True)
        with servers.locked(args.cache / ".install.lock"):
            inst = servers.install(args.cache)
    except servers.SetupError as exc:
        print(f"compat: {exc}", file=sys.stderr)
        return 2
    installed = (
        f"installed now: {', '.join(inst.installed_now)}" if inst.installed_now else "venvs reused from the cache"
    )
    run_dir, held = servers.new_run_dir(args.cache / "runs")
    c = Compat(checkout, run_dir, inst)
    header = (
        f"Run {datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {describe_checkout(checkout, args.ref)}; "
        f"install {time.monotonic() - started:.0f} s ({installed})."
    )
    before = checkout_state(checkout)
    try:
        c.run()
    except KeyboardInterrupt:
        # Ctrl-C also ends a pipe's reader (| tee): the report goes to files before anything is printed.
        c.steps.append(Step("interrupted", "", "stopped by a signal", False))
    finally:
        c.stop()
    if checkout_state(checkout) != before:
        header += " The checkout CHANGED during the run: later steps ran other code than earlier ones."
    text = report(c.steps, header, time.monotonic() - started, run_dir)
    (run_dir / "report.md").write_text(text)
    held.close()
    if args.report:
        args.report.write_text(text)
    try:
        print(header)
        print(table(c.steps))
        print(f"\nfull report: {args.report or run_dir / 'report.md'}")
    except BrokenPipeError:
        pass
    return 0 if c.steps and all(s.ok for s in c.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
