"""What a failed call to an OpenAI-compatible server means: worth another try or not, how long to wait
(Retry-After, else backoff with jitter), what it says about load, and the RemoteError it becomes."""

from __future__ import annotations

import email.utils
import random
import time
from urllib.parse import urlsplit

import httpx2
import openai
from tenacity import RetryCallState

from ingest.pacing import NEUTRAL, OVERLOADED, THROTTLED
from ingest.remote.base import MAX_RETRY_AFTER, AuthError, NotFound, RemoteError


def status_of(exc: BaseException | None) -> int | None:
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
    status = status_of(exc)
    return status is not None and (status in (408, 409, 429) or status >= 500)


def worth_a_later_try(exc: BaseException) -> bool:
    """Timeouts, connection errors, 408/409/429 and 5xx: a later run may succeed where this one gave up
    (a quota refilled, a long Retry-After passed); a 400 or a refused file stays refused."""
    status = status_of(exc)
    return status is None or status in (408, 409, 429) or status >= 500


def outage_cause(exc: BaseException) -> str | None:
    """Why a failed try says nothing of the server but that it is not answering (a refused or lost
    connection, a timeout, a 5xx): the cause, as the breaker names it; None when the server answered."""
    if isinstance(exc, openai.APITimeoutError):
        return "the requests timed out"
    if isinstance(exc, openai.APIConnectionError):
        seen: BaseException | None = exc
        for _ in range(8):  # the OS's reason, under httpx's and httpcore's wrappers
            if seen is None:
                break
            if isinstance(seen, OSError) and seen.strerror:
                return seen.strerror.lower()
            if isinstance(seen, httpx2.RemoteProtocolError):
                return "the server closed the connection"
            seen = seen.__cause__ or seen.__context__
        return "connection error"
    status = status_of(exc)
    return f"HTTP {status}" if status is not None and status >= 500 else None


def may_have_reached_server(exc: BaseException) -> bool:
    """A failure after which a non-idempotent POST may still have taken effect."""
    status = status_of(exc)
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


def pacing_outcome(exc: BaseException) -> str:
    """What a failed call says about load: a 429 is a rate, 5xx and lost connections are strain."""
    status = status_of(exc)
    if status == 429:
        return THROTTLED
    if isinstance(exc, openai.APIConnectionError) or (status is not None and status >= 500):
        return OVERLOADED
    return NEUTRAL


def describe(exc: BaseException | None) -> str:
    status = status_of(exc)
    if status is not None:
        return f"HTTP {status}: {server_message(getattr(exc, 'body', None)) or 'no reason given'}"[:300]
    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    return str(exc)[:300]


def server_message(body: object) -> str:
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
            return server_message(value)
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


def refuses_per_file(exc: BaseException | None) -> bool:
    """A 400 saying the batch wants file_ids (llama-stack) or does not know `files`: per-file attributes are
    not taken in a batch. A 400 about anything else (a bad attribute) is not this."""
    if status_of(exc) not in (400, 422):
        return False
    said = server_message(getattr(exc, "body", None)).lower()
    return ("file_ids" in said and ("required" in said or "missing" in said)) or (
        "files" in said and any(w in said for w in ("extra", "unknown", "not permitted", "unrecognized"))
    )


def remote_error(what: str, exc: openai.OpenAIError, base_url: object) -> RemoteError:
    """The one mapping of the SDK's errors onto ingest's: auth, not found, refused, worth a later run."""
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        asked = (
            "OpenAI" if urlsplit(str(base_url)).hostname in (None, "api.openai.com") else f"the server at {base_url}"
        )
        return AuthError(f"{asked} refused the API key ({status_of(exc)}): check OPENAI_API_KEY")
    if isinstance(exc, openai.NotFoundError):
        return NotFound(f"{what}: not found")
    if isinstance(exc, openai.BadRequestError):
        # Some servers (llama-stack) answer an unknown store, store file or batch with 400 "… not found".
        if "not found" in server_message(exc.body).lower():
            return NotFound(f"{what}: not found ({describe(exc)})")
        return RemoteError(f"{what}: {describe(exc)}")
    if isinstance(exc, openai.APIConnectionError):  # name the server: a wrong OPENAI_BASE_URL shows at once
        return RemoteError(f"{what}: {describe(exc)} ({base_url})", retryable=True)
    return RemoteError(f"{what}: {describe(exc)}", retryable=worth_a_later_try(exc))
