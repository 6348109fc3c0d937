"""Rate-limit benchmarks: kernel vs twin, shield vs bare app vs Flask-Limiter.

Run once with::

    python -m pytest bench/bench_ratelimit.py --benchmark-only -q \\
        --benchmark-columns=min,median,mean,ops

Compare figures within one run only. ``test_interleaved_ratios`` measures
the variants in alternating batches, so drift on a shared machine hits
them alike, and reports the ratios in its ``extra_info``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask
from flask_limiter import Limiter

from tests.support.servers import RedisServer
from wsgishield import _fast
from wsgishield.middleware.ratelimit import RateLimitMiddleware
from wsgishield.policy import RedisSettings
from wsgishield.ratelimit import Limit
from wsgishield.stores import redis as redis_connections
from wsgishield.stores.buckets_memory import MemoryBucketStore
from wsgishield.stores.buckets_redis import RedisBucketStore
from wsgishield.stores.buckets_shm import SharedMemoryBucketStore

SECOND = 1_000_000
# High enough that no benchmark request is ever denied.
RATE = "1000000/second"


def _start_response(status, headers, exc_info=None):
    return None


def _environ() -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/items",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.10",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def _call(app) -> Callable[[], None]:
    template = _environ()

    def once() -> None:
        body = app(dict(template), _start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return once


def _flask_app() -> Flask:
    app = Flask("bench")

    @app.get("/items")
    def items():
        return "hello"

    return app


def _shield_app(store) -> Callable[[], None]:
    app = _flask_app()
    app.wsgi_app = RateLimitMiddleware(
        app.wsgi_app, limits=[Limit("bench", RATE)], default=["bench"], store=store
    )
    return _call(app)


def _flask_limiter_app(storage_uri: str) -> Callable[[], None]:
    app = _flask_app()
    Limiter(
        lambda: "192.0.2.10",
        app=app,
        default_limits=[RATE.replace("/", " per ")],
        storage_uri=storage_uri,
        headers_enabled=True,
    )
    return _call(app)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def shm_path(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("bench") / "table")


# Bucket kernel against its twin.


@pytest.mark.benchmark(group="kernel")
@pytest.mark.parametrize("mode", ["compiled", "python"])
def test_kernel_update(benchmark, mode):
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from tests.conftest import load_twin

    update = load_twin("gcra", mode).update
    now = 1_700_000_000 * SECOND
    benchmark(update, now + 5, now, 10_000, 1_000_000, 1)


# Whole Flask request: bare, shield on each local store, Flask-Limiter.


@pytest.mark.benchmark(group="flask-local")
def test_flask_bare(benchmark):
    benchmark(_call(_flask_app()))


@pytest.mark.benchmark(group="flask-local")
def test_flask_shield_memory(benchmark):
    benchmark(_shield_app(MemoryBucketStore()))


@pytest.mark.benchmark(group="flask-local")
def test_flask_shield_shm(benchmark, shm_path):
    benchmark(_shield_app(SharedMemoryBucketStore(slots=1 << 16, path=shm_path)))


@pytest.mark.benchmark(group="flask-local")
def test_flask_limiter_memory(benchmark):
    benchmark(_flask_limiter_app("memory://"))


# Redis: one request's limiter call against a bare PING on one connection.


@pytest.mark.benchmark(group="redis")
def test_redis_ping(benchmark, redis_server):
    client = redis.Redis(port=redis_server.port)
    benchmark(client.ping)


@pytest.mark.benchmark(group="redis")
@pytest.mark.parametrize("policies", [1, 3])
def test_redis_store_apply(benchmark, redis_server, policies):
    client = redis_connections.connect(
        RedisSettings(url=redis_server.url, timeout_ms=1000)
    )
    store = RedisBucketStore(client, prefix="bench")
    limits = [Limit(f"p{n}", RATE) for n in range(policies)]
    keys = [f"p{n}|192.0.2.10" for n in range(policies)]
    benchmark(store.apply, limits, keys, 1, "192.0.2.10")


@pytest.mark.benchmark(group="flask-redis")
def test_flask_shield_redis(benchmark, redis_server):
    client = redis_connections.connect(
        RedisSettings(url=redis_server.url, timeout_ms=1000)
    )
    benchmark(_shield_app(RedisBucketStore(client, prefix="bench-flask")))


@pytest.mark.benchmark(group="flask-redis")
def test_flask_limiter_redis(benchmark, redis_server):
    benchmark(_flask_limiter_app(f"redis://127.0.0.1:{redis_server.port}"))


def _interleave(
    variants: dict[str, Callable[[], None]], rounds: int, batch: int
) -> dict[str, float]:
    """Return the median µs per call of each variant over alternating batches."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for call in variants.values():  # warm up
        for _ in range(batch):
            call()
    for _ in range(rounds):
        for name, call in variants.items():
            started = time.perf_counter_ns()
            for _ in range(batch):
                call()
            samples[name].append((time.perf_counter_ns() - started) / batch / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def test_interleaved_ratios(benchmark, redis_server, shm_path):
    client = redis_connections.connect(
        RedisSettings(url=redis_server.url, timeout_ms=1000)
    )
    bare_client = redis.Redis(port=redis_server.port)
    store = RedisBucketStore(client, prefix="ratio")
    limit = [Limit("one", RATE)]
    local = _interleave(
        {
            "bare": _call(_flask_app()),
            "shield-shm": _shield_app(
                SharedMemoryBucketStore(slots=1 << 16, path=shm_path + "-ratio")
            ),
            "flask-limiter-memory": _flask_limiter_app("memory://"),
        },
        rounds=30,
        batch=300,
    )
    remote = _interleave(
        {
            "ping": bare_client.ping,
            "store-apply": lambda: store.apply(
                limit, ["one|192.0.2.10"], 1, "192.0.2.10"
            ),
        },
        rounds=30,
        batch=200,
    )
    benchmark.extra_info.update(
        {
            "median_us": {**local, **remote},
            "shield_shm_over_bare_us": local["shield-shm"] - local["bare"],
            "flask_limiter_over_bare_us": local["flask-limiter-memory"] - local["bare"],
            "redis_apply_over_ping": remote["store-apply"] / remote["ping"],
            "build": "compiled" if _fast.HAS_EXTENSIONS else "pure Python",
            "redis": bare_client.info("server")["redis_version"],
            "cpu": os.cpu_count(),
        }
    )
    print()
    for key, value in benchmark.extra_info.items():
        print(f"{key}: {value}")
    benchmark(bare_client.ping)
