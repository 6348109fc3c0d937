"""Call a WSGI app in-process, as a server would, and collect its response.

``make_environ`` builds a PEP 3333 environ. ``call`` runs one request through
an app, from a target such as ``"/items?page=2"`` or from a ready environ, and
returns a ``Response``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from wsgishield import context

__all__ = ["EchoApp", "Response", "StubIdentity", "call", "make_environ"]


@dataclass
class Response:
    """The status, headers and body an app produced, and the environ it saw."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes
    environ: dict[str, Any]

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    def header(self, name: str) -> str | None:
        """Return every value of ``name``, matched in any case, joined by ", ".

        Return None when the response has no such header.
        """
        lowered = name.lower()
        values = [value for key, value in self.headers if key.lower() == lowered]
        return ", ".join(values) if values else None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


class StubIdentity(NamedTuple):
    """A stand-in for the caller that the authentication layer verified.

    The layers below authentication read only ``subject``, while the real
    ``Identity`` needs a whole verified token.
    """

    subject: str


def make_environ(
    method: str = "GET",
    target: str = "/",
    *,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    stream: Any = None,
    content_length: str | None = None,
    chunked: bool = False,
    terminated: bool = True,
    remote_addr: str = "192.0.2.10",
    scheme: str = "http",
    subject: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a WSGI environ for one request.

    A query in ``target`` fills QUERY_STRING unless ``query`` is given.
    ``chunked`` leaves CONTENT_LENGTH out, as servers do for a chunked body.
    ``terminated`` then sets whether the server marked the end of the stream.
    ``subject`` leaves a ``StubIdentity`` where the authentication layer
    puts the verified caller. ``extra`` adds any other environ keys.
    """
    path, _, target_query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query or target_query,
        "SERVER_NAME": "api.example",
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
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = value
    if subject is not None:
        environ[context.IDENTITY] = StubIdentity(subject)
    if extra:
        environ.update(extra)
    return environ


def call(
    app: Callable[..., Iterable[bytes]],
    target: str | dict[str, Any] = "/",
    *,
    method: str = "GET",
    **options: Any,
) -> Response:
    """Run one request through ``app`` and read the whole response.

    ``target`` is a path with an optional query, turned into an environ by
    ``make_environ(method, target, **options)``, or a complete environ.
    """
    if isinstance(target, dict):
        environ = target
    else:
        environ = make_environ(method, target, **options)
    started: list[Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    return Response(status, headers, body, environ)


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
