"""Crash safety: SIGKILL `ingest sync` at random moments of every phase; one clean run must then leave the
manifest and the remote store equal: no duplicate, no orphan, no missing document.

The emulator and the tool both run as subprocesses (the tool is killed for real, mid-request). The tool
runs at -v, so httpx logs every finished request on stderr: a reader thread follows the run's phase from
those lines, the kill is aimed at a phase chosen by a seeded RNG, and the phase it landed in is recorded.
`pytest tests/test_crash.py -s` prints the totals; `scripts/soak` runs 50 trials instead of 10.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.manifest import INDEXED, Manifest

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-crash-test-0123456789"
WORDS = (
    "otter",
    "lantern",
    "granite",
    "meadow",
    "cobalt",
    "harbor",
    "juniper",
    "quartz",
    "saffron",
    "tundra",
    "violet",
    "walnut",
    "zephyr",
    "bramble",
    "cinder",
    "dune",
    "ember",
    "fjord",
    "glacier",
    "hollow",
)
EXTENSIONS = (".txt", ".md", ".py", ".html", ".json")


# ---- the emulator as a subprocess -----------------------------------------------------------------------
class EmulatorProcess:
    """`python -m tests.emulator` on a free port; snapshot and configure through its admin endpoints."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.emulator", "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.match(r"listening on (http://\S+/v1)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r} {self.proc.stderr.read()}")
        self.base_url = match.group(1)
        self.admin = self.base_url[: -len("/v1")] + "/_emulator"

    def snapshot(self) -> dict:
        with urllib.request.urlopen(self.admin + "/snapshot", timeout=30) as reply:
            return json.load(reply)

    def configure(self, **options) -> None:
        request = urllib.request.Request(
            self.admin + "/configure",
            data=json.dumps(options).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- what "manifest equals remote" means ----------------------------------------------------------------
@dataclass
class Audit:
    """Every way the manifest and the remote can disagree; all lists empty means they are equal."""

    duplicates: list[str] = field(default_factory=list)  # a path attached twice to its store
    orphans: list[str] = field(default_factory=list)  # remote Files no manifest row references
    orphan_stores: list[str] = field(default_factory=list)  # vector stores the manifest does not know
    missing: list[str] = field(default_factory=list)  # local documents not indexed remotely
    mismatched: list[str] = field(default_factory=list)  # attributes/state that disagree
    stale_rows: list[str] = field(default_factory=list)  # manifest rows for paths that are gone

    @property
    def clean(self) -> bool:
        return not (
            self.duplicates or self.orphans or self.orphan_stores or self.missing or self.mismatched or self.stale_rows
        )

    def summary(self) -> str:
        return (
            "; ".join(
                f"{name}: {values[:5]}{' …' if len(values) > 5 else ''}"
                for name, values in vars(self).items()
                if values
            )
            or "clean"
        )


def read_manifest(path: Path) -> tuple[dict, list]:
    """(rows by (root, path), active store rows) — read after the tool has exited."""
    m = Manifest(path)
    try:
        return m.rows(), m.stores()
    finally:
        m.close()


def audit(
    snapshot: dict,
    manifest_path: Path,
    local: dict[str, set[str]],
    foreign: set[str] = frozenset(),
    store_names: set[str] | None = None,
) -> Audit:
    """local: root key → relative paths of the documents that must be indexed. foreign: remote file ids
    planted by someone else (never the tool's business)."""
    rows, stores = read_manifest(manifest_path)
    out = Audit()
    by_id = {}
    for row in rows.values():
        for file_id in (row.file_id, row.old_file_id):
            if file_id:
                by_id[file_id] = row
    known_stores = {s.id for s in stores}
    attached: dict[str, dict] = {}
    seen_paths: Counter = Counter()
    for store in snapshot["stores"]:
        if store_names is not None and store["name"] not in store_names:
            continue
        if store["id"] not in known_stores:
            out.orphan_stores.append(f"{store['id']} ({store['name']}, {len(store['files'])} files)")
        for sf in store["files"]:
            if sf["id"] in foreign:
                continue
            attached[sf["id"]] = sf
            seen_paths[(store["metadata"].get("logical_store", store["name"]), sf["attributes"].get("path"))] += 1
            row = by_id.get(sf["id"])
            if row is None:
                out.orphans.append(f"{sf['id']} attached to {store['id']} as {sf['attributes'].get('path')}")
                continue
            if sf["attributes"].get("path") != row.path or sf["attributes"].get("sha256") != row.sha256:
                out.mismatched.append(
                    f"{row.path}: remote says path={sf['attributes'].get('path')!r} "
                    f"sha={str(sf['attributes'].get('sha256'))[:8]}"
                )
            if sf["vector_store_id"] != row.vector_store_id:
                out.mismatched.append(
                    f"{row.path}: attached to {sf['vector_store_id']}, manifest says {row.vector_store_id}"
                )
            if sf["status"] != "completed":
                out.mismatched.append(f"{row.path}: remote status {sf['status']} {sf.get('last_error')}")
    out.duplicates = [f"{store}:{path} ×{n}" for (store, path), n in seen_paths.items() if n > 1]
    for f in snapshot["files"]:
        if f["id"] not in by_id and f["id"] not in foreign and f["id"] not in attached:
            out.orphans.append(
                f"{f['id']} (unattached File {f['filename']}, {f['bytes']} bytes, created {f['created_at']})"
            )
    for key, paths in local.items():
        for path in sorted(paths):
            row = rows.get((key, path))
            if row is None:
                out.missing.append(f"{path}: no manifest row")
            elif row.state != INDEXED or not row.file_id or row.old_file_id:
                out.missing.append(f"{path}: state {row.state} ({row.reason}), old_file_id={row.old_file_id}")
            elif row.file_id not in attached:
                out.missing.append(f"{path}: {row.file_id} is not attached remotely")
    for (key, path), row in rows.items():
        if key in local and path not in local[key]:
            out.stale_rows.append(f"{path}: state {row.state}")
    return out


# ---- a folder of documents that changes between runs --------------------------------------------------------
class Tree:
    """Small documents in nested folders; some share a file name (and size) in different folders, some share
    content: the cases a sweep by name and size, or a move detection by hash, could get wrong."""

    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng, self.serial = root, rng, 0
        self.folders = [
            Path(*parts)
            for parts in ((), ("a",), ("a", "b"), ("a", "b", "c"), ("d",), ("d", "e"), ("f",), ("g", "h", "i"))
        ]

    def paths(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}

    def _text(self) -> str:
        self.serial += 1
        words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(4, 30)))
        return f"document {self.serial:06d}: {words}\n"

    def add(self, count: int) -> list[str]:
        added = []
        existing = self.paths()
        while len(added) < count:
            folder = self.rng.choice(self.folders)
            if self.rng.random() < 0.1:
                name = "notes.md"  # the same name (and often size) in many folders
                text = f"note {self.rng.randint(0, 9)}\n"
            else:
                name = f"doc{self.serial:05d}{self.rng.choice(EXTENSIONS)}"
                text = self._text()
                if name.endswith(".json"):
                    text = json.dumps({"text": text}) + "\n"
            rel = (folder / name).as_posix()
            if rel in existing:
                continue
            if self.rng.random() < 0.04 and added:  # an identical copy elsewhere: two documents
                text = (self.root / added[-1]).read_text()
                rel = (folder / f"copy{self.serial:05d}{Path(added[-1]).suffix}").as_posix()
                self.serial += 1
                if rel in existing:
                    continue
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
            existing.add(rel)
            added.append(rel)
        return added

    def edit(self, count: int) -> list[str]:
        chosen = self.rng.sample(sorted(self.paths()), min(count, len(self.paths())))
        for rel in chosen:
            path = self.root / rel
            if rel.endswith(".json"):
                path.write_text(json.dumps({"text": self._text()}) + "\n")
            else:
                with path.open("a") as fh:
                    fh.write(self._text())
        return chosen

    def delete(self, count: int) -> list[str]:
        chosen = self.rng.sample(sorted(self.paths()), min(count, len(self.paths())))
        for rel in chosen:
            (self.root / rel).unlink()
        return chosen

    def rename(self, count: int) -> list[str]:
        moved = []
        existing = self.paths()
        for rel in self.rng.sample(sorted(existing), min(count, len(existing))):
            target = (self.rng.choice(self.folders) / f"moved{self.serial:05d}{Path(rel).suffix}").as_posix()
            self.serial += 1
            if target in existing:
                continue
            (self.root / target).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).rename(self.root / target)
            moved.append(target)
        return moved


# ---- running the tool and killing it -------------------------------------------------------------------------
REQUEST = re.compile(r"HTTP Request: (GET|POST|DELETE) \S+?/v1(\S*) ")


def phase_of(method: str, path: str) -> str:
    path = path.split("?")[0]
    if method == "POST" and path == "/files":
        return "upload"
    if method == "POST" and path.endswith("/file_batches"):
        return "attach"
    if method == "GET" and "/file_batches/" in path:
        return "poll"
    if method == "DELETE":
        return "delete"
    if method == "POST" and re.fullmatch(r"/vector_stores/[^/]+/files/[^/]+", path):
        return "move"
    if method == "POST" and path == "/vector_stores":
        return "create_store"
    return "scan"  # store checks and the sweep's listing come just before the scan


class Run:
    """One `ingest -vv sync` subprocess whose finished requests are followed line by line."""

    def __init__(self, env: dict[str, str], root: Path, cwd: Path):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "-vv", "sync", str(root)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.counts: Counter = Counter()
        self.last = "startup"
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            match = REQUEST.search(line)
            with self._lock:
                self.lines.append(line)
                if match:
                    phase = phase_of(*match.groups())
                    self.counts[phase] += 1
                    self.last = phase

    def kill_when(self, ready, timeout: float = 60.0) -> str:
        """SIGKILL once ready(run) is true; returns the phase it landed in ("finished" if it ended first)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            with self._lock:
                go = ready(self)
            if go:
                with self._lock:
                    phase = self.last
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                self._reader.join(5)
                return phase if self.proc.returncode == -signal.SIGKILL else "finished"
            time.sleep(0.002)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError("the run to be killed hung:\n" + "".join(self.lines[-30:]))
        self._reader.join(5)
        return "finished"


def after(delay: float, condition=lambda run: True):
    """A kill trigger: `delay` seconds after condition(run) first holds."""
    fired: list[float] = []

    def ready(run: Run) -> bool:
        if not fired:
            if not condition(run):
                return False
            fired.append(time.monotonic())
        return time.monotonic() - fired[0] >= delay

    return ready


def trigger(target: str, rng: random.Random, uploads: int, retires: int, moves: int, first: bool):
    """When to kill, aiming at `target`; the delays are drawn from the seeded RNG."""
    if target == "scan":
        if first or rng.random() < 0.3:  # the first sync has no store to check yet
            return after(rng.uniform(0.0, 0.8))  # interpreter start, store check, sweep, scan, hashing
        return after(rng.uniform(0.0, 0.15), lambda r: r.counts["scan"] > 0)  # after the store check
    if target == "move":
        k = rng.randint(1, max(1, moves))
        return after(rng.uniform(0, 0.02), lambda r: r.counts["move"] >= k)
    if target == "upload":
        k = rng.randint(1, max(1, uploads - 1))
        return after(rng.uniform(0, 0.01), lambda r: r.counts["upload"] >= k)
    if target == "attach":
        return after(rng.uniform(0, 0.03), lambda r: r.counts["upload"] >= uploads or r.counts["attach"] > 0)
    if target == "poll":
        return after(rng.uniform(0, 0.25), lambda r: r.counts["poll"] > 0)
    if target == "delete":
        k = rng.randint(1, max(1, 2 * retires))
        return after(0, lambda r: r.counts["delete"] >= k)
    raise ValueError(target)


@dataclass
class Totals:
    trials: int = 0
    kills: Counter = field(default_factory=Counter)
    aimed: Counter = field(default_factory=Counter)
    duplicates_swept: int = 0
    retired_on_recovery: int = 0
    uploads_on_recovery: int = 0
    problems: list[str] = field(default_factory=list)

    def report(self) -> str:
        kills = ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items()))
        aimed = ", ".join(f"{k} {n}" for k, n in sorted(self.aimed.items()))
        return (
            f"crash trials: {self.trials}; kills by phase landed: {kills}; aimed at: {aimed}; "
            f"recovery runs swept {self.duplicates_swept} duplicate uploads, deleted "
            f"{self.retired_on_recovery} retired remote files, uploaded {self.uploads_on_recovery}; "
            f"after recovery: {len(self.problems)} trials with duplicates/orphans/missing"
        )


PHASES = {"upload", "poll", "delete"}  # the phases a kill must have landed in by the end
EXTRA_TRIALS = 12  # trials past the planned ones, aimed at the phases not reached yet


def run_trials(tmp_path: Path, trials: int, seed: int, files: int = 300) -> Totals:
    rng = random.Random(seed)
    root = tmp_path / "share"
    root.mkdir()
    tree = Tree(root, rng)
    tree.add(files)
    state = tmp_path / "state"
    config = tmp_path / "ingest.toml"
    config.write_text("request_timeout = 10\nindex_timeout = 60\n")
    emu = EmulatorProcess(
        "--latency-ms", "6", "--jitter-ms", "8", "--index-delay", "0.25", "--poll-after-ms", "40", "--seed", str(seed)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "INGEST_", "XDG_"))}
    env.update(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=emu.base_url,
        XDG_STATE_HOME=str(state),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        INGEST_CONFIG=str(config),
        PYTHONUNBUFFERED="1",
    )
    manifest = state / "ingest" / "manifest.db"
    totals = Totals()
    try:
        trial = 0
        while trial < trials + EXTRA_TRIALS:
            missing = sorted(PHASES - set(totals.kills))
            if trial >= trials and not missing:
                break
            # What changed since the last complete sync decides which phases this run goes through.
            if trial == 0:
                uploads, retires, moves = files, 0, 0
                targets = ["scan", "upload", "upload", "attach", "poll"]
            else:
                edited = tree.edit(rng.choice((3, 10, 25, 50)))
                deleted = tree.delete(rng.randint(1, 10))
                added = tree.add(rng.randint(0, 30))
                moved = tree.rename(rng.choice((0, 0, 2, 5)))
                uploads, retires, moves = len(edited) + len(added), len(edited) + len(deleted), len(moved)
                targets = ["scan", "upload", "attach", "poll", "delete", "delete"] + (["move"] if moved else [])
            kills = 2 if trial and rng.random() < 0.2 else 1  # sometimes the next run is killed too
            for _ in range(kills):
                # Past the planned trials, aim only at the phases no kill has landed in yet: where a kill
                # lands depends on the machine's speed, the phases reached in the end must not.
                target = rng.choice(targets if trial < trials else [t for t in targets if t in missing] or targets)
                run = Run(env, root, tmp_path)
                landed = run.kill_when(trigger(target, rng, uploads, retires, moves, trial == 0))
                if landed == "upload" and run.counts["upload"] >= uploads:
                    landed = "attach"  # every upload answered: the batch request was under way
                totals.aimed[target] += 1
                totals.kills[landed] += 1
            recovery = subprocess.run(
                [sys.executable, "-m", "ingest", "sync", str(root), "--json"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert recovery.returncode == 0, (
                f"trial {trial}: the recovery run exited {recovery.returncode}\n{recovery.stdout}\n{recovery.stderr}"
            )
            counts = json.loads(recovery.stdout)["counts"]
            totals.duplicates_swept += counts.get("duplicates_removed", 0)
            totals.retired_on_recovery += counts.get("remote_deleted", 0)
            totals.uploads_on_recovery += counts.get("uploaded", 0)
            result = audit(emu.snapshot(), manifest, {str(root): tree.paths()})
            totals.trials += 1
            if not result.clean:
                totals.problems.append(f"trial {trial} (killed in {landed}): {result.summary()}")
            trial += 1
    finally:
        emu.stop()
    return totals


def _check(totals: Totals, trials: int) -> None:
    print("\n" + totals.report())
    for problem in totals.problems:
        print("  " + problem)
    assert totals.trials >= trials
    assert not totals.problems, "manifest and remote disagree after recovery:\n" + "\n".join(totals.problems)
    landed = set(totals.kills) - {"finished"}
    assert landed >= PHASES, f"kills did not reach every phase: {dict(totals.kills)}"


def test_killed_syncs_leave_no_duplicate_orphan_or_gap(tmp_path):
    totals = run_trials(tmp_path, trials=10, seed=20261106)
    _check(totals, 10)


def test_kill_just_after_the_store_is_created_leaves_no_orphan_store(tmp_path):
    """The first sync creates the vector store, then records a thousand uploads to come: the store's row must
    already be committed when the kill lands, or the recovery run makes a second store."""
    root = tmp_path / "share"
    root.mkdir()
    tree = Tree(root, random.Random(7))
    tree.add(1000)
    emu = EmulatorProcess("--latency-ms", "6", "--index-delay", "0.25")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "INGEST_", "XDG_"))}
    env.update(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=emu.base_url,
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        PYTHONUNBUFFERED="1",
    )
    try:
        # Every upload is answered only after two minutes: once the store is created, no other request can
        # finish before the kill, whatever the machine's speed.
        emu.configure(fault_rate=1.0, fault_mix={"slow": 1}, fault_endpoints=["POST /files"], slow_ms=120_000)
        run = Run(env, root, tmp_path)
        # Killed once the store exists and before any upload could finish (the probe sent beside the scan may
        # answer just after the store, so the last request seen is either).
        assert run.kill_when(after(0.005, lambda r: r.counts["create_store"] > 0)) in ("create_store", "scan")
        assert run.counts["create_store"] == 1 and run.counts["upload"] == 0, run.counts
        emu.configure(fault_rate=0.0)
        recovery = subprocess.run(
            [sys.executable, "-m", "ingest", "sync", str(root)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert recovery.returncode == 0, recovery.stderr
        snapshot = emu.snapshot()
        assert len(snapshot["stores"]) == 1, "a second vector store was made; the first is an orphan"
        result = audit(snapshot, tmp_path / "state" / "ingest" / "manifest.db", {str(root): tree.paths()})
        assert result.clean, result.summary()
    finally:
        emu.stop()


@pytest.mark.soak
@pytest.mark.parametrize("seed", [1, 2])
def test_killed_syncs_soak(tmp_path, seed):
    totals = run_trials(tmp_path, trials=25, seed=seed, files=400)
    _check(totals, 25)
