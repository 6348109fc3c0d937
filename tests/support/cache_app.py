"""A WSGI app behind a Redis-backed cache, for tests under real Gunicorn.

``WSGISHIELD_REDIS_URL`` names the Redis server; the app counts its calls
per path in Redis, so a test can tell how often the cache let a request
through across every worker.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from wsgishield import Shield

_counter = redis.Redis.from_url(os.environ["WSGISHIELD_REDIS_URL"])
_prefix = os.environ.get("CACHE_TEST_PREFIX", "cache-app")


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    calls = _counter.incr(f"{_prefix}:calls:{path}")
    _counter.expire(f"{_prefix}:calls:{path}", 120)
    body: dict[str, Any] = {"path": path, "call": calls}
    if path == "/echo":
        body["host"] = environ.get("HTTP_X_FORWARDED_HOST")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


app = Shield(
    application,
    {
        # Generous, so a loaded test machine does not trip the store-failure
        # bypass that a 10 ms production timeout would.
        "redis": {"key_prefix": _prefix, "timeout_ms": 1000},
        "cache": {"store": "redis"},
        "routes": [
            {"id": "items", "path": "/items", "cache": {"ttl": 60}},
            {"id": "echo", "path": "/echo", "cache": {"ttl": 60}},
        ],
    },
)
