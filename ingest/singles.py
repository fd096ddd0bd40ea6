"""One-file attaches, for servers whose batches take no per-file attributes: a few in flight at a time,
fewer when the server strains (llama-stack lost a third of its records with ~37 in flight, none with 3),
each answer checked against the store's own record."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from ingest.remote.base import COMPLETED, FAILED, AttachItem, AuthError, NotFound, Remote, RemoteError, StoreFile


class Limit:
    """How many one-file attaches may be in flight: halved when the server fails or loses a record,
    one more after each run of `width` clean answers, never past `most`."""

    def __init__(self, start: int, most: int):
        self.most = max(1, most)
        self.current = float(min(max(1, start), self.most))

    @property
    def width(self) -> int:
        return max(1, int(self.current))

    def ok(self) -> None:
        self.current = min(float(self.most), self.current + 1.0 / self.current)

    def strained(self) -> None:
        self.current = max(1.0, self.current / 2)


@dataclass(frozen=True)
class Attached:
    file_id: str
    store_file: StoreFile | None = None  # the store's own record (the reply's last_error kept)
    error: RemoteError | None = None
    lost: bool = False  # the reply said completed, the store has no record of the file


def attach_each(
    remote: Remote, store_id: str, items: Iterable[AttachItem], limit: Limit, stop: threading.Event
) -> Iterator[Attached]:
    """Attach each item on its own; results come back on the caller's thread, as they finish."""
    todo = iter(items)
    with ThreadPoolExecutor(limit.most, thread_name_prefix="attach") as pool:
        pending: dict = {}
        while True:
            while len(pending) < limit.width and not stop.is_set():
                item = next(todo, None)
                if item is None:
                    break
                pending[pool.submit(_one, remote, store_id, item)] = item
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                del pending[future]
                result = future.result()  # an AuthError ends the run here
                if result.lost or (result.error is not None and result.error.retryable):
                    limit.strained()
                else:
                    limit.ok()
                yield result


def _one(remote: Remote, store_id: str, item: AttachItem) -> Attached:
    try:
        reply = remote.attach_file(store_id, item)
    except AuthError:
        raise
    except RemoteError as exc:
        return Attached(item.file_id, error=exc)
    if reply.status not in (COMPLETED, FAILED):
        return Attached(item.file_id, reply)  # indexing goes on: polled with the others
    try:
        # The reply is not the record: under load a server can answer completed and lose the record.
        record = remote.get_store_file(store_id, item.file_id)
    except NotFound:
        return Attached(item.file_id, reply, lost=True)
    except RemoteError:
        return Attached(item.file_id, replace(reply, status="in_progress"))  # looked at again while waiting
    if record.status == FAILED and record.error_code is None:
        # Only the attach reply carries the reason on some servers (llama-stack keeps no last_error).
        record = replace(record, error_code=reply.error_code, error_message=reply.error_message)
    return Attached(item.file_id, record)
