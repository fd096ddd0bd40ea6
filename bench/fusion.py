"""Fusion weights against reciprocal rank fusion, each ranking chunks alone or by document
(search.by_document), with and without the documents' title vectors blended into the chunks'
cosines (vectors.TITLE_WEIGHT), on the TUNING questions and on page titles other than the local
bench's, never on the held-out questions.

    .venv/bin/python -m bench.fusion STORE_DIR [CORPUS_DIR]

STORE_DIR is a hybrid embedded store of python3.11-doc (the folder holding store.db, e.g. a copy
of the local bench's; `ingest reindex` gives an older one its title vectors); CORPUS_DIR defaults
to the bench cache's corpus.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
from pathlib import Path

from bench import local_store
from bench.questions import TUNING


def main(store: Path, corpus: Path) -> None:
    from ingest.remote.local import embed, search
    from ingest.remote.local.vectors import Query

    db = sqlite3.connect(store / "store.db")
    titled = dict(db.execute("SELECT file_id, embedding FROM title_vectors WHERE embedding IS NOT NULL"))
    rows = db.execute(
        "SELECT c.id, c.embedding, sf.attributes, c.file_id FROM chunks c JOIN store_files sf"
        " ON sf.file_id = c.file_id AND sf.store_id = c.store_id WHERE c.embedding IS NOT NULL ORDER BY c.id"
    ).fetchall()
    import numpy as np

    ids = np.array([r[0] for r in rows])
    matrix = embed.from_blobs([r[1] for r in rows])
    path = {r[0]: json.loads(r[2])["path"] for r in rows}
    document = {r[0]: r[3] for r in rows}
    row_of = {file_id: i for i, file_id in enumerate(titled)}
    title_row = np.array([row_of.get(r[3], -1) for r in rows])
    title_matrix = embed.from_blobs(list(titled.values()))
    model = embed.LazyModel()()
    assert model is not None, "the semantic extra and its model are needed"
    bench_titles = {q for q, _ in local_store._queries(corpus)}
    titles = []
    for p in sorted(corpus.rglob("*.txt")):
        title = local_store._title(p)
        if title and len(title.split()) >= 2 and title not in bench_titles:
            titles.append((title, p.stem))
    random.Random(11).shuffle(titles)
    titles = titles[:80]

    def candidates(q: str, titles: bool, k: int = 100):
        lexical = search._lexical_top(db, search.fts_query(q, db), k)
        vector = model.encode([q])[0]
        query = Query(ids, matrix, vector, title_matrix, title_row) if titles else Query(ids, matrix, vector)
        semantic = query.top(k)
        semantic |= query.similarity(lexical.keys() - semantic.keys())
        return lexical, semantic

    def blend(w: float):
        return lambda lex, sem: {
            c: w * lex.get(c, 0) + (1 - w) * max(sem.get(c, 0), 0) for c in lex.keys() | sem.keys()
        }

    def rrf(k: int):
        def fuse(lex, sem):
            out: dict[int, float] = {}
            for scores in (lex, sem):
                for rank, c in enumerate(sorted(scores, key=lambda c: -scores[c])):
                    out[c] = out.get(c, 0) + 1 / (k + rank + 1)
            return out

        return fuse

    def top(scores, n):
        return sorted(scores, key=lambda c: (-scores[c], c))[:n]

    def by_document(fuse):
        return lambda lex, sem: search.by_document(fuse(lex, sem), document)

    fusions = {f"blend {w}": blend(w) for w in (0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)}
    fusions |= {"rrf 60": rrf(60), "rrf 10": rrf(10)}
    methods = {f"{name}, chunks": fuse for name, fuse in fusions.items()}
    methods |= {f"{name}, by document": by_document(fuse) for name, fuse in fusions.items()}
    for with_titles in (False, True) if titled else (False,):
        questions = [(candidates(q, with_titles), pages) for q, pages in TUNING]
        named = [(candidates(q, with_titles), stem) for q, stem in titles]
        for name, fuse in methods.items():
            found = sum(any(local_store._page(path[c]) in pages for c in top(fuse(*cs), 5)) for cs, pages in questions)
            listed = sum(any(Path(path[c]).stem == stem for c in top(fuse(*cs), 10)) for cs, stem in named)
            label = name + (", titles" if with_titles else "")
            print(
                f"{label:32s} TUNING recall@5 {found / len(questions):.2f} ({found} of {len(questions)}),"
                f" titles in the top 10 {listed / len(named):.3f} ({listed} of {len(named)})"
            )


if __name__ == "__main__":
    main(
        Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path.home() / ".cache/ingest-bench/pydocs/corpus"
    )
