"""HTTP layer: a stdlib ThreadingHTTPServer speaking the OpenAI wire format, with auth, latency, rate limits,
faults and lost replies applied around the route handlers. Faults never touch state except "lost reply",
which fully processes the request and then drops the connection."""

from __future__ import annotations

import json
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from . import routes
from .faults import ratelimit_headers, retry_headers
from .validate import ApiError

if TYPE_CHECKING:
    from .emulator import Emulator

FAULT_BODIES = {
    500: ("The server had an error while processing your request. Sorry about that!", "server_error"),
    503: ("The server is overloaded or not ready yet.", "server_error"),
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, emulator: Emulator):
        self.emulator = emulator
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # resets and broken pipes are expected here
            super().handle_error(request, client_address)

    def drop_all(self) -> None:
        """Close kept-alive connections so idle handler threads end and no request is served after stop()."""
        with self.conn_lock:
            conns = list(self.open_connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def mask(key: str) -> str:
    return key if len(key) < 8 else key[:3] + "*" * min(20, len(key) - 7) + key[-4:]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-emulator"
    sys_version = ""
    server: Server

    def log_message(self, format, *args):  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        try:  # headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # ---- wire helpers -------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        # A client that dies mid-body (killed, reset) sent no request: never process a truncated one.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                if not line:
                    raise ValueError("connection closed inside a chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise ValueError("connection closed inside a chunk")
                out += chunk
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            raise ValueError("connection closed before Content-Length bytes arrived")
        return body

    def _send(self, status: int, payload, headers: dict | None = None, started: float | None = None) -> None:
        if isinstance(payload, bytes):
            body, ctype = payload, "application/octet-stream"
        else:
            body, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", str(int((time.monotonic() - (started or time.monotonic())) * 1000)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self._count("status", status)

    def _send_error(self, err: ApiError, started: float | None = None) -> None:
        self._send(err.status, err.body(bare=self.emu.options.profile == "llama-stack"), err.headers, started)

    def _drop(self) -> None:
        """Close the connection without a response (RST): the client sees a connection error."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    def _count(self, group: str, key) -> None:
        with self.emu.state.lock:
            self.emu.state.counters[group][key] += 1

    # ---- request handling ------------------------------------------------------------------------------------
    def _handle(self) -> None:
        started = time.monotonic()
        emu, _opts = self.emu, self.emu.options
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            return self._drop()
        url = urlsplit(self.path)
        query = {k: vals[-1] for k, vals in parse_qs(url.query).items()}
        if url.path.startswith("/_emulator/"):
            return self._admin(url.path, raw)
        try:
            endpoint, handler, params = routes.resolve(self.command, url.path)
        except ApiError as err:
            self._count("requests", f"{self.command} (unknown)")
            return self._send_error(err, started)
        with emu.state.lock:
            emu.state.counters["requests"][endpoint] += 1
            seen = emu.state.counters["requests"][endpoint]
        emu.arrived(endpoint, seen)
        state = emu.state
        with state.lock:
            state.in_flight[endpoint] += 1
            state.counters["peak_in_flight"][endpoint] = max(
                state.counters["peak_in_flight"][endpoint], state.in_flight[endpoint]
            )
        try:
            return self._serve(endpoint, handler, params, query, raw, started)
        finally:
            with state.lock:
                state.in_flight[endpoint] -= 1

    def _serve(self, endpoint: str, handler, params, query, raw: bytes, started: float) -> None:
        emu, opts = self.emu, self.emu.options
        delay = emu.plan.delay()
        if emu.stopping.is_set() or (delay and emu.stopping.wait(delay)):
            return self._drop()
        auth = self._auth()
        if auth is not None:
            return self._send_error(auth, started)

        decision = emu.plan.before(endpoint)
        rl_headers = (
            ratelimit_headers(opts.upload_rps, decision.remaining, decision.reset_s)
            if endpoint == "POST /files"
            else {}
        )
        if decision.kind == "ratelimit":
            self._count("totals", "rate_limited")
            return self._send_error(
                ApiError(
                    429,
                    f"Rate limit reached for requests on {endpoint}: Limit {rl_headers['x-ratelimit-limit-requests']}"
                    " / min. Please try again later.",
                    type="requests",
                    code="rate_limit_exceeded",
                    headers=rl_headers | retry_headers(decision.retry_after),
                ),
                started,
            )
        if decision.kind is not None:
            self._count("faults", decision.kind)
        if decision.kind == "429":
            return self._send_error(
                ApiError(
                    429,
                    "Rate limit reached for requests. Please try again later.",
                    type="requests",
                    code="rate_limit_exceeded",
                    headers=retry_headers(decision.retry_after),
                ),
                started,
            )
        if decision.kind in ("500", "503"):
            message, kind = FAULT_BODIES[int(decision.kind)]
            headers = retry_headers(decision.retry_after) if decision.kind == "503" else {}
            return self._send_error(ApiError(int(decision.kind), message, type=kind, headers=headers), started)
        if decision.kind == "reset":
            return self._drop()
        if decision.kind == "timeout":
            emu.stopping.wait(opts.timeout_s)
            return self._drop()

        try:
            status, payload = handler(routes.Req(emu.state, params, query, raw, self.headers.get("Content-Type", "")))
        except ApiError as err:
            return self._send_error(err, started)
        except Exception:  # a bug in the emulator: report it like the API would, and loudly on stderr
            traceback.print_exc()
            return self._send_error(ApiError(500, FAULT_BODIES[500][0], type="server_error"), started)
        if endpoint == "POST /files":
            self._count("totals", "uploads")
        if emu.plan.lose_reply(endpoint):
            self._count("totals", "lost_replies")
            return self._drop()
        if decision.kind == "slow" and emu.stopping.wait(opts.slow_ms / 1000.0):
            return self._drop()
        headers = dict(rl_headers)
        if endpoint in routes.POLL_ENDPOINTS and opts.poll_after_ms is not None:
            headers["openai-poll-after-ms"] = str(int(opts.poll_after_ms))
        self._send(status, payload, headers, started)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

    def _auth(self) -> ApiError | None:
        opts = self.emu.options
        header = self.headers.get("Authorization", "")
        key = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not key:
            return ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if key in opts.rejected_keys or (opts.accepted_keys is not None and key not in opts.accepted_keys):
            return ApiError(
                401,
                f"Incorrect API key provided: {mask(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _admin(self, path: str, raw: bytes) -> None:
        """Out-of-band control for subprocess use: GET /_emulator/snapshot, POST /_emulator/configure."""
        try:
            if self.command == "GET" and path == "/_emulator/snapshot":
                return self._send(200, self.emu.snapshot())
            if self.command == "POST" and path == "/_emulator/configure":
                self.emu.configure(**json.loads(raw or b"{}"))
                return self._send(200, {"ok": True})
        except (TypeError, ValueError) as exc:
            return self._send(
                400, {"error": {"message": str(exc), "type": "invalid_request_error", "param": None, "code": None}}
            )
        self._send(
            404,
            {
                "error": {
                    "message": f"Invalid URL ({self.command} {path})",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )
