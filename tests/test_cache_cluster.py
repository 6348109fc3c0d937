"""The Redis store on a real three-node Redis Cluster.

Entry keys carry their own hash tag, so a hit, a fill and a lease touch one
slot each, while a purge deletes entries spread over many slots.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache_helpers import CountingApp, FakeClock, build, json_body
from tests.support.servers import RedisServer, free_port
from tests.support.wsgi import call, make_environ
from wsgishield.cache.redis import RedisStore

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait_until_ok(nodes: list[RedisServer]) -> None:
    """Wait until every node reports ``cluster_state:ok``."""
    import redis

    deadline = time.monotonic() + 30
    for node in nodes:
        with redis.Redis(port=node.port) as client:
            while client.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise TimeoutError("the cluster did not reach state ok in 30 s")
                time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is not installed (Debian package redis-tools)")
    nodes = [
        RedisServer(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
        for _ in range(3)
    ]
    try:
        for node in nodes:
            node.port = _cluster_port()
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait_until_ok(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


@pytest.fixture
def cluster_store(cluster: list[RedisServer]) -> Iterator[RedisStore]:
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(cluster[0].url.rsplit("/", 1)[0])
    try:
        yield RedisStore(client, prefix="c" + uuid.uuid4().hex[:8])
    finally:
        client.close()


def numbered(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    tags = [("Surrogate-Key", "catalog")]
    return "200 OK", tags, json_body(call=environ["test.call_number"])


def test_cluster_hit_fill_and_purge(cluster_store: RedisStore) -> None:
    paths = [f"/p{number}" for number in range(20)]
    app = CountingApp(dict.fromkeys(paths, numbered))
    rules: dict[str, dict[str, Any] | None] = {path: {"ttl": 60} for path in paths}
    cache = build(app, rules, cluster_store, FakeClock())

    for path in paths:
        call(cache, path)
    hits = [call(cache, path) for path in paths]
    slots = set()
    for path in paths:
        environ = make_environ("GET", path)
        target = cache.keys.target(environ, "http")
        assert target is not None
        key = cache.keys.primary(target, (), environ, None)
        slots.add(cluster_store.client.keyslot(cluster_store._entry_key(key)))
    purged = cache.purge("catalog")
    after = [call(cache, path) for path in paths]

    assert all("; hit" in (response.header("Cache-Status") or "") for response in hits)
    assert len(slots) > 1
    assert purged == len(paths)
    assert all(response.body == json_body(call=2) for response in after)


def test_cluster_lease_and_invalidation(cluster_store: RedisStore) -> None:
    token = cluster_store.acquire_lease("k", 5000)
    assert token is not None
    assert cluster_store.acquire_lease("k", 5000) is None
    cluster_store.release_lease("k", token)
    assert cluster_store.acquire_lease("k", 5000) is not None

    app = CountingApp({"/orders": numbered})
    cache = build(app, {"/orders": {"ttl": 60}}, cluster_store, FakeClock())
    call(cache, "/orders")
    call(cache, "/orders", method="POST")
    assert call(cache, "/orders").body == json_body(call=3)
