"""Test material, built once in the cache dir and reused: real Python docs, a tree of tiny files, small uploads."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, Context, tree_stats

DOC_PACKAGE = "python3.11-doc"
MIN_DOCS = 500
WORDS = (
    "ledger",
    "invoice",
    "harbour",
    "lantern",
    "orchard",
    "quarry",
    "meadow",
    "beacon",
    "cipher",
    "falcon",
    "glacier",
    "juniper",
    "kestrel",
    "marble",
    "nectar",
    "pebble",
    "saffron",
    "tundra",
)
OLD = 86_400  # generated files get an mtime a day back: never "racy clean", so a no-op really is one


@dataclass(frozen=True)
class Corpus:
    path: Path
    files: int
    bytes: int
    label: str  # what it is, for the table
    real: bool  # False: the replicated fallback


def python_docs(ctx: Context) -> Corpus:
    """Debian's python3.11-doc: the .rst.txt sources (renamed .txt) and the .html pages."""
    base = ctx.cache / "pydocs"
    corpus = base / "corpus"
    marker = base / "corpus.json"
    if marker.is_file() and corpus.is_dir():
        info = json.loads(marker.read_text())
        return Corpus(corpus, info["files"], info["bytes"], info["label"], True)
    deb, why = download_deb(ctx, base / "pkg")
    if deb is None:
        return _fallback(ctx, why)
    extracted = base / "extracted"
    shutil.rmtree(extracted, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
    html = next(extracted.glob("usr/share/doc/python3*/html"))
    shutil.rmtree(corpus, ignore_errors=True)
    for src in (html / "_sources").rglob("*.rst.txt"):
        dst = corpus / "rst" / src.relative_to(html / "_sources")
        dst = dst.with_name(dst.name[: -len(".rst.txt")] + ".txt")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    for src in html.rglob("*.html"):
        rel = src.relative_to(html)
        if rel.parts[0] in ("_sources", "_static"):
            continue
        dst = corpus / "html" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    shutil.rmtree(extracted, ignore_errors=True)
    files, size = tree_stats(corpus)
    label = f"{deb.name} (.rst.txt sources as .txt + .html pages)"
    marker.write_text(json.dumps({"files": files, "bytes": size, "label": label}))
    return Corpus(corpus, files, size, label, True)


def download_deb(ctx: Context, where: Path, package: str = DOC_PACKAGE) -> tuple[Path | None, str]:
    """A Debian package's .deb, fetched once into `where` with apt-get; (None, why) when it cannot be."""
    where.mkdir(parents=True, exist_ok=True)
    found = sorted(where.glob(f"{package}_*.deb"))
    if found:
        return found[-1], ""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None, "apt-get/dpkg-deb are not available on this machine"
    # As root apt drops to the _apt user, which cannot write into the cache dir: stay root for this.
    cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package]
    for attempt in range(2):
        ctx.log(f"downloading {package} with apt-get into {where}")
        done = subprocess.run(cmd, cwd=where, capture_output=True, text=True)
        found = sorted(where.glob(f"{package}_*.deb"))
        if done.returncode == 0 and found:
            return found[-1], ""
        if attempt == 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
    return None, f"apt-get download {package} failed: {(done.stderr or done.stdout).strip()[-300:]}"


def _fallback(ctx: Context, why: str) -> Corpus:
    """examples/python-docs copied often enough to pass MIN_DOCS: clearly labelled as replicated."""
    ctx.log(f"no Debian docs ({why}); falling back to examples/python-docs replicated")
    source = ROOT / "examples" / "python-docs"
    corpus = ctx.cache / "pydocs-fallback"
    shutil.rmtree(corpus, ignore_errors=True)
    originals = [p for p in source.rglob("*") if p.is_file()]
    copies = -(-MIN_DOCS // max(1, len(originals)))
    for n in range(copies):
        for src in originals:
            dst = corpus / f"copy{n:03d}" / src.relative_to(source)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    files, size = tree_stats(corpus)
    label = f"FALLBACK: examples/python-docs replicated {copies}x ({why})"
    return Corpus(corpus, files, size, label, False)


def tiny_tree(ctx: Context, count: int) -> Path:
    """`count` tiny text files, 100 per folder, three folder levels deep; generated once."""
    root = ctx.cache / f"tree-{count}"
    marker = ctx.cache / f"tree-{count}.complete"
    if marker.is_file() and root.is_dir():
        return root
    ctx.log(f"generating {count:,} tiny files in {root} (once)")
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(count)
    stamp = int(__import__("time").time()) - OLD
    for i in range(count):
        leaf, n = divmod(i, 100)
        folder = root / f"d{leaf // 100:02d}" / f"e{leaf // 10 % 10}" / f"f{leaf % 10}"
        if n == 0:
            folder.mkdir(parents=True, exist_ok=True)
        name = folder / (f"note-{i:06d}" + (".md" if i % 5 == 0 else ".txt"))
        name.write_text(f"Note {i}: the {rng.choice(WORDS)} and the {rng.choice(WORDS)} of record {i}.\n")
        os.utime(name, (stamp, stamp))
    marker.write_text(str(count))
    return root


def small_files(ctx: Context, count: int) -> Path:
    """`count` small (1–3 KB) text documents in 20 folders, for the upload benchmark."""
    root = ctx.cache / f"uploads-{count}"
    marker = ctx.cache / f"uploads-{count}.complete"
    if marker.is_file() and root.is_dir():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(7 * count)
    stamp = int(__import__("time").time()) - OLD
    for i in range(count):
        folder = root / f"team-{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 450)))
        path = folder / (f"doc-{i:05d}" + (".md" if i % 4 == 0 else ".txt"))
        path.write_text(f"Document {i}\n\n{words}\n")
        os.utime(path, (stamp, stamp))
    marker.write_text(str(count))
    return root
