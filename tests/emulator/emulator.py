"""The Emulator: lifecycle, runtime switches, tampering behind the tool's back, and inspection."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import validate as v
from .faults import FaultPlan, Options
from .routes import ENDPOINTS
from .server import Server
from .state import State

_ALL = 10**9


def _checked(options: dict) -> dict:
    """Catch misspelt endpoint names ("POST /files", see routes.ENDPOINTS) in fault options."""
    for key in ("fault_endpoints", "lost_reply_endpoints", "endpoint"):
        names = options.get(key)
        names = [names] if isinstance(names, str) else names or []
        unknown = [n for n in names if n not in ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown endpoint(s) {unknown} for {key}; known: {ENDPOINTS}")
    return options


class Emulator:
    """An OpenAI Files + Vector Stores API on 127.0.0.1.

        with Emulator(index_delay=0.1, upload_rps=50) as emu:
            client = openai.OpenAI(base_url=emu.base_url, api_key="test")

    Keyword options are the fields of faults.Options; change them later with configure(**options).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any):
        self.options = Options()
        self.options.update(**_checked(options))
        self.state = State(self.options)
        self.plan = FaultPlan(self.options)
        self.stopping = threading.Event()
        self.host, self._requested_port = host, port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._triggers: list[tuple[str, int, Callable[[], None]]] = []
        self._trigger_lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        if self._server is None:
            self.stopping.clear()
            self._server = Server((self.host, self._requested_port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._requested_port = server.server_address[1]  # a restart keeps the port (and base_url)
        self.stopping.set()  # wakes handlers sleeping in latency / timeout / slow faults
        server.shutdown()
        server.drop_all()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ---- switches ----------------------------------------------------------------------------------------
    def when(self, endpoint: str, count: int, action: Callable[[], None]) -> None:
        """Run action() once, in the server, as the count-th request to endpoint arrives and before it is
        served: a change "mid-run" lands at the same point of the run however fast the machine is."""
        _checked({"endpoint": endpoint})
        with self._trigger_lock:
            self._triggers.append((endpoint, count, action))

    def arrived(self, endpoint: str, seen: int) -> None:
        """Called by the server for every request: fires the triggers due at this one."""
        with self._trigger_lock:
            due = [t for t in self._triggers if t[0] == endpoint and t[1] == seen]
            for t in due:
                self._triggers.remove(t)
        for _, _, action in due:
            action()

    def configure(self, **options: Any) -> None:
        """Change any option at runtime (latency_ms=..., fault_rate=..., stuck_batches=..., seed=...)."""
        with self.state.lock:
            self.options.update(**_checked(options))
            if "seed" in options:
                self.plan.reseed(options["seed"])
                self.state.index_rng = random.Random(f"index-{options['seed']}")
            if "upload_rps" in options:
                self.plan.bucket = None

    def inject(self, kind: str, count: int = 1, endpoint: str | None = None) -> None:
        """Give the next `count` matching requests a fault: 429, 500, 503, reset, timeout, slow or lost_reply.
        endpoint is a name like "POST /files" or "GET /vector_stores/{vector_store_id}/file_batches/{batch_id}"."""
        self.plan.inject(kind, count, _checked({"endpoint": endpoint})["endpoint"])

    def lose_next_replies(self, count: int = 1, endpoint: str = "POST /files") -> None:
        """The next `count` requests to endpoint are processed, then the connection drops without a reply."""
        self.plan.inject("lost_reply", count, _checked({"endpoint": endpoint})["endpoint"])

    def unstick_batches(self) -> int:
        """Let files held by stuck_batches finish indexing; returns how many were released."""
        return self.state.unstick()

    def advance_time(self, seconds: float) -> None:
        """Move the emulator's clock forward (expiry, created_at); due indexing completes."""
        self.state.advance_time(seconds)

    # ---- tampering (changes the tool did not make) ----------------------------------------------------------
    def create_file(self, filename: str, data: bytes = b"", purpose: str = "assistants") -> str:
        """An unattached File, as another app or an interrupted run would leave it. Returns its id."""
        return self.state.create_file(filename, purpose, data)["id"]

    def delete_file(self, file_id: str) -> None:
        self.state.delete_file(file_id)

    def add_stray_file(
        self,
        store_id: str,
        filename: str = "stray.txt",
        data: bytes = b"stray content",
        attributes: Mapping[str, Any] | None = None,
        status: str = "completed",
    ) -> str:
        """A File attached to the store behind the tool's back (in the given status). Returns the file id."""
        file_id = self.create_file(filename, data)
        error = {"code": "server_error", "message": "An internal error occurred."} if status == "failed" else None
        self.state.tamper_attach(
            store_id, file_id, v.attributes(dict(attributes)) if attributes else None, status, error
        )
        return file_id

    def delete_store_file(self, store_id: str, file_id: str) -> None:
        """Detach a file from a store (the File itself stays)."""
        self.state.delete_store_file(store_id, file_id)

    def fail_store_file(
        self, store_id: str, file_id: str, code: str = "server_error", message: str = "An internal error occurred."
    ) -> None:
        self.state.tamper_status(store_id, file_id, "failed", {"code": code, "message": message})

    def set_store_file_attributes(self, store_id: str, file_id: str, attributes: Mapping[str, Any] | None) -> None:
        self.state.update_store_file(store_id, file_id, dict(attributes) if attributes is not None else None)

    def expire_store(self, store_id: str) -> None:
        self.state.expire_store(store_id)

    def delete_store(self, store_id: str) -> None:
        self.state.delete_store(store_id)

    # ---- inspection -----------------------------------------------------------------------------------------
    def files(self, purpose: str | None = None) -> list[dict]:
        """Every File (API objects, oldest first)."""
        return self.state.list_files(purpose, _ALL, "asc", None)["data"]

    def file_bytes(self, file_id: str) -> bytes:
        with self.state.lock:
            return self.state.files[file_id].data

    def stores(self) -> list[dict]:
        return self.state.list_stores(_ALL, "asc", None, None)["data"]

    def store(self, store_id: str) -> dict:
        return self.state.get_store(store_id)

    def store_files(self, store_id: str, status: str | None = None) -> list[dict]:
        """Store files (API objects plus "filename"), oldest first."""
        with self.state.lock:
            out = self.state.list_store_files(store_id, status, _ALL, "asc", None, None)["data"]
            for sf in out:
                f = self.state.files.get(sf["id"])
                sf["filename"] = f.filename if f else None
            return out

    def batch(self, store_id: str, batch_id: str) -> dict:
        return self.state.get_batch(store_id, batch_id)

    def counters(self) -> dict:
        """{"requests": {endpoint: n}, "status": {code: n}, "faults": {kind: n}, "peak_in_flight": {endpoint: n},
        "uploads", "rate_limited", "lost_replies", "files_created", "index_failures_injected", "429s"}."""
        with self.state.lock:
            c = self.state.counters
            out: dict[str, Any] = {k: dict(c[k]) for k in ("requests", "status", "faults", "peak_in_flight")}
            for key in ("uploads", "rate_limited", "lost_replies", "files_created", "index_failures_injected"):
                out[key] = c["totals"][key]
            out["429s"] = c["status"][429]
            return out

    def reset_counters(self) -> None:
        with self.state.lock:
            for counter in self.state.counters.values():
                counter.clear()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no (non-stuck) store file is in_progress."""
        deadline = time.monotonic() + timeout
        while not self.state.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def snapshot(self) -> dict:
        with self.state.lock:
            return {
                "counters": self.counters(),
                "files": self.files(),
                "stores": [dict(s, files=self.store_files(s["id"])) for s in self.stores()],
            }
