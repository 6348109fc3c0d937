"""The Redis store on a real three-master Redis Cluster on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from werkzeug.test import Client

from tests.support.servers import RedisServer, free_port
from wsgishield import context
from wsgishield.middleware.ratelimit import RateLimitMiddleware
from wsgishield.policy import RedisSettings
from wsgishield.ratelimit import Limit
from wsgishield.routes import Route
from wsgishield.stores import redis as redis_connections
from wsgishield.stores.breaker import CircuitBreaker
from wsgishield.stores.buckets_redis import RedisBucketStore

pytestmark = [pytest.mark.redis, pytest.mark.slow]


class Identity:
    def __init__(self, subject: str) -> None:
        self.subject = subject


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    """Three cluster-enabled masters on loopback, joined by redis-cli."""
    # The bus port is given explicitly: by default it is the client port
    # plus 10,000, which a free port above 55535 cannot have.
    masters = [
        RedisServer(
            [
                "--cluster-enabled", "yes",
                "--cluster-node-timeout", "2000",
                "--cluster-port", str(free_port()),
            ]
        )
        for _ in range(3)
    ]  # fmt: skip
    try:
        for server in masters:
            server.start()
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster", "create",
                *(f"127.0.0.1:{server.port}" for server in masters),
                "--cluster-replicas", "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        for server in masters:
            node = redis.Redis(port=server.port)
            while node.cluster("info")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the cluster never became ready"
                time.sleep(0.1)
        yield masters
    finally:
        for server in masters:
            server.cleanup()


def cluster_store(masters, prefix):
    client = redis_connections.connect(
        RedisSettings(mode="cluster", url=masters[0].url, timeout_ms=1000)
    )
    breaker = CircuitBreaker("ratelimit", failure_threshold=1000)
    return RedisBucketStore(client, prefix=prefix, breaker=breaker, deny_cache_size=0)


def test_mixed_policies_run_without_crossslot(cluster):
    store = cluster_store(cluster, "mixed")
    limits = [
        Limit("per-ip", "100000/minute", failure_mode="closed"),
        Limit("per-user", "100000/minute", key=["identity"], failure_mode="closed"),
        Limit("global", "1000000/minute", key=[], failure_mode="closed"),
    ]

    def ok(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    layer = RateLimitMiddleware(
        ok,
        limits=limits,
        default=[limit.id for limit in limits],
        store=store,
    )
    route = Route("orders", "/orders")
    counter = iter(range(10**6))

    def app(environ, start_response):
        n = next(counter)
        environ[context.ROUTE] = route
        environ["REMOTE_ADDR"] = f"10.{n % 7}.{n % 251}.{n % 13}"
        environ[context.IDENTITY] = Identity(f"user-{n % 97}")
        return layer(environ, start_response)

    client = Client(app)
    statuses = [client.get("/orders").status_code for _ in range(10_000)]
    assert statuses.count(200) == 10_000
    assert store.breaker.failures == 0


def test_per_client_keys_spread_over_masters(cluster):
    store = cluster_store(cluster, "spread")
    limit = Limit("per-ip", "10/minute")
    for n in range(300):
        ip = f"192.0.2.{n % 250}" if n < 250 else f"198.51.100.{n}"
        assert store.apply([limit], [f"per-ip|{ip}"], 1, ip).allowed
    counts = [len(redis.Redis(port=server.port).keys("spread:*")) for server in cluster]
    assert sum(counts) == 300
    assert all(count > 0 for count in counts)
