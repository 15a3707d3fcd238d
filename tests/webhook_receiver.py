"""A real HTTP receiver for webhook tests: scripted answers, every request recorded and verifiable.

Receivers verify signatures with the `standardwebhooks` library, as an integrator would.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Answer:
    """One scripted answer: status, headers, body, and how long to wait before answering."""

    status: int = 200
    body: str = "ok"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split()

    def json(self) -> dict:
        return json.loads(self.body)

    def verify(self, secret: str) -> dict:
        """The payload, once `standardwebhooks` accepts the signature for `secret`."""
        return Webhook(secret).verify(self.body, self.headers)


class WebhookReceiver:
    """Answers with `script` in order, then `default`; records every request."""

    def __init__(
        self, *script: Answer, default: Answer | None = None, path: str = "/hook", port: int = 0
    ) -> None:
        self.script: deque[Answer] = deque(script)
        self.default = default or Answer()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = outer._record(self.path, dict(self.headers.items()), body)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = answer.body.encode()
                # The client may have given up (a timeout test); that is the point, not an error.
                with contextlib.suppress(OSError):
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, path: str, headers: dict, body: bytes) -> Answer:
        with self._arrived:
            self.received.append(
                Received(path, {k.lower(): v for k, v in headers.items()}, body, time.monotonic())
            )
            self._arrived.notify_all()
            return self.script.popleft() if self.script else self.default

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Block until at least `count` requests arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.url} got {len(self.received)} of {count} requests in {timeout}s"
                    )
                self._arrived.wait(left)
            return list(self.received)

    def verified(self, secret: str) -> list[dict]:
        """Every payload received, each signature checked with `standardwebhooks`."""
        payloads = []
        for request in list(self.received):
            try:
                payloads.append(request.verify(secret))
            except WebhookVerificationError as exc:
                raise AssertionError(
                    f"signature check failed for {request.headers}: {exc}"
                ) from exc
        return payloads

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
