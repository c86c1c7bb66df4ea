"""A counting HTTP reverse proxy on 127.0.0.1: every request is recorded (method, path,
headers) and forwarded to an upstream server, optionally after a delay.

Tests use it to check the headers luigiflow sends and to count round trips; the bench
uses it to report requests per task, named per endpoint, and wall time under latency.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Hop-by-hop headers a proxy must not forward (RFC 9110 section 7.6.1).
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None


@dataclass
class Fault:
    """Answer matching requests with `status` and `body` (status 0: reset the connection
    without an answer) instead of forwarding them, until `until` (time.monotonic())."""

    status: int
    body: bytes = b""
    until: float = float("inf")
    path_contains: str = ""
    answered: int = 0


@dataclass
class Recorder:
    upstream: str
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fault: Fault | None = None

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()

    def endpoints(self) -> collections.Counter[str]:
        """Requests per endpoint, e.g. {'POST /api/2.0/mlflow/runs/search': 2}."""
        with self.lock:
            return collections.Counter(f"{s.method} {s.path.split('?')[0]}" for s in self.seen)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def _handler(recorder: Recorder) -> type[http.server.BaseHTTPRequestHandler]:
    target = urllib.parse.urlsplit(recorder.upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with recorder.lock:
                recorder.seen.append(
                    Seen(self.command, self.path, dict(self.headers.items()), body)
                )
            if recorder.delay_s:
                time.sleep(recorder.delay_s)
            fault = recorder.fault
            if fault and time.monotonic() < fault.until and fault.path_contains in self.path:
                fault.answered += 1
                if not fault.status:
                    self.close_connection = True  # a reset: no answer at all
                    return
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fault.body)))
                self.end_headers()
                self.wfile.write(fault.body)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=300
            )
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
            finally:
                conn.close()
            self.send_response(reply.status, reply.reason)
            head = self.command == "HEAD"  # no body: its Content-Length is the upstream's
            for key, value in reply.getheaders():
                if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the recorder is the log

    return Handler


@contextmanager
def counting_proxy(upstream: str, delay_s: float = 0.0) -> Iterator[tuple[str, Recorder]]:
    """(proxy URL, recorder) for a proxy in a thread of this process, forwarding to `upstream`."""
    recorder = Recorder(upstream.rstrip("/"), delay_s)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()
