"""A bare WSGI app behind the shield with metrics, for the Gunicorn tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsgishield import Shield


def _app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    body = b'{"ok":true}'
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = Shield(
    _app,
    {
        "routes": [{"id": "items", "path": "/items/{id}", "methods": ["GET"]}],
        "metrics": {"allow": ["loopback"]},
    },
)
