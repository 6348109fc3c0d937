"""A WSGI app that reports the length and SHA-256 of the body it read.

Served by Gunicorn in the body tests, behind a shield with a 1 MiB limit.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from wsgishield import Shield

MAX_BODY = 1024 * 1024

POLICY = {
    "request": {"max_body": MAX_BODY},
    "headers": {},
    "routes": [
        {"id": "upload", "path": "/upload"},
        {
            "id": "json",
            "path": "/json",
            "request": {"content_types": ["application/json"]},
        },
    ],
}


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    digest = hashlib.sha256()
    length = 0
    stream = environ["wsgi.input"]
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
    body = json.dumps(
        {"length": length, "sha256": digest.hexdigest(), "pid": os.getpid()}
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = Shield(echo, policy=POLICY)
