"""The OpenAI backend: the official SDK with its own retries off, and one tenacity policy for all calls."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception

from ingest.pacing import Pacer, rate_headers
from ingest.remote import profile
from ingest.remote.base import (
    CREATE_TOKEN,
    MAX_RETRY_AFTER,
    AttachItem,
    AuthError,
    Batch,
    Hit,
    NotFound,
    RemoteError,
    RemoteFile,
    Stopped,
    Store,
    StoreFile,
    Unreachable,
    Unsupported,
)
from ingest.remote.breaker import Breaker
from ingest.remote.replies import as_batch, as_store, as_store_file, poll_after
from ingest.remote.retry import (
    Backoff,
    describe,
    is_transient,
    may_have_reached_server,
    outage_cause,
    pacing_outcome,
    refuses_per_file,
    remote_error,
    retry_after,
    status_of,
)

log = logging.getLogger("ingest.remote")
ATTACH_TIMEOUT = 900.0  # seconds for a one-file attach, which some servers answer only once it is embedded
T = TypeVar("T")
# An upload this small takes about a round trip: its latency tells how loaded the server is.
TIMED_BYTES = 1 << 20


class OpenAIRemote:
    kind = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        attempts: int = 6,
        backoff: Backoff | None = None,
        concurrency: int = 8,
        stop: threading.Event | None = None,
        breaker: Breaker | None = None,
    ):
        self.client = client
        self.attempts = max(1, attempts)
        self.backoff = backoff or Backoff()
        # Set when the run stops (Ctrl-C, SIGTERM): retry waits end at once and nothing more is sent.
        self.stop = stop or threading.Event()
        # The breaker sets it too, once the server stops answering (see remote/breaker.py).
        self.breaker = breaker or Breaker(str(client.base_url), self.stop, self.attempts)
        # Uploads have a rate limit of their own, stated in their replies' headers: a pacer of their
        # own learns it. Every other call shares one, which goes by concurrency and 429s alone.
        self.upload_pacer = Pacer(concurrency, stop=self.stop)
        self.pacer = Pacer(concurrency, stop=self.stop)

    def _stop(self, state: RetryCallState) -> bool:
        # Being told to slow down is not a failure: a 429 gets a larger budget than an error does.
        exc = state.outcome.exception() if state.outcome else None
        budget = self.attempts * 4 if status_of(exc) == 429 else self.attempts
        return state.attempt_number >= budget

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    @classmethod
    def connect(
        cls,
        api_key: str,
        base_url: str | None,
        attempts: int,
        timeout: float,
        concurrency: int = 8,
        stop: threading.Event | None = None,
        breaker: Breaker | None = None,
    ) -> OpenAIRemote:
        import httpx2

        client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=httpx2.Timeout(timeout, connect=10.0)
        )
        return cls(client, attempts=attempts, concurrency=concurrency, stop=stop, breaker=breaker)

    def _call(
        self,
        what: str,
        fn: Callable[[], T],
        on_retry: Callable[[BaseException], None] | None = None,
        pacer: Pacer | None = None,
        timed: bool = True,
    ) -> T:
        """fn under the retry policy and a pacer; a pacer given here also learns the rate limit from
        the headers of fn's replies (fn then returns a raw response)."""
        learns = pacer is not None
        pacer = pacer or self.pacer

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if on_retry and exc is not None:
                on_retry(exc)
            log.info(
                "%s: %s; retrying (attempt %d of %d)", what, describe(exc), state.attempt_number + 1, self.attempts
            )

        try:
            for attempt in Retrying(
                retry=retry_if_exception(is_transient),
                wait=self.backoff,
                stop=self._stop,
                before_sleep=before_sleep,
                reraise=True,
                sleep=self._sleep,
            ):
                with attempt:
                    ticket = None if self.stop.is_set() else pacer.acquire(timed)
                    if ticket is None:
                        raise Stopped(what)
                    try:
                        result = fn()
                    except BaseException as exc:
                        self._judge(exc)
                        response = getattr(exc, "response", None)
                        said = rate_headers(response.headers) if learns and response is not None else None
                        hinted = retry_after(exc)
                        pause = min(hinted, MAX_RETRY_AFTER) if hinted is not None else None
                        pacer.release(ticket, pacing_outcome(exc), pause, said)
                        raise
                    self.breaker.answered()
                    pacer.release(ticket, rate=rate_headers(getattr(result, "headers", None)) if learns else None)
                    return result
        except openai.OpenAIError as exc:
            cause = outage_cause(exc)
            if cause is not None and status_of(exc) is not None:
                self.breaker.failed(cause)  # a 5xx counts once its call has given up
            error = remote_error(what, exc, self.client.base_url)
            if cause is not None and self.breaker.tripped:  # not this call's fault: the next run's
                raise Unreachable(str(error)) from exc
            raise error from (None if isinstance(error, AuthError) else exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _judge(self, exc: BaseException) -> None:
        """What a failed try tells the breaker: the server answered, or the network failed it."""
        if not isinstance(exc, openai.OpenAIError):
            return
        cause = outage_cause(exc)
        if cause is None:
            self.breaker.answered()
        elif status_of(exc) is None:
            self.breaker.failed(cause)

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    def probe(self) -> profile.Profile:
        """Which server this is: OpenAI and Azure by their host; llama-stack answers GET /version."""
        known = profile.by_host(self.base_url)
        if known is not None:
            return known
        try:
            reply: object = self.client.get("/version", cast_to=object, options={"max_retries": 0})
        except (openai.APIConnectionError, openai.InternalServerError):
            return replace(profile.PROFILES[profile.COMPATIBLE], settled=False)  # asked again next run
        except openai.OpenAIError:
            reply = None  # not a route of this server
        found = profile.from_version(reply)
        if found.name == profile.LLAMA_STACK:
            # A brand-new llama-stack creates its tables on the first read: uploads sent at once before it get
            # 500 "no such table".
            self._call("list files", lambda: self.client.files.list(limit=1))
        return found

    # files -------------------------------------------------------------------------------------
    def upload(self, path: Path, filename: str) -> RemoteFile:
        suspect = threading.Event()

        def send():
            with open(path, "rb") as fh:  # streamed from disk, reopened on every attempt
                return self.client.files.with_raw_response.create(file=(filename, fh), purpose="assistants")

        def note(exc: BaseException) -> None:
            if may_have_reached_server(exc):
                suspect.set()

        try:
            small = path.stat().st_size <= TIMED_BYTES
        except OSError:
            small = True  # the upload reports what became of the file
        try:
            f = self._call(f"upload {filename}", send, on_retry=note, pacer=self.upload_pacer, timed=small).parse()
        except RemoteError as exc:
            if exc.__cause__ is not None and may_have_reached_server(exc.__cause__):
                suspect.set()
            exc.maybe_duplicated = suspect.is_set()
            raise
        return RemoteFile(f.id, f.filename, f.bytes, f.created_at, maybe_duplicated=suspect.is_set())

    def delete_file(self, file_id: str) -> None:
        try:
            self._call(f"delete file {file_id}", lambda: self.client.files.delete(file_id))
        except NotFound:
            pass

    def list_files(self) -> Iterator[RemoteFile]:
        page = self._call("list files", lambda: self.client.files.list(purpose="assistants"))
        while True:
            for f in page.data:
                yield RemoteFile(f.id, f.filename, f.bytes, f.created_at)
            if not page.has_next_page():
                return
            page = self._call("list files", page.get_next_page)

    # stores ------------------------------------------------------------------------------------
    def create_store(
        self, name: str, metadata: Mapping[str, str], chunking: Mapping[str, Any] | None, expires_after_days: int | None
    ) -> Store:
        # POST /vector_stores is not idempotent: after a try that may have reached the server, look for the
        # store it may have made (by its one-off token) before making another one, which would be an orphan.
        token = metadata.get(CREATE_TOKEN) or secrets.token_hex(8)
        args: dict[str, Any] = {"name": name, "metadata": {**metadata, CREATE_TOKEN: token}}
        if chunking:
            args["chunking_strategy"] = dict(chunking)
        if expires_after_days:
            args["expires_after"] = {"anchor": "last_active_at", "days": expires_after_days}
        ambiguous = threading.Event()
        since = time.time()

        def create():
            if ambiguous.is_set() and (found := self._find_store(token, since)) is not None:
                return found
            return self.client.vector_stores.create(**args)

        def note(exc: BaseException) -> None:
            if may_have_reached_server(exc):
                ambiguous.set()

        return as_store(self._call(f"create store {name}", create, on_retry=note))

    def find_store(self, token: str, since: float) -> Store | None:
        found = self._call("list stores", lambda: self._find_store(token, since))
        return as_store(found) if found is not None else None

    def _find_store(self, token: str, since: float):
        # Newest first, so the walk stops at the first store older than `since` (10 min of clock skew allowed).
        for vs in self.client.vector_stores.list(limit=100, order="desc"):
            if (vs.metadata or {}).get(CREATE_TOKEN) == token:
                return vs
            if vs.created_at < since - 600:
                return None
        return None

    def list_stores(self) -> Iterator[Store]:
        page = self._call("list stores", lambda: self.client.vector_stores.list(limit=100))
        while True:
            yield from (as_store(vs) for vs in page.data)
            if not page.has_next_page():
                return
            page = self._call("list stores", page.get_next_page)

    def get_store(self, store_id: str) -> Store:
        return as_store(self._call(f"store {store_id}", lambda: self.client.vector_stores.retrieve(store_id)))

    def delete_store(self, store_id: str) -> None:
        try:
            self._call(f"delete store {store_id}", lambda: self.client.vector_stores.delete(store_id))
        except NotFound:
            pass

    def rename_store(self, store_id: str, name: str, metadata: Mapping[str, str]) -> None:
        self._call(
            f"rename store {store_id}",
            lambda: self.client.vector_stores.update(store_id, name=name, metadata=dict(metadata)),
        )

    # batches -----------------------------------------------------------------------------------
    def attach_batch(self, store_id: str, items: Sequence[AttachItem]) -> Batch:
        files = []
        for item in items:
            entry: dict[str, Any] = {"file_id": item.file_id, "attributes": dict(item.attributes)}
            if item.chunking:
                entry["chunking_strategy"] = dict(item.chunking)
            files.append(entry)
        try:
            b = self._call(
                f"attach {len(files)} files to {store_id}",
                lambda: self.client.vector_stores.file_batches.create(store_id, files=cast(Any, files)),
            )
        except RemoteError as exc:
            if refuses_per_file(exc.__cause__):
                raise Unsupported(f"{self.client.base_url} does not take per-file attributes in a batch") from exc
            raise
        return as_batch(b, None)

    def attach_file(self, store_id: str, item: AttachItem) -> StoreFile:
        args: dict[str, Any] = {"file_id": item.file_id, "attributes": dict(item.attributes)}
        if item.chunking:
            args["chunking_strategy"] = dict(item.chunking)
        # Some servers embed before they answer (llama-stack: ~20 s per MB of text): a long wait is no fault,
        # and says nothing of how busy the server is.
        return as_store_file(
            self._call(
                f"attach {item.file_id} to {store_id}",
                lambda: self.client.vector_stores.files.create(store_id, timeout=ATTACH_TIMEOUT, **args),
                timed=False,
            )
        )

    def get_batch(self, store_id: str, batch_id: str) -> Batch:
        raw = self._call(
            f"batch {batch_id}",
            lambda: self.client.vector_stores.file_batches.with_raw_response.retrieve(
                batch_id, vector_store_id=store_id
            ),
        )
        return as_batch(raw.parse(), poll_after(raw.headers))

    def batch_files(self, store_id: str, batch_id: str, status: str | None = None) -> Iterator[StoreFile]:
        args: dict[str, Any] = {"vector_store_id": store_id, "limit": 100}
        if status:
            args["filter"] = status
        page = self._call(
            f"files of batch {batch_id}", lambda: self.client.vector_stores.file_batches.list_files(batch_id, **args)
        )
        yield from self._pages(page, f"files of batch {batch_id}")

    # store files -------------------------------------------------------------------------------
    def get_store_file(self, store_id: str, file_id: str) -> StoreFile:
        return as_store_file(
            self._call(
                f"file {file_id} in {store_id}",
                lambda: self.client.vector_stores.files.retrieve(file_id, vector_store_id=store_id),
            )
        )

    def list_store_files(self, store_id: str, status: str | None = None) -> Iterator[StoreFile]:
        args: dict[str, Any] = {"limit": 100}
        if status:
            args["filter"] = status
        page = self._call(f"files of {store_id}", lambda: self.client.vector_stores.files.list(store_id, **args))
        yield from self._pages(page, f"files of {store_id}")

    def _pages(self, page, what: str) -> Iterator[StoreFile]:
        while True:
            for f in page.data:
                yield as_store_file(f)
            if not page.has_next_page():
                return
            page = self._call(what, page.get_next_page)

    def update_attributes(self, store_id: str, file_id: str, attributes: Mapping[str, Any]) -> None:
        self._call(
            f"update attributes of {file_id}",
            lambda: self.client.vector_stores.files.update(
                file_id, vector_store_id=store_id, attributes=dict(attributes)
            ),
        )

    def detach(self, store_id: str, file_id: str) -> None:
        try:
            self._call(
                f"detach {file_id}", lambda: self.client.vector_stores.files.delete(file_id, vector_store_id=store_id)
            )
        except NotFound:
            pass

    def search(
        self, store_id: str, query: str, filters: Mapping[str, Any] | None = None, max_results: int = 10
    ) -> list[Hit]:
        args: dict[str, Any] = {"query": query, "max_num_results": max(1, min(50, max_results))}
        if filters:
            args["filters"] = dict(filters)
        page = self._call(f"search {store_id}", lambda: self.client.vector_stores.search(store_id, **args))
        return [
            Hit(r.file_id, r.filename, r.score, dict(r.attributes or {}), "\n".join(c.text for c in r.content))
            for r in page.data
        ]
