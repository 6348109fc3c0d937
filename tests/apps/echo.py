"""A WSGI app that reports the length and SHA-256 of the body it read.

Served by Gunicorn in the body tests, behind a shield with a 1 MiB limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

from flask import Flask, request

from wsgishield import Shield

MAX_BODY = 1024 * 1024

POLICY = {
    "request": {"max_body": MAX_BODY},
    "headers": {},
    "routes": [
        {"id": "upload", "path": "/upload"},
        {"id": "flask-upload", "path": "/flask/upload"},
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
        {
            "length": length,
            "sha256": digest.hexdigest(),
            "pid": os.getpid(),
            "stack_size": threading.stack_size(),
        }
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


flask_app = Flask(__name__)


@flask_app.post("/flask/upload")
def flask_upload() -> dict[str, Any]:
    # Werkzeug reads a chunked body only when the server terminates the input.
    data = request.get_data()
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO", "").startswith("/flask/"):
        return flask_app.wsgi_app(environ, start_response)
    return echo(environ, start_response)


app = Shield(dispatch, policy=POLICY)
