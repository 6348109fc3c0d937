"""Shared pieces of the response cache tests: stores, apps and a clock."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from tests.support.servers import RedisServer
from wsgishield.cache.memory import MemoryStore
from wsgishield.cache.redis import RedisStore
from wsgishield.middleware.cache import CacheMiddleware
from wsgishield.policy import RouteCache, RouteRule
from wsgishield.routes import Route, RouteTable


class FakeClock:
    """Wall-clock time that only moves when a test moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def route_table(rules: dict[str, dict[str, Any] | None]) -> RouteTable:
    """Routes from ``{path: cache-settings or None}``; the id is the path."""
    routes = []
    for path, cache in rules.items():
        rule = RouteRule(
            id=path.strip("/").replace("/", "-") or "root",
            path=path,
            cache=msgspec.convert(cache, RouteCache) if cache is not None else None,
        )
        routes.append(Route(rule.id, rule.path, rule.methods, rule))
    return RouteTable(routes)


def make_store(
    backend: str, redis_server: RedisServer | None, clock: FakeClock, **options: Any
) -> Any:
    if backend == "memory":
        return MemoryStore(options.get("max_bytes", 1 << 24), clock=clock)
    import redis

    assert redis_server is not None
    client = redis.Redis.from_url(redis_server.url)
    local = MemoryStore(1 << 20, clock=clock) if options.get("local") else None
    return RedisStore(client, prefix="t" + uuid.uuid4().hex[:12], local=local)


class CountingApp:
    """A WSGI app whose views are plain functions of the environ.

    ``views`` maps a path to ``view(environ) -> (status, headers, body)``.
    Every call is counted per path, under a lock, for threaded tests.
    """

    def __init__(
        self,
        views: dict[
            str, Callable[[dict[str, Any]], tuple[str, list[tuple[str, str]], bytes]]
        ],
    ) -> None:
        self.views = views
        self.calls: dict[str, int] = {}
        self.environs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def count(self, path: str) -> int:
        return self.calls.get(path, 0)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        with self._lock:
            self.calls[path] = self.calls.get(path, 0) + 1
            number = self.calls[path]
        self.environs.append(environ)
        view = self.views.get(path)
        if view is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        environ["test.call_number"] = number
        status, headers, body = view(environ)
        start_response(status, headers)
        return [body]


def json_body(**fields: Any) -> bytes:
    return json.dumps(fields, sort_keys=True).encode()


def build(
    app: Any,
    rules: dict[str, dict[str, Any] | None],
    store: Any,
    clock: FakeClock,
    **options: Any,
) -> CacheMiddleware:
    return CacheMiddleware(
        app, routes=route_table(rules), store=store, clock=clock, **options
    )


def close_store(store: Any) -> None:
    """Close a Redis store's connections, so no socket outlives its test."""
    client = getattr(store, "client", None)
    if client is not None:
        client.close()
