"""The OpenAI backend: the official SDK with its own retries off, and one tenacity policy for all calls."""

from __future__ import annotations

import email.utils
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception

from ingest.pacing import NEUTRAL, OVERLOADED, THROTTLED, Pacer, rate_headers
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
    Store,
    StoreFile,
    Unsupported,
)

log = logging.getLogger("ingest.remote")
ATTACH_TIMEOUT = 900.0  # seconds for a one-file attach, which some servers answer only once it is embedded
T = TypeVar("T")
# An upload this small takes about a round trip: its latency tells how loaded the server is.
TIMED_BYTES = 1 << 20


def _status(exc: BaseException | None) -> int | None:
    return getattr(exc, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """429, 408, 409, 5xx, connection errors and timeouts are worth another try; the rest are not.
    As the SDK does: the server's x-should-retry decides when given, and a Retry-After beyond
    MAX_RETRY_AFTER means stop. An exhausted quota is a 429 that no wait cures."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    response = getattr(exc, "response", None)
    should = response.headers.get("x-should-retry") if response is not None else None
    if should in ("true", "false"):
        return should == "true"
    if getattr(exc, "code", None) == "insufficient_quota":
        return False
    hinted = retry_after(exc)
    if hinted is not None and hinted > MAX_RETRY_AFTER:
        return False
    status = _status(exc)
    return status is not None and (status in (408, 409, 429) or status >= 500)


def worth_a_later_try(exc: BaseException) -> bool:
    """Timeouts, connection errors, 408/409/429 and 5xx: a later run may succeed where this one gave up
    (a quota refilled, a long Retry-After passed); a 400 or a refused file stays refused."""
    status = _status(exc)
    return status is None or status in (408, 409, 429) or status >= 500


def may_have_reached_server(exc: BaseException) -> bool:
    """A failure after which a non-idempotent POST may still have taken effect."""
    status = _status(exc)
    return isinstance(exc, openai.APIConnectionError) or (status is not None and status >= 500)


def retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is not None:
            try:
                return max(0.0, float(value) / divisor)
            except ValueError:
                pass
            try:  # Retry-After may also be an HTTP date
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                continue
    return None


class Backoff:
    """Wait the server's Retry-After when it gives one, else exponential backoff with full jitter."""

    def __init__(self, base: float = 0.5, cap: float = 8.0, rng: random.Random | None = None):
        self.base, self.cap, self.rng = base, cap, rng or random.Random()

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after(exc) if exc else None
        if hinted is not None:
            return min(hinted, MAX_RETRY_AFTER) + self.rng.uniform(0, 0.1)
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** (state.attempt_number - 1)))


class OpenAIRemote:
    kind = "openai"

    def __init__(self, client: openai.OpenAI, attempts: int = 6, backoff: Backoff | None = None, concurrency: int = 8):
        self.client = client
        self.attempts = max(1, attempts)
        self.backoff = backoff or Backoff()
        # Set by the daemon on SIGTERM: retry waits end at once and no new attempt starts.
        self.stop = threading.Event()
        # Uploads have a rate limit of their own, stated in their replies' headers: a pacer of their
        # own learns it. Every other call shares one, which goes by concurrency and 429s alone.
        self.upload_pacer = Pacer(concurrency, stop=self.stop)
        self.pacer = Pacer(concurrency, stop=self.stop)

    def _stop(self, state: RetryCallState) -> bool:
        # Being told to slow down is not a failure: a 429 gets a larger budget than an error does.
        exc = state.outcome.exception() if state.outcome else None
        budget = self.attempts * 4 if _status(exc) == 429 else self.attempts
        return state.attempt_number >= budget

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    @classmethod
    def connect(
        cls, api_key: str, base_url: str | None, attempts: int, timeout: float, concurrency: int = 8
    ) -> OpenAIRemote:
        import httpx2

        client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=httpx2.Timeout(timeout, connect=10.0)
        )
        return cls(client, attempts=attempts, concurrency=concurrency)

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
                "%s: %s; retrying (attempt %d of %d)", what, _describe(exc), state.attempt_number + 1, self.attempts
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
                        raise RemoteError(f"{what}: stopped before it was sent", retryable=True)
                    try:
                        result = fn()
                    except BaseException as exc:
                        response = getattr(exc, "response", None)
                        said = rate_headers(response.headers) if learns and response is not None else None
                        hinted = retry_after(exc)
                        pause = min(hinted, MAX_RETRY_AFTER) if hinted is not None else None
                        pacer.release(ticket, _outcome(exc), pause, said)
                        raise
                    pacer.release(ticket, rate=rate_headers(getattr(result, "headers", None)) if learns else None)
                    return result
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise AuthError(f"OpenAI refused the API key ({_status(exc)}): check OPENAI_API_KEY") from None
        except openai.NotFoundError as exc:
            raise NotFound(f"{what}: not found") from exc
        except openai.BadRequestError as exc:
            # Some servers (llama-stack) answer an unknown store, store file or batch with 400 "… not found".
            if "not found" in _server_message(exc.body).lower():
                raise NotFound(f"{what}: not found ({_describe(exc)})") from exc
            raise RemoteError(f"{what}: {_describe(exc)}") from exc
        except openai.APIConnectionError as exc:  # name the server: a wrong OPENAI_BASE_URL shows at once
            raise RemoteError(f"{what}: {_describe(exc)} ({self.client.base_url})", retryable=True) from exc
        except openai.OpenAIError as exc:
            raise RemoteError(f"{what}: {_describe(exc)}", retryable=worth_a_later_try(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

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

        return _store(self._call(f"create store {name}", create, on_retry=note))

    def find_store(self, token: str, since: float) -> Store | None:
        found = self._call("list stores", lambda: self._find_store(token, since))
        return _store(found) if found is not None else None

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
            yield from (_store(vs) for vs in page.data)
            if not page.has_next_page():
                return
            page = self._call("list stores", page.get_next_page)

    def get_store(self, store_id: str) -> Store:
        return _store(self._call(f"store {store_id}", lambda: self.client.vector_stores.retrieve(store_id)))

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
            if _refuses_per_file(exc.__cause__):
                raise Unsupported(f"{self.client.base_url} does not take per-file attributes in a batch") from exc
            raise
        return _batch(b, None)

    def attach_file(self, store_id: str, item: AttachItem) -> StoreFile:
        args: dict[str, Any] = {"file_id": item.file_id, "attributes": dict(item.attributes)}
        if item.chunking:
            args["chunking_strategy"] = dict(item.chunking)
        # Some servers embed before they answer (llama-stack: ~20 s per MB of text): a long wait is no fault,
        # and says nothing of how busy the server is.
        return _store_file(
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
        return _batch(raw.parse(), _poll_after(raw.headers))

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
        return _store_file(
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
                yield _store_file(f)
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


def _outcome(exc: BaseException) -> str:
    """What a failed call says about load: a 429 is a rate, 5xx and lost connections are strain."""
    status = _status(exc)
    if status == 429:
        return THROTTLED
    if isinstance(exc, openai.APIConnectionError) or (status is not None and status >= 500):
        return OVERLOADED
    return NEUTRAL


def _describe(exc: BaseException | None) -> str:
    status = _status(exc)
    if status is not None:
        return f"HTTP {status}: {_server_message(getattr(exc, 'body', None)) or 'no reason given'}"[:300]
    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    return str(exc)[:300]


def _server_message(body: object) -> str:
    """The server's reason in one sentence, from whichever envelope it uses: OpenAI's {"error": {message}}
    (the SDK hands over the inner object), {"errors": [{loc, msg}]} or FastAPI's {"detail": …}."""
    if isinstance(body, str):
        return body.strip()
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("message"), str):
        return body["message"]
    for key in ("errors", "detail", "error"):
        value = body.get(key)
        if isinstance(value, (str, dict)):
            return _server_message(value)
        if isinstance(value, list) and value:
            more = f" (and {len(value) - 3} more)" if len(value) > 3 else ""
            return "; ".join(_one_problem(p) for p in value[:3]) + more
    return ""


def _one_problem(problem: object) -> str:
    if not isinstance(problem, dict):
        return str(problem)
    where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
    message = str(problem.get("msg") or problem.get("message") or "invalid")
    return f"{where}: {message}" if where else message


def _refuses_per_file(exc: BaseException | None) -> bool:
    """A 400 saying the batch wants file_ids (llama-stack) or does not know `files`: per-file attributes are
    not taken in a batch. A 400 about anything else (a bad attribute) is not this."""
    if _status(exc) not in (400, 422):
        return False
    said = _server_message(getattr(exc, "body", None)).lower()
    return ("file_ids" in said and ("required" in said or "missing" in said)) or (
        "files" in said and any(w in said for w in ("extra", "unknown", "not permitted", "unrecognized"))
    )


def _poll_after(headers) -> int | None:
    value = headers.get("openai-poll-after-ms")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _store(vs) -> Store:
    counts = vs.file_counts
    return Store(
        vs.id,
        vs.name or "",
        vs.status,
        vs.usage_bytes or 0,
        {k: getattr(counts, k) for k in ("in_progress", "completed", "failed", "cancelled", "total")},
        dict(vs.metadata or {}),
    )


def _batch(b, poll_after_ms: int | None) -> Batch:
    c = b.file_counts
    return Batch(b.id, b.status, c.in_progress, c.completed, c.failed, c.cancelled, c.total, poll_after_ms)


def _store_file(f) -> StoreFile:
    err = f.last_error
    return StoreFile(
        f.id,
        f.status,
        dict(f.attributes or {}),
        err.code if err else None,
        err.message if err else None,
        f.usage_bytes or 0,
    )
