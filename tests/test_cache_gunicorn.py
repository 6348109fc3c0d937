from __future__ import annotations

import uuid

import pytest
import redis
import requests

from tests.support.servers import GunicornServer, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.gunicorn]


def test_workers_share_entries(shared_redis_server: RedisServer) -> None:
    prefix = "gunicorn" + uuid.uuid4().hex[:8]
    server = GunicornServer(
        "tests.support.cache_app:app",
        workers=2,
        env={
            "WSGISHIELD_REDIS_URL": shared_redis_server.url,
            "CACHE_TEST_PREFIX": prefix,
        },
    ).start()
    try:
        with requests.Session() as session:
            responses = [
                session.get(f"{server.url}/items", timeout=10) for _ in range(20)
            ]
            poisoned = session.get(
                f"{server.url}/echo",
                headers={"X-Forwarded-Host": "evil.example"},
                timeout=10,
            )
            victim = session.get(f"{server.url}/echo", timeout=10)
    finally:
        server.stop()

    with redis.Redis.from_url(shared_redis_server.url) as client:
        item_calls = int(client.get(f"{prefix}:calls:/items") or 0)
    assert {response.status_code for response in responses} == {200}
    assert item_calls == 1
    assert (
        sum("; hit" in response.headers["Cache-Status"] for response in responses) == 19
    )
    assert poisoned.json()["host"] == "evil.example"
    assert victim.json()["host"] is None
    assert "detail=unkeyed-header" in victim.headers["Cache-Status"]
