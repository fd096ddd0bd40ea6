"""Issue 14: the embedded store's PDF text against pypdf's, in speed and in quality.

Quality is measured on manuals Debian ships both as PDF and as HTML (R's, from r-doc-pdf and
r-doc-html): the HTML edition's words are the reference, and an extractor scores the share of them
its text of the PDF has (recall) and the share of its words that are in the reference (precision),
as word multisets, and the same for adjacent word pairs (reading order). Both extractors meet the
same reference, so the comparison holds although an HTML edition differs a little from its PDF.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

from bench.common import Context, Outcome
from bench.corpus import download_deb

PACKAGES = ("r-doc-pdf", "r-doc-html")
MANUALS = ("R-FAQ", "R-admin", "R-data", "R-exts", "R-intro", "R-ints", "R-lang")


def run(ctx: Context) -> Outcome:
    out = Outcome()
    manuals, why = _manuals(ctx)
    if not manuals:
        out.notes.append(f"extract: no twin manuals ({why})")
        return out
    from pypdf import PdfReader

    from ingest.remote.local.extract import extract_text, html_to_text

    def with_pypdf(path: Path) -> str:
        return "\n\n".join((page.extract_text() or "").strip() for page in PdfReader(path).pages)

    scores: dict[str, list[int]] = {}
    seconds: dict[str, float] = {"ingest": 0.0, "pypdf": 0.0}
    for pdf, html in manuals:
        reference = html_to_text(html.read_text(encoding="utf-8", errors="replace"))
        ref_words, ref_pairs = _words(reference)
        for name, extract in (("ingest", extract_text), ("pypdf", with_pypdf)):
            started = time.perf_counter()
            text = extract(pdf)
            seconds[name] += time.perf_counter() - started
            words, pairs = _words(text)
            tally = scores.setdefault(name, [0] * 6)
            for i, (got, ref) in enumerate(((words, ref_words), (pairs, ref_pairs))):
                tally[3 * i] += sum((got & ref).values())
                tally[3 * i + 1] += sum(ref.values())
                tally[3 * i + 2] += sum(got.values())
    pages = f"{len(manuals)} R manuals, {sum(p.stat().st_size for p, _ in manuals) / 1e6:.1f} MB of PDF"
    out.add(
        "extract",
        f"PDF text speed: pypdf's time / ingest's (pypdfium2), {pages}",
        seconds["pypdf"] / seconds["ingest"],
        "x",
        (">=", 2.0),
        f"ingest {seconds['ingest']:.1f} s, pypdf {seconds['pypdf']:.1f} s",
    )
    recall = {name: tally[0] / tally[1] for name, tally in scores.items()}
    out.add(
        "extract",
        "PDF text quality: words of the HTML edition found, ingest's share / pypdf's",
        recall["ingest"] / recall["pypdf"],
        "x",
        (">=", 0.99),
        "as good as before, within 1 %",
    )
    for name in ("ingest", "pypdf"):
        common, ref, got, pair_common, pair_ref, pair_got = scores[name]
        label = "ingest (pypdfium2)" if name == "ingest" else "pypdf (before)"
        out.add(
            "extract",
            f"PDF text quality, {label}: words of the HTML edition found",
            100 * common / ref,
            "%",
            None,
            f"precision {100 * common / got:.1f} %; word pairs: recall {100 * pair_common / pair_ref:.1f} %,"
            f" precision {100 * pair_common / pair_got:.1f} %",
        )
    return out


def _words(text: str) -> tuple[Counter, Counter]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return Counter(words), Counter(pairwise(words))


def _manuals(ctx: Context) -> tuple[list[tuple[Path, Path]], str]:
    """(PDF, HTML) pairs of the same manual, unpacked once into the cache."""
    base = ctx.cache / "twin-manuals"
    manual_dir = base / "usr" / "share" / "R" / "doc" / "manual"
    if not all((manual_dir / f"{m}.pdf").is_file() for m in MANUALS):
        for package in PACKAGES:
            deb, why = download_deb(ctx, ctx.cache / "debs", package)
            if deb is None:
                return [], why
            if not shutil.which("dpkg-deb"):
                return [], "dpkg-deb is not available on this machine"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(base)], check=True)
    pairs = [(manual_dir / f"{m}.pdf", manual_dir / f"{m}.html") for m in MANUALS]
    return [(p, h) for p, h in pairs if p.is_file() and h.is_file()], "the manuals are not in the packages"
