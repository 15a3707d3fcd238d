"""The webhook benchmark's receiver: a local HTTP server in its own process.

    python -m bench.receiver --port 8123 [--hang 30]

It answers every POST with 204 at once (threaded, HTTP/1.1 keep-alive, so a client that reuses
connections pays no connect per request) and records each arrival: the wall-clock time the body
was read, the `webhook-id` header and the path. A POST to a path under `/hang` gets no answer
until `--hang` seconds pass or the client gives up, so it outlasts any delivery timeout. The
bench reads and clears the record over HTTP:

    GET  /_arrivals   {"arrivals": [[unix_time, webhook_id, path], ...], "cpu_seconds": ...}
    POST /_reset      forget every arrival

`post_all` is the baseline's sender: plain `requests.post`, one call per body, as a client
without connection reuse sends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_PREFIX = "/hang"


class Receiver(ThreadingHTTPServer):
    """Records arrivals; a thread per connection, so a hanging path never blocks the others."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], hang: float) -> None:
        super().__init__(address, Handler)
        self.hang = hang
        self.arrivals: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/_reset":
            with self.server.lock:
                self.server.arrivals.clear()
            self._answer(204)
            return
        arrival = (time.time(), self.headers.get("webhook-id", ""), self.path)
        with self.server.lock:
            self.server.arrivals.append(arrival)
        if self.path.startswith(HANG_PREFIX):
            self._hang()
            return
        self._answer(204)

    def do_GET(self) -> None:
        if self.path != "/_arrivals":
            self._answer(404)
            return
        with self.server.lock:
            arrivals = list(self.server.arrivals)
        times = os.times()
        self._answer(200, json.dumps({
            "arrivals": arrivals, "cpu_seconds": times.user + times.system,
        }).encode())  # fmt: skip

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response_only(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _hang(self) -> None:
        """Say nothing until the client closes the connection or `--hang` seconds pass."""
        deadline = time.monotonic() + self.server.hang
        self.close_connection = True
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.25))
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client gave up (its timeout); so do we
                except OSError:
                    return
        with contextlib.suppress(OSError):
            self._answer(204)

    def log_message(self, *args) -> None:
        pass


def post_all(requests_to_send: list[tuple[str, bytes, dict[str, str]]]) -> int:
    """POST each (url, body, headers) with plain `requests.post`; returns how many got a 2xx."""
    import requests

    ok = 0
    for url, body, headers in requests_to_send:
        response = requests.post(url, data=body, headers=headers, timeout=10)
        ok += 200 <= response.status_code < 300
    return ok


def post_all_reusing(requests_to_send: list[tuple[str, bytes, dict[str, str]]]) -> int:
    """The same through one `requests.Session` (keep-alive): what the receiver can take."""
    import requests

    ok = 0
    with requests.Session() as http:
        for url, body, headers in requests_to_send:
            response = http.post(url, data=body, headers=headers, timeout=10)
            ok += 200 <= response.status_code < 300
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.receiver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a /hang path waits")
    args = parser.parse_args(argv)
    server = Receiver(("127.0.0.1", args.port), args.hang)
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
