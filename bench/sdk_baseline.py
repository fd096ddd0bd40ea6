"""python -m bench.sdk_baseline BASE_URL FOLDER: what a user would write with the SDK alone.

A fresh vector store, then file_batches.upload_and_poll with open file handles, the SDK's default
concurrency (5) and retries (2). Prints one JSON line: when it finished (unix time) and the batch.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main(base_url: str, folder: str) -> int:
    import openai

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # every file is opened up front
    client = openai.OpenAI(api_key="sk-bench", base_url=base_url)
    store = client.vector_stores.create(name="sdk-baseline")
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    handles = [open(p, "rb") for p in paths]
    try:
        batch = client.vector_stores.file_batches.upload_and_poll(store.id, files=handles)
    except Exception as exc:
        print(
            json.dumps(
                {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500], "t_end": time.time(), "files": len(paths)}
            )
        )
        return 1
    finally:
        for fh in handles:
            fh.close()
    counts = batch.file_counts
    print(
        json.dumps(
            {
                "ok": True,
                "t_end": time.time(),
                "files": len(paths),
                "store_id": store.id,
                "status": batch.status,
                "completed": counts.completed,
                "failed": counts.failed,
                "in_progress": counts.in_progress,
                "total": counts.total,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
