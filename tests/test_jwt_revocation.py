from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.servers import RedisServer
from wsgishield.auth import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
)
from wsgishield.errors import StoreError
from wsgishield.policy import RedisSettings


def redis_store(server: RedisServer, **options: Any) -> RedisRevocationStore:
    settings = RedisSettings(url=server.url, timeout_ms=200, key_prefix="test")
    return RedisRevocationStore(settings, sync_interval=1.0, **options)


def test_memory_token_revocation() -> None:
    store = MemoryRevocationStore()
    now = time.time()
    store.revoke_token("t1", now + 60)
    assert store.is_revoked("t1", "user", now, now)
    assert not store.is_revoked("t2", "user", now, now)


def test_memory_subject_cutoff() -> None:
    store = MemoryRevocationStore()
    now = time.time()
    store.revoke_subject("user", before=now)
    assert store.is_revoked(None, "user", now - 1, now)
    assert not store.is_revoked(None, "user", now + 1, now)
    assert store.is_revoked(None, "user", None, now)
    assert not store.is_revoked(None, "other", now - 1, now)


def test_memory_store_is_bounded() -> None:
    store = MemoryRevocationStore(max_entries=10)
    now = time.time()
    for index in range(10):
        store.revoke_token(f"old-{index}", now + 0.01)
    time.sleep(0.02)
    store.revoke_token("new", now + 60)
    assert len(store.token_ids) == 1


def test_expired_token_not_stored() -> None:
    store = MemoryRevocationStore()
    store.revoke_token("gone", time.time() - 1)
    assert store.token_ids == {}


@pytest.mark.redis
def test_redis_revocation_seen_by_other_worker(redis_server: RedisServer) -> None:
    first = redis_store(redis_server)
    second = redis_store(redis_server)
    now = time.time()
    assert not second.is_revoked("t1", "user", now, now)

    first.revoke_token("t1", now + 300)
    first.revoke_subject("user-2", before=now)
    # Within the sync interval the second worker uses its snapshot ...
    assert not second.is_revoked("t1", "user", now, now + 0.5)
    # ... and after it, the shared list.
    later = now + 1.0
    assert second.is_revoked("t1", "user", now, later)
    assert second.is_revoked(None, "user-2", now - 5, later)
    assert not second.is_revoked(None, "user-2", now + 5, later)


@pytest.mark.redis
def test_redis_keys_have_ttl(redis_server: RedisServer) -> None:
    store = redis_store(redis_server, retention=600)
    store.revoke_token("t1", time.time() + 300)
    store.revoke_subject("user", before=time.time())
    client = store.client
    keys = client.keys("test:*")
    assert sorted(key.decode() for key in keys) == sorted(store.keys)
    for key in keys:
        assert client.ttl(key) > 0


@pytest.mark.redis
def test_redis_keys_use_hash_tag(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    assert all("{revocation}" in key for key in store.keys)


@pytest.mark.redis
def test_redis_script_reloaded_after_flush(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    store.revoke_token("t1", time.time() + 60)
    store.client.script_flush()
    store.revoke_token("t2", time.time() + 60)
    assert store.client.zscore(store.keys[0], "t2") is not None


@pytest.mark.redis
def test_redis_down_keeps_snapshot(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    now = time.time()
    store.revoke_token("t1", now + 300)
    assert store.is_revoked("t1", "user", now, now + 1)

    redis_server.stop()
    assert store.is_revoked("t1", "user", now, now + 2)
    with pytest.raises(StoreError):
        store.revoke_token("t2", now + 300)


@pytest.mark.redis
def test_redis_expired_entries_pruned(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    store.revoke_token("short", time.time() + 1)
    time.sleep(1.2)
    store.revoke_token("long", time.time() + 300)
    members = store.client.zrange(store.keys[0], 0, -1)
    assert members == [b"long"]


def test_store_interface() -> None:
    with pytest.raises(NotImplementedError):
        RevocationStore().revoke_token("t", 0)
