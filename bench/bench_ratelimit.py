"""Rate-limit benchmarks: kernel vs twin, shield vs bare app vs Flask-Limiter.

Run once with::

    python -m pytest bench/bench_ratelimit.py --benchmark-only -q \\
        --benchmark-columns=min,median,mean,ops

Compare figures within one run only. The ``test_ratio_*`` tests time their
variants in alternating rounds (``bench/conftest.py``), so drift on a shared
machine hits them alike, and print the medians and ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask

from bench.conftest import interleaved, report
from tests.support.servers import RedisServer
from wsgishield import _fast
from wsgishield.middleware.ratelimit import RateLimitMiddleware
from wsgishield.policy import RedisSettings
from wsgishield.ratelimit import Limit
from wsgishield.stores import redis as redis_connections
from wsgishield.stores.buckets_memory import MemoryBucketStore
from wsgishield.stores.buckets_redis import GCRA_SCRIPT, RedisBucketStore
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
    limiter = pytest.importorskip("flask_limiter", reason="pip install -e '.[bench]'")
    Limiter = limiter.Limiter
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


def test_ratio_layer_over_flask(benchmark, shm_path):
    medians = interleaved(
        {
            "bare Flask": _call(_flask_app()),
            "Flask + limiter (shm store)": _shield_app(
                SharedMemoryBucketStore(slots=1 << 16, path=shm_path + "-ratio")
            ),
            "Flask + limiter (memory store)": _shield_app(MemoryBucketStore()),
            "Flask + Flask-Limiter (memory)": _flask_limiter_app("memory://"),
        },
        number=300,
    )
    print()
    print(report("rate-limit layer over Flask", medians, "bare Flask"))
    bare = medians["bare Flask"]
    benchmark.extra_info["layer_shm_us"] = (
        medians["Flask + limiter (shm store)"] - bare
    ) * 1e6
    benchmark.extra_info["flask_limiter_us"] = (
        medians["Flask + Flask-Limiter (memory)"] - bare
    ) * 1e6
    benchmark(_call(_flask_app()))


def test_ratio_redis_call_over_ping(benchmark, redis_server):
    """One request's store call against a PING on the same connection pool.

    ``client.evalsha`` of the same script with the same arguments shows what
    the store saves by sending its packed command on a pooled connection
    instead of going through redis-py's ``execute_command``.
    """
    client = redis_connections.connect(
        RedisSettings(url=redis_server.url, timeout_ms=1000)
    )
    store = RedisBucketStore(client, prefix="ratio")
    one = [Limit("one", RATE)]
    three = [Limit(f"p{n}", RATE) for n in range(3)]
    three_keys = [f"p{n}|192.0.2.10" for n in range(3)]
    noop = client.script_load("return 1")
    gcra = client.script_load(GCRA_SCRIPT)
    limit = one[0]
    gcra_arguments = (
        store.redis_key("one|192.0.2.10", "192.0.2.10"),
        b"0",
        1,
        b"%d" % limit.interval,
        b"%d" % limit.tolerance,
        b"0",
    )
    medians = interleaved(
        {
            "PING": client.ping,
            "EVALSHA of 'return 1'": lambda: client.evalsha(noop, 0),
            "client.evalsha of the GCRA script": lambda: client.evalsha(
                gcra, 1, *gcra_arguments
            ),
            "store.apply, 1 policy": lambda: store.apply(
                one, ["one|192.0.2.10"], 1, "192.0.2.10"
            ),
            "store.apply, 3 policies": lambda: store.apply(
                three, three_keys, 1, "192.0.2.10"
            ),
        },
        number=300,
    )
    print()
    print(report("Redis store call over a PING on its pool", medians, "PING"))
    benchmark.extra_info["redis"] = client.info("server")["redis_version"]
    benchmark.extra_info["apply_over_ping"] = (
        medians["store.apply, 1 policy"] / medians["PING"]
    )
    benchmark.extra_info["evalsha_over_ping"] = (
        medians["client.evalsha of the GCRA script"] / medians["PING"]
    )
    benchmark(client.ping)


def test_ratio_kernel_twins(benchmark):
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from tests.conftest import load_twin

    now = 1_700_000_000 * SECOND
    compiled = load_twin("gcra", "compiled").update
    python = load_twin("gcra", "python").update
    medians = interleaved(
        {
            "compiled": lambda: compiled(now + 5, now, 10_000, 1_000_000, 1),
            "twin": lambda: python(now + 5, now, 10_000, 1_000_000, 1),
        }
    )
    print()
    print(report("GCRA kernel update", medians, "compiled"))
    benchmark(compiled, now + 5, now, 10_000, 1_000_000, 1)
