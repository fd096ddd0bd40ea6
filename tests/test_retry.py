"""The retry policy against a scripted HTTP server on 127.0.0.1: what is retried, what stops at once."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from ingest.config import Settings
from ingest.indexing import Indexer
from ingest.manifest import Manifest
from ingest.remote.base import RemoteError
from ingest.remote.openai import OpenAIRemote
from ingest.remote.retry import Backoff, retry_after
from ingest.stores import Stores
from tests.emulator import Emulator


class Scripted:
    """Answers every request with one status, body and headers; counts the requests."""

    def __init__(self, status: int, error: dict, headers: dict[str, str]):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests += 1
                body = json.dumps({"error": error}).encode()
                self.send_response(status)
                for key, value in {
                    **headers,
                    "content-type": "application/json",
                    "content-length": str(len(body)),
                }.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.remote = OpenAIRemote(
            openai.OpenAI(api_key="sk-test", max_retries=0, base_url=f"http://127.0.0.1:{self.server.server_port}/v1"),
            attempts=4,
            backoff=Backoff(base=0.0, cap=0.0),
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    made: list[Scripted] = []

    def make(status: int, error: dict, headers: dict[str, str] | None = None) -> Scripted:
        made.append(Scripted(status, error, headers or {}))
        return made[-1]

    yield make
    for server in made:
        server.close()


QUOTA = {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}
DOWN = {"message": "The server had an error", "type": "server_error", "code": None}


@pytest.mark.parametrize(
    "status, error, headers, expected",
    [
        (429, QUOTA, {"retry-after-ms": "1"}, 1),  # no wait cures an exhausted quota
        (500, DOWN, {"x-should-retry": "false"}, 1),  # the server's word, as the SDK takes it
        (503, DOWN, {"retry-after": "86400"}, 1),  # a day's wait means stop, not wait
        (400, {"message": "try again", "type": "invalid_request_error", "code": None}, {"x-should-retry": "true"}, 4),
        (503, DOWN, {"retry-after-ms": "1"}, 4),  # the ordinary case: every attempt is used
    ],
)
def test_what_is_retried_and_what_stops_at_once(scripted, status, error, headers, expected):
    server = scripted(status, error, headers)
    with pytest.raises(RemoteError) as caught:
        server.remote.get_store("vs_1")
    assert server.requests == expected, f"{server.requests} requests, expected {expected}"
    assert "sk-test" not in str(caught.value)


def test_retry_after_may_be_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    import httpx2

    exc = openai.RateLimitError(
        "slow down",
        body=None,
        response=httpx2.Response(
            429, headers={"retry-after": when}, request=httpx2.Request("GET", "http://127.0.0.1/v1/files")
        ),
    )
    assert 27 <= retry_after(exc) <= 31


def test_the_sweep_of_a_crashed_upload_looks_only_as_far_as_that_upload_can_have_run(tmp_path):
    with Emulator(index_delay=0.01) as emu:
        manifest = Manifest(tmp_path / "manifest.db")
        remote = OpenAIRemote(openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0))
        settings = Settings()
        # A run was killed while it uploaded report.md, two hours ago: its ledger row never got a reply.
        upload_id = manifest.ledger_start(str(tmp_path), "report.md", "report.md", 12, None)
        manifest.db["uploads"].update(upload_id, {"started_at": time.time() - 7200})
        # Today another application uploads its own report.md of the same size.
        other = openai.OpenAI(base_url=emu.base_url, api_key="sk-other")
        foreign = other.files.create(file=("report.md", b"hello world\n"), purpose="assistants").id
        Indexer(settings, manifest, remote, Stores(settings, manifest, remote)).sweep()
        assert foreign in {f["id"] for f in emu.files()}, "the sweep deleted a file this tool never created"
        manifest.close()


def test_a_long_upload_killed_late_is_swept_by_its_runs_last_sign_of_life_and_no_further(tmp_path):
    with Emulator(index_delay=0.01) as emu:
        manifest = Manifest(tmp_path / "manifest.db")
        remote = OpenAIRemote(openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0))
        now = time.time()
        run = manifest.start_run("sync")
        manifest.db["runs"].update(run, {"started_at": now - 1800})
        # A 400 MB upload over a slow link, queued 26 minutes ago; the run kept noting it was alive
        # until the server created the file, and then it was killed.
        upload_id = manifest.ledger_start(str(tmp_path), "big.pdf", "big.pdf", 12, None)
        manifest.db["uploads"].update(upload_id, {"started_at": now - 1560})
        manifest.alive(every=0)
        ours = remote.client.files.create(file=("big.pdf", b"hello world\n"), purpose="assistants").id
        emu.advance_time(3600)  # an hour later, another application uploads its own big.pdf
        other = openai.OpenAI(base_url=emu.base_url, api_key="sk-other")
        foreign = other.files.create(file=("big.pdf", b"hello world\n"), purpose="assistants").id
        manifest.close()

        manifest = Manifest(tmp_path / "manifest.db")  # the next run
        settings = Settings()
        Indexer(settings, manifest, remote, Stores(settings, manifest, remote)).sweep()
        left = {f["id"] for f in emu.files()}
        assert ours not in left, "the lost copy of our own long upload was left as an orphan"
        assert foreign in left, "a file uploaded after the run was gone is not ours"
        manifest.close()
