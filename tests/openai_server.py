"""A real OpenAI-compatible HTTP server for tests: scripted answers to /v1/chat/completions."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: a status, headers, a JSON body (or raw text), and an optional delay."""

    status: int = 200
    body: dict | str | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def rubric_reply(scores: dict[str, int] | None = None, content: str | None = None) -> Reply:
    """A successful chat completion whose message content is a rubric JSON (or `content`)."""
    scores = scores or {"relevance": 8, "depth": 7, "clarity": 9, "technical": 6}
    if content is None:
        content = json.dumps(
            {
                k: {"score": v, "rationale": f"Model judged {k} as {v}/10."}
                for k, v in scores.items()
            }
        )
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
    )


class OpenAICompatibleServer:
    """Serves scripted replies in order, then `default`; records every request it gets."""

    def __init__(self, default: Reply | None = None) -> None:
        self.script: deque[Reply] = deque()
        self.default = default or rubric_reply()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.requests.append({"path": self.path, "body": body})
                    reply = outer.script.popleft() if outer.script else outer.default
                if reply.delay:
                    time.sleep(reply.delay)
                payload = (
                    reply.body if isinstance(reply.body, str) else json.dumps(reply.body or {})
                )
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); that is what the test wanted

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def then(self, *replies: Reply) -> OpenAICompatibleServer:
        """Queue replies to give, in order, before falling back to the default."""
        self.script.extend(replies)
        return self

    @property
    def count(self) -> int:
        """How many requests arrived."""
        return len(self.requests)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
