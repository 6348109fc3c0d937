from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.cache_helpers import CountingApp, FakeClock, build, json_body
from tests.support.servers import RedisServer
from tests.support.wsgi import call
from wsgishield.cache.entry import Entry, VaryMarker, decode, encode
from wsgishield.cache.memory import ENTRY_OVERHEAD, MemoryStore
from wsgishield.cache.redis import RedisStore
from wsgishield.errors import StoreError


def entry(body: bytes = b"x", ttl: float = 60, stored_at: float = 0.0) -> Entry:
    return Entry("200 OK", [("Content-Type", "text/plain")], body, stored_at, ttl)


# -- memory --------------------------------------------------------------------


def test_memory_bounded_by_bytes() -> None:
    store = MemoryStore(10 * (ENTRY_OVERHEAD + 1100))
    for number in range(50):
        store.set(f"k{number}", entry(b"x" * 1000), 60)

    assert store.size <= store.max_bytes
    assert len(store) < 50
    assert store.get("k49") is not None
    assert store.get("k0") is None


def test_memory_evicts_least_recently_used() -> None:
    size = ENTRY_OVERHEAD + 2 + 1000 + len("Content-Type") + len("text/plain")
    store = MemoryStore(3 * size)
    for key in ("k1", "k2", "k3"):
        store.set(key, entry(b"x" * 1000), 60)
    store.get("k1")
    store.set("k4", entry(b"x" * 1000), 60)

    assert store.get("k1") is not None
    assert store.get("k2") is None


def test_memory_expires_lazily() -> None:
    clock = FakeClock()
    store = MemoryStore(1 << 20, clock=clock)
    store.set("k", entry(), 10, ["t"])
    clock.advance(11)

    assert store.get("k") is None
    assert len(store) == 0
    assert store.size == 0


def test_memory_oversize_value_ignored() -> None:
    store = MemoryStore(2048)
    store.set("k", entry(b"x" * 4096), 60)

    assert store.get("k") is None


def test_memory_replace_keeps_size_right() -> None:
    store = MemoryStore(1 << 20)
    store.set("k", entry(b"x" * 100), 60, ["a"])
    store.set("k", entry(b"y" * 10), 60, ["b"])

    assert store.purge_tags(["a"]) == 0
    assert store.purge_tags(["b"]) == 1
    assert store.size == 0


def test_entry_round_trip() -> None:
    original = entry(b"\x00\xff body")
    assert decode(encode(original)) == original
    assert decode(encode(VaryMarker(["accept"]))) == VaryMarker(["accept"])


# -- redis ---------------------------------------------------------------------


@pytest.fixture
def connect() -> Iterator[Callable[..., redis.Redis]]:
    """Build Redis clients that are closed when the test ends."""
    clients: list[redis.Redis] = []

    def factory(url: str, **options: Any) -> redis.Redis:
        client = redis.Redis.from_url(url, **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def redis_store(
    shared_redis_server: RedisServer, connect: Callable[..., redis.Redis]
) -> RedisStore:
    return RedisStore(
        connect(shared_redis_server.url), prefix="s" + uuid.uuid4().hex[:8]
    )


@pytest.mark.redis
def test_redis_every_key_has_ttl(redis_store: RedisStore) -> None:
    redis_store.set("k1", entry(), 30, ["a", "b"])
    redis_store.set("k2", VaryMarker(["accept"]), 5, ["a"])
    token = redis_store.acquire_lease("k3", 2000)
    assert token is not None

    client = redis_store.client
    keys = list(client.scan_iter(f"{redis_store.prefix}:*"))
    assert len(keys) == 5
    for key in keys:
        assert client.pttl(key) > 0, key


@pytest.mark.redis
def test_redis_tag_ttl_only_grows(redis_store: RedisStore) -> None:
    redis_store.set("long", entry(), 300, ["shared"])
    redis_store.set("short", entry(), 5, ["shared"])

    tag_key = redis_store._tag_key("shared")
    assert redis_store.client.pttl(tag_key) > 200_000


@pytest.mark.redis
def test_redis_lease_exclusive(redis_store: RedisStore) -> None:
    token = redis_store.acquire_lease("k", 5000)

    assert token is not None
    assert redis_store.acquire_lease("k", 5000) is None
    redis_store.release_lease("k", "not-the-token")
    assert redis_store.acquire_lease("k", 5000) is None
    redis_store.release_lease("k", token)
    assert redis_store.acquire_lease("k", 5000) is not None


@pytest.mark.redis
def test_redis_release_after_script_flush(redis_store: RedisStore) -> None:
    token = redis_store.acquire_lease("k", 5000)
    assert token is not None
    redis_store.client.script_flush()

    redis_store.release_lease("k", token)

    assert redis_store.acquire_lease("k", 5000) is not None


@pytest.mark.redis
def test_redis_garbage_value_is_miss(redis_store: RedisStore) -> None:
    redis_store.client.set(redis_store._entry_key("k"), b"\xc1not msgpack", px=5000)

    assert redis_store.get("k") is None


@pytest.mark.redis
def test_redis_local_tier_serves_without_round_trip(
    shared_redis_server: RedisServer, connect: Callable[..., redis.Redis]
) -> None:
    client = connect(shared_redis_server.url)
    store = RedisStore(
        client,
        prefix="l" + uuid.uuid4().hex[:8],
        local=MemoryStore(1 << 20),
        local_ttl=5,
    )
    store.set("k", entry(), 60)
    client.delete(store._entry_key("k"))

    assert store.get("k") is not None
    store.purge_tags([])
    store.delete("k")
    assert store.get("k") is None


@pytest.mark.redis
def test_redis_down_raises_store_error(
    redis_server: RedisServer, connect: Callable[..., redis.Redis]
) -> None:
    client = connect(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    store = RedisStore(client, prefix="down")
    redis_server.stop()

    with pytest.raises(StoreError):
        store.get("k")


@pytest.mark.redis
def test_cache_bypasses_dead_redis(
    redis_server: RedisServer, connect: Callable[..., redis.Redis]
) -> None:
    client = connect(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    app = CountingApp(
        {"/q": lambda e: ("200 OK", [], json_body(call=e["test.call_number"]))}
    )
    cache = build(
        app, {"/q": {"ttl": 60}}, RedisStore(client, prefix="down"), FakeClock()
    )
    call(cache, "/q")
    redis_server.stop()

    down = call(cache, "/q")
    still_down = call(cache, "/q")
    posted = call(cache, "/q", method="POST")

    assert down.status_code == 200
    assert "detail=store-unavailable" in (down.header("Cache-Status") or "")
    assert still_down.status_code == 200
    assert posted.status_code == 200


@pytest.mark.redis
def test_cache_paused_redis_times_out(
    redis_server: RedisServer, connect: Callable[..., redis.Redis]
) -> None:
    client = connect(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    app = CountingApp({"/q": lambda e: ("200 OK", [], b"x")})
    cache = build(
        app, {"/q": {"ttl": 60}}, RedisStore(client, prefix="paused"), FakeClock()
    )
    redis_server.pause()
    try:
        response = call(cache, "/q")
    finally:
        redis_server.resume()

    assert response.status_code == 200
