"""Call a WSGI app in-process with a hand-built environ, as a server would."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

from wsgishield import Shield


class Response:
    """The status, headers and body a WSGI app produced."""

    def __init__(
        self, status: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.code = int(status.split(" ", 1)[0])
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}


def make_environ(
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes | None = None,
    stream: Any = None,
    headers: Mapping[str, str] | None = None,
    content_length: str | None = None,
    chunked: bool = False,
    terminated: bool = True,
    query: str = "",
    remote_addr: str = "203.0.113.7",
    scheme: str = "http",
) -> dict[str, Any]:
    """Build a WSGI environ; ``chunked`` leaves out CONTENT_LENGTH as servers do."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote_addr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": stream if stream is not None else io.BytesIO(body or b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        if terminated:
            environ["wsgi.input_terminated"] = True
    elif content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    elif body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    return environ


def call(app: Any, environ: dict[str, Any]) -> Response:
    """Run one request through ``app`` and collect the whole response."""
    captured: list[Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if exc_info is not None and captured:
            raise exc_info[1].with_traceback(exc_info[2])
        captured[:] = [status, headers]
        return lambda data: None

    result: Iterable[bytes] = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Response(captured[0], captured[1], body)


class EchoApp:
    """A WSGI app that reads the whole body and records what it saw."""

    def __init__(self, read: str = "all") -> None:
        self.read = read
        self.seen: list[bytes] = []
        self.environ: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environ = environ
        stream = environ["wsgi.input"]
        if self.read == "all":
            data = stream.read()
        elif self.read == "chunks":
            parts = []
            while True:
                part = stream.read(1000)
                if not part:
                    break
                parts.append(part)
            data = b"".join(parts)
        elif self.read == "lines":
            data = b"".join(stream)
        else:
            data = b""
        self.seen.append(data)
        body = str(len(data)).encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]


def shield(app: Any, policy: Mapping[str, Any]) -> Shield:
    return Shield(app, policy=policy)
