"""What `scripts/compat` asks the server itself after each step: is every document searchable exactly once,
with its current attributes? Answers come from the server's own listing and search, never from ingest."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

OUR_KEYS = ("path", "folder", "ext", "mtime", "sha256", "root")
MARKUP = re.compile(r"</?(html|head|body|p|div|h1|style|nav|title|meta)\b[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class Doc:
    """A document of the corpus as it is on disk now, and a query its text answers."""

    path: str  # relative to the root, '/'-separated
    query: str
    marker: str  # a phrase of its text: hits without it are not this document's text


def expected_attributes(root: Path, path: str) -> dict[str, Any]:
    """The attributes ingest promises (README "Attributes"), computed from the file itself."""
    full = root / path
    folder, _, name = path.rpartition("/")
    return {
        "path": path,
        "folder": folder,
        "ext": name.rpartition(".")[2].lower() if "." in name else "",
        "mtime": full.stat().st_mtime_ns // 1_000_000_000,
        "sha256": hashlib.sha256(full.read_bytes()).hexdigest(),
        "root": root.name,
    }


def _same(a: Any, b: Any) -> bool:
    # llama-stack returns integers as floats (2024 → 2024.0).
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def attribute_drift(want: dict[str, Any], got: dict[str, Any] | None) -> list[str]:
    got = got or {}
    return [f"{k}={got.get(k)!r} (want {want[k]!r})" for k in OUR_KEYS if not _same(want[k], got.get(k))]


@dataclass
class Observation:
    """The server's picture of one store after a step."""

    store_id: str | None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file_id → {status, attributes, last_error}
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    current: dict[str, str] = field(default_factory=dict)  # path → the file ID that serves it

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, docs: int) -> str:
        found = len(self.current)
        if self.ok:
            return f"{found}/{docs} docs searchable once, attributes current"
        return f"{found}/{docs} docs searchable once; {len(self.problems)} problem(s): " + "; ".join(self.problems[:3])


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="compat", max_retries=1, timeout=120.0)


def list_store_files(api: openai.OpenAI, store_id: str) -> dict[str, dict[str, Any]]:
    files = {}
    for item in api.vector_stores.files.list(vector_store_id=store_id, limit=100):
        error = item.last_error.message if item.last_error else None
        files[item.id] = {"status": item.status, "attributes": dict(item.attributes or {}), "last_error": error}
    return files


def observe(api: openai.OpenAI, store_id: str | None, root: Path, docs: list[Doc]) -> Observation:
    """Every doc: exactly one completed store file with its current attributes, found by a search
    filtered on its path, with no hit from another file; no store file for a path that is gone."""
    obs = Observation(store_id)
    if store_id is None:
        obs.problems.append("ingest names no vector store for the root")
        return obs
    try:
        store = api.vector_stores.retrieve(store_id)
        obs.notes.append(f"store {store_id}: status {store.status}, file_counts {store.file_counts.to_dict()}")
        obs.files = list_store_files(api, store_id)
    except openai.APIError as exc:
        obs.problems.append(f"store {store_id} unreadable: {describe(exc)}")
        return obs
    try:
        unattached = [f.id for f in api.files.list(purpose="assistants") if f.id not in obs.files]
        if unattached:
            obs.notes.append(
                f"{len(unattached)} file(s) in the Files API are in no listing of this store: {unattached}"
            )
    except openai.APIError as exc:
        obs.notes.append(f"files.list failed: {describe(exc)}")
    wanted = {d.path: d for d in docs}
    by_path: dict[str, list[str]] = {}
    for file_id, info in obs.files.items():
        by_path.setdefault(str(info["attributes"].get("path")), []).append(file_id)
    for path, ids in sorted(by_path.items()):
        if path not in wanted:
            states = ", ".join(f"{i} {obs.files[i]['status']}" for i in ids)
            obs.problems.append(f"store keeps a file for {path!r}, which is not a current document ({states})")
    for doc in docs:
        obs.problems.extend(_check_doc(api, obs, root, doc, by_path.get(doc.path, [])))
    return obs


def _check_doc(api: openai.OpenAI, obs: Observation, root: Path, doc: Doc, ids: list[str]) -> list[str]:
    want = expected_attributes(root, doc.path)
    if not ids:
        return [f"{doc.path}: not in the store"]
    if len(ids) > 1:
        return [f"{doc.path}: {len(ids)} store files ({', '.join(ids)})"]
    file_id = ids[0]
    info = obs.files[file_id]
    problems = []
    if info["status"] != "completed":
        why = f", last_error {info['last_error']!r}" if info["last_error"] else ", last_error null"
        problems.append(f"{doc.path}: store file {file_id} is {info['status']}{why}")
    drift = attribute_drift(want, info["attributes"])
    if drift:
        problems.append(f"{doc.path}: listed attributes {', '.join(drift)}")
    if problems:
        return problems
    try:
        hits = api.vector_stores.search(
            vector_store_id=obs.store_id or "",
            query=doc.query,
            filters={"type": "eq", "key": "path", "value": doc.path},
            max_num_results=10,
        ).data
    except openai.APIError as exc:
        return [f"{doc.path}: search filtered on path failed: {describe(exc)}"]
    hit_ids = sorted({h.file_id for h in hits})
    if not hits:
        return [f"{doc.path}: search filtered on path={doc.path!r} finds nothing (listing says completed)"]
    if hit_ids != [file_id]:
        return [f"{doc.path}: search filtered on its path returns files {hit_ids}, the store lists {file_id}"]
    for hit in hits:
        drift = attribute_drift(want, dict(hit.attributes or {}))
        if drift:
            return [f"{doc.path}: search hits carry {', '.join(drift)}"]
    text = " ".join(c.text for hit in hits for c in hit.content)
    if doc.marker.lower() not in text.lower():
        return [f"{doc.path}: its search hits lack {doc.marker!r}; they read {text[:120]!r}"]
    markup = MARKUP.search(text)
    if markup:
        return [f"{doc.path}: its search hits are raw markup: {markup[0]!r} in {text[:120]!r}"]
    obs.current[doc.path] = file_id
    return []


def stray_hits(api: openai.OpenAI, store_id: str, docs: list[Doc], store_files: set[str]) -> list[str]:
    """Unfiltered searches: a hit from a file the store does not list is a chunk left behind."""
    problems = []
    for doc in docs:
        try:
            hits = api.vector_stores.search(vector_store_id=store_id, query=doc.query, max_num_results=20).data
        except openai.APIError as exc:
            return [f"unfiltered search failed: {describe(exc)}"]
        for hit in hits:
            if hit.file_id not in store_files:
                where = (hit.attributes or {}).get("path")
                problems.append(
                    f"search returns chunks of {hit.file_id} (path {where!r}), which the store does not list"
                )
    return sorted(set(problems))


def files_gone(api: openai.OpenAI, file_ids: list[str]) -> list[str]:
    """Superseded file IDs must be deleted from the Files API (ingest deletes what it replaced)."""
    problems = []
    for file_id in file_ids:
        try:
            api.files.retrieve(file_id)
            problems.append(f"superseded file {file_id} still exists in the Files API")
        except openai.NotFoundError:
            pass
        except openai.APIError as exc:
            problems.append(f"files.retrieve({file_id}): {describe(exc)}")
    return problems


def describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.response.text if exc.response is not None else ""
        return f"HTTP {exc.status_code} {body[:300]}"
    return f"{type(exc).__name__}: {exc}"


class ServerLog:
    """Reads llama-stack's JSON log from where the last step left off: requests answered ≥ 400 and
    the errors it logged, counted, with IDs folded so that equal failures group."""

    ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
    IDS = re.compile(r"(file-[0-9a-f]+|vs_[0-9a-f-]+|vsfb_[0-9a-f-]+|batch_[0-9a-f-]+|0x[0-9a-f]+)")

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> tuple[Counter[str], Counter[str]]:
        requests: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        if not self.path.exists():
            return requests, errors
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        self.offset += len(chunk)
        for line in chunk.decode("utf-8", "replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = str(entry.get("event", ""))
            match = self.ACCESS.search(event)
            if match:
                if int(match["status"]) >= 400:
                    requests[f"{match['method']} {self.IDS.sub('{id}', match['path'])} → {match['status']}"] += 1
                continue
            if entry.get("level") in ("error", "critical", "warning"):
                detail = " ".join(str(entry[k]) for k in ("error", "exc_info", "exception") if entry.get(k))
                text = f"{entry.get('level')}: {event} {detail}".strip()
                errors[self.IDS.sub("{id}", text)[:400]] += 1
        return requests, errors


def tail(text: str, lines: int = 25) -> str:
    kept = text.strip().splitlines()
    return "\n".join(kept[-lines:]) if kept else "(nothing)"
