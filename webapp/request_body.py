"""Request bodies over MAX_CONTENT_LENGTH are refused (413), whether or not they say their size.

Werkzeug enforces the limit up front for a body with a Content-Length. A chunked body (no
Content-Length; the server sets `wsgi.input_terminated`) is wrapped in a stream that stops
reading at the limit and returns what it read: the view would see a silently truncated body.
Here such a body is read up to one byte past the limit, and that byte means 413.
"""

from __future__ import annotations

from io import BytesIO
from typing import IO

from flask import Flask, Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream

READ_SIZE = 64 * 1024


def init_app(app: Flask) -> None:
    """Hold chunked bodies to the limit too; call after extensions that set their own request
    class (htmx-flask does), which this one extends."""
    app.request_class = type("BoundedRequest", (BoundedBody, app.request_class), {})


class BoundedBody(Request):
    """A request whose body, chunked or not, is held to MAX_CONTENT_LENGTH."""

    @cached_property
    def stream(self) -> IO[bytes]:
        """The body stream; RequestEntityTooLarge once a body of unknown length passes the limit."""
        if self.shallow:
            raise RuntimeError("This request was created with 'shallow=True'.")
        limit = self.max_content_length
        unsized = self.content_length is None and "wsgi.input_terminated" in self.environ
        if limit is None or not unsized:
            return get_input_stream(self.environ, max_content_length=limit)
        source = self.environ["wsgi.input"]
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = source.read(min(READ_SIZE, limit + 1 - size))
            if not chunk:
                return BytesIO(b"".join(chunks))
            chunks.append(chunk)
            size += len(chunk)
        raise RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
