"""Response cache benchmarks: hits and misses against their baselines.

Run with::

    python -m pytest bench/bench_cache.py --benchmark-only -q \
        --benchmark-columns=min,median,mean,ops

Pairs to compare within one run (same group):

- ``hit``: a memory hit through the whole shield (client address, route and
  cache layers) against a Flask-Caching ``@cached`` hit through Flask, both
  with a 1 KB JSON body.
- ``redis``: a hit from the Redis store through the cache middleware against
  a bare redis-py ``GET`` of the same stored value, and a hit served by the
  in-process tier in front of Redis.
- ``miss``: a cacheable miss (app called, response stored) against the bare
  app, and the unkeyed-input detector's wrapper against a plain dict copy.

``test_hit_ratio`` and ``test_redis_hit_ratio`` time the same pairs in
alternating rounds and print their ratios; run them without
``--benchmark-only`` (add ``-s``). The Flask-Caching baseline needs the
``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest

from bench.conftest import interleaved, report
from tests.cache_helpers import route_table
from tests.support.servers import RedisServer
from wsgishield import Shield
from wsgishield.cache.unkeyed import WatchedEnviron
from wsgishield.middleware.cache import CacheMiddleware

BODY = json.dumps(
    {"items": [{"id": n, "name": f"item-{n:04d}"} for n in range(31)]}
).encode()
assert 1000 <= len(BODY) <= 1100, len(BODY)


def environ_for(path: str, query: str = "") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "api.example",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.10",
        "HTTP_HOST": "api.example",
        "HTTP_ACCEPT": "application/json",
        "HTTP_USER_AGENT": "bench/1.0",
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(b""),
        "wsgi.errors": BytesIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Any:
    return None


def drive(app: Any, template: dict[str, Any]) -> bytes:
    """One request as a WSGI server makes it: fresh environ, join, close."""
    result = app(dict(template), start_response)
    try:
        return b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]


# -- hit: shield vs Flask-Caching ----------------------------------------------


@pytest.fixture(scope="module")
def shield_app() -> Shield:
    policy = {
        "cache": {},
        "routes": [{"id": "items", "path": "/items", "cache": {"ttl": 3600}}],
    }
    shield = Shield(bare_app, policy)
    drive(shield, environ_for("/items"))
    return shield


@pytest.fixture(scope="module")
def flask_caching_app() -> Any:
    from flask import Flask, Response

    # The baseline lives in the ``bench`` extra: pip install -e '.[bench]'.
    Cache = pytest.importorskip("flask_caching").Cache

    app = Flask("bench")
    cache = Cache(
        app, config={"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 3600}
    )

    @app.get("/items")
    @cache.cached()
    def items() -> Response:
        return Response(BODY, mimetype="application/json")

    drive(app.wsgi_app, environ_for("/items"))
    return app.wsgi_app


@pytest.mark.benchmark(group="hit")
def test_hit_shield_memory(benchmark: Any, shield_app: Shield) -> None:
    template = environ_for("/items")
    assert benchmark(drive, shield_app, template) == BODY


@pytest.mark.benchmark(group="hit")
def test_hit_flask_caching(benchmark: Any, flask_caching_app: Any) -> None:
    template = environ_for("/items")
    assert benchmark(drive, flask_caching_app, template) == BODY


@pytest.mark.benchmark(group="hit")
def test_hit_bare_app(benchmark: Any) -> None:
    template = environ_for("/items")
    assert benchmark(drive, bare_app, template) == BODY


# -- redis: cache hit vs redis-py GET ------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def redis_cache(redis_server: RedisServer) -> CacheMiddleware:
    import redis

    from wsgishield.cache.redis import RedisStore

    store = RedisStore(redis.Redis.from_url(redis_server.url), prefix="bench")
    cache = CacheMiddleware(
        bare_app, routes=route_table({"/items": {"ttl": 3600}}), store=store
    )
    drive(cache, environ_for("/items"))
    return cache


@pytest.mark.redis
@pytest.mark.benchmark(group="redis")
def test_redis_hit_cache(benchmark: Any, redis_cache: CacheMiddleware) -> None:
    template = environ_for("/items")
    assert benchmark(drive, redis_cache, template) == BODY


@pytest.mark.redis
@pytest.mark.benchmark(group="redis")
def test_redis_get_baseline(benchmark: Any, redis_cache: CacheMiddleware) -> None:
    store = redis_cache.store
    client = store.client  # type: ignore[attr-defined]
    keys = list(client.scan_iter("bench:*"))
    assert len(keys) == 2  # the entry and its URI tag set
    entry_key = next(key for key in keys if key.endswith(b":cache"))
    value = client.get(entry_key)
    assert value is not None and BODY in value
    benchmark(client.get, entry_key)


@pytest.mark.redis
@pytest.mark.benchmark(group="redis")
def test_redis_hit_local_tier(benchmark: Any, redis_server: RedisServer) -> None:
    import redis

    from wsgishield.cache.memory import MemoryStore
    from wsgishield.cache.redis import RedisStore

    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(
        client, prefix="bench-local", local=MemoryStore(1 << 20), local_ttl=60
    )
    cache = CacheMiddleware(
        bare_app, routes=route_table({"/items": {"ttl": 3600}}), store=store
    )
    template = environ_for("/items")
    drive(cache, template)
    try:
        assert benchmark(drive, cache, template) == BODY
    finally:
        client.close()


# -- miss: added cost of a stored miss, and of the detector -------------------


@pytest.mark.benchmark(group="miss")
def test_miss_cache_memory(benchmark: Any) -> None:
    cache = CacheMiddleware(
        bare_app,
        routes=route_table({"/items": {"ttl": 3600}}),
        max_bytes=4 * 1024 * 1024,
    )
    counter = iter(range(10**9))

    def one_miss() -> bytes:
        return drive(cache, environ_for("/items", f"page={next(counter)}"))

    assert benchmark(one_miss) == BODY


@pytest.mark.benchmark(group="miss")
def test_miss_bare_app(benchmark: Any) -> None:
    counter = iter(range(10**9))

    def one_call() -> bytes:
        return drive(bare_app, environ_for("/items", f"page={next(counter)}"))

    assert benchmark(one_call) == BODY


def _read_headers(environ: dict[str, Any]) -> None:
    # What Werkzeug reads on a typical request, plus two app header reads.
    environ.get("HTTP_HOST")
    environ.get("HTTP_CONNECTION", "")
    environ.get("HTTP_ACCEPT")
    "HTTP_X_REQUEST_ID" in environ  # noqa: B015


@pytest.mark.benchmark(group="detector")
def test_detector_watched_environ(benchmark: Any) -> None:
    template = environ_for("/items")

    def watched() -> None:
        _read_headers(WatchedEnviron(template))

    benchmark(watched)


@pytest.mark.benchmark(group="detector")
def test_detector_plain_dict(benchmark: Any) -> None:
    template = environ_for("/items")

    def plain() -> None:
        _read_headers(dict(template))

    benchmark(plain)


# -- ratios timed in alternating rounds ----------------------------------------


def test_hit_ratio(
    capsys: pytest.CaptureFixture[str], shield_app: Shield, flask_caching_app: Any
) -> None:
    template = environ_for("/items")
    medians = interleaved(
        {
            "flask-caching hit": lambda: drive(flask_caching_app, template),
            "shield memory hit": lambda: drive(shield_app, template),
            "bare app": lambda: drive(bare_app, template),
        },
        number=500,
    )
    with capsys.disabled():
        print("\n" + report("cache hit, 1 KB JSON", medians, "flask-caching hit"))


@pytest.mark.redis
def test_redis_hit_ratio(
    capsys: pytest.CaptureFixture[str], redis_cache: CacheMiddleware
) -> None:
    client = redis_cache.store.client  # type: ignore[attr-defined]
    keys = client.scan_iter("bench:*")
    entry_key = next(key for key in keys if key.endswith(b":cache"))
    template = environ_for("/items")
    medians = interleaved(
        {
            "redis-py GET": lambda: client.get(entry_key),
            "cache hit from Redis": lambda: drive(redis_cache, template),
        },
        number=200,
    )
    with capsys.disabled():
        print("\n" + report("Redis hit, 1 KB JSON", medians, "redis-py GET"))
