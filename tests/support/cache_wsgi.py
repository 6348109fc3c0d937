"""Call a WSGI application directly, as a server would, for tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, NamedTuple

from wsgishield import context


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Identity(NamedTuple):
    """What the authentication layer leaves in the environ."""

    subject: str


def make_environ(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    *,
    subject: str | None = None,
    scheme: str = "http",
) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "api.example",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.10",
        "wsgi.url_scheme": scheme,
        "wsgi.input": BytesIO(b""),
        "wsgi.errors": BytesIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_HOST": "api.example",
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = value
    if subject is not None:
        environ[context.IDENTITY] = Identity(subject)
    return environ


def call(
    app: Callable[..., Any],
    method: str = "GET",
    target: str = "/",
    headers: Mapping[str, str] | None = None,
    **options: Any,
) -> Response:
    """Send one request through ``app`` and read the whole response."""
    path, _, query = target.partition("?")
    environ = make_environ(method, path, query, headers, **options)
    started: list[Any] = []

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        started[:] = [status, response_headers]
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, response_headers = started
    merged: dict[str, str] = {}
    for name, value in response_headers:
        lower = name.lower()
        merged[lower] = f"{merged[lower]}, {value}" if lower in merged else value
    return Response(int(status[:3]), merged, body)
