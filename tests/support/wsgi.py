"""Call a WSGI app in-process and collect its response."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any


class Response:
    def __init__(
        self, status: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.status_code = int(status.split(" ", 1)[0])
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Callable[..., Any],
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: str = "",
    remote_addr: str = "192.0.2.10",
    environ: dict[str, Any] | None = None,
) -> Response:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote_addr,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        env[key] = value
    if environ:
        env.update(environ)
    captured: dict[str, Any] = {}

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"] = status
        captured["headers"] = response_headers
        return lambda data: None

    chunks = app(env, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    captured["environ"] = env
    response = Response(captured["status"], captured["headers"], body)
    response.environ = env  # type: ignore[attr-defined]
    return response
