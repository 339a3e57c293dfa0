"""One S3-like HTTP server on 127.0.0.1, for the fetch tests and bench/fetch_throughput.py.

It serves a fixed set of files under `/Microscopy/train/` (the bucket's prefix) with Content-Length and an MD5 ETag
like S3, answers HEAD and GET, logs every request, and can add latency and inject the faults a flaky bucket shows.
It is bounded: a fixed file set, daemon threads, shut down on leaving the `with` block.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

#: GET actions: HTTP errors, "drop" (half the body, then the connection closes), "truncate" (all but 7 bytes, then
#: close), "slow" (sleep `slow_seconds` first), "corrupt" (right length and ETag, wrong first bytes), "ok".
ACTIONS = ("500", "503", "404", "drop", "truncate", "slow", "corrupt", "ok")


class LoopbackS3:
    """Serves `files` (name -> bytes) under `/Microscopy/train/` on 127.0.0.1 and a free port.

    `latency`: seconds slept before every answer (HEAD and GET), as a remote bucket's round trip.
    `faults[name]`: a list of actions consumed one per GET, then normal service resumes;
    `always[name]`: an action applied to every GET of that file.
    `keep_alive`: HTTP/1.1 persistent connections, as S3 keeps them (the default is HTTP/1.0, one connection per
    request). `etag`: send the MD5 ETag. `log` lists every request as (method, name); `in_flight` and
    `max_in_flight` count concurrent GETs.
    """

    prefix = "/Microscopy/train/"

    def __init__(self, files: dict[str, bytes], *, latency: float = 0.0, slow_seconds: float = 1.0,
                 etag: bool = True, keep_alive: bool = False):
        self.files = dict(files)
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.always: dict[str, str] = {}
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.etag = etag
        self.keep_alive = keep_alive
        self.log: list[tuple[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def gets(self, name: str | None = None) -> list[str] | int:
        """Every GET's file name in order, or how many GETs `name` had."""
        with self._lock:
            names = [path for method, path in self.log if method == "GET"]
        return names if name is None else names.count(name)

    def get_counts(self) -> Counter:
        """file name -> number of GETs."""
        return Counter(self.gets())

    def count(self, method: str | None = None) -> int:
        """Requests so far, all of them or of one method ("GET", "HEAD")."""
        with self._lock:
            return sum(1 for m, _ in self.log if method is None or m == method)

    def reset_counts(self) -> None:
        with self._lock:
            self.log.clear()

    def __enter__(self) -> LoopbackS3:
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-s3", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --------------------------------------------------------------- what one request does

    def _record(self, method: str, name: str) -> str:
        """Log the request and return the action for it (a GET's scripted fault, if any)."""
        with self._lock:
            self.log.append((method, name))
            if method != "GET":
                return "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.faults[name].pop(0) if self.faults.get(name) else self.always.get(name, "ok")

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # many concurrent clients connect at once

    def handle_error(self, request, client_address):  # client timeouts close sockets mid-answer
        pass


def _handler_for(bucket: LoopbackS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if bucket.keep_alive else "HTTP/1.0"
        # headers and body leave in two writes; with Nagle on, the client's delayed ACK would add ~40 ms per
        # request that a real server (S3) does not have
        disable_nagle_algorithm = True

        def log_message(self, *args):  # keep test and bench output clean
            pass

        def _name(self) -> str:
            path = unquote(urlparse(self.path).path)
            return path[len(bucket.prefix):] if path.startswith(bucket.prefix) else path

        def _status_only(self, status: int) -> None:
            """An error answer with an empty body (the connection stays usable under keep-alive)."""
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _headers(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if bucket.etag:
                self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
            self.end_headers()

        def do_HEAD(self):
            name = self._name()
            bucket._record("HEAD", name)
            time.sleep(bucket.latency)
            body = bucket.files.get(name)
            self._status_only(404) if body is None else self._headers(body)

        def do_GET(self):
            action = bucket._record("GET", name := self._name())
            try:
                self._serve(name, action)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                bucket._done()

        def _serve(self, name: str, action: str) -> None:
            time.sleep(bucket.latency)
            if action == "slow":
                time.sleep(bucket.slow_seconds)
            body = bucket.files.get(name)
            if action in ("500", "503", "404"):
                self._status_only(int(action))
                return
            if body is None:
                self._status_only(404)
                return
            self._headers(body)
            if action in ("drop", "truncate"):
                self.wfile.write(body[: len(body) // 2] if action == "drop" else body[:-7])
                self.wfile.flush()
                self.close_connection = True
                return
            if action == "corrupt":
                body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
            self.wfile.write(body)

    return Handler
