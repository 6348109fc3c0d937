"""Bans shared through one real redis-server by two Gunicorn instances."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import GunicornServer, RedisServer

pytestmark = [pytest.mark.gunicorn, pytest.mark.redis, pytest.mark.slow]

POLICY = """
[client]
trusted_proxies = ["loopback"]

[redis]
timeout_ms = 500
key_prefix = "gunicorn-bans"

[bans]
store = "redis"
threshold = 5
sync_interval = 0.5
"""


@pytest.fixture
def instances(
    tmp_path: Path, shared_redis_server: RedisServer
) -> Iterator[tuple[GunicornServer, GunicornServer]]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {
        "WSGISHIELD_TEST_POLICY": str(policy),
        "WSGISHIELD_REDIS_URL": shared_redis_server.url,
    }
    servers = [
        GunicornServer("tests.apps.shielded_app:app", workers=2, env=env)
        for _ in range(2)
    ]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def get(server: GunicornServer, client: str, path: str = "/") -> int:
    response = requests.get(
        server.url + path, headers={"X-Forwarded-For": client}, timeout=10
    )
    return response.status_code


def test_ban_through_one_seen_by_other(
    instances: tuple[GunicornServer, GunicornServer],
) -> None:
    first, second = instances
    attacker = "203.0.113.66"
    bystander = "203.0.113.67"
    # Both instances serve the attacker and poll the ban index before the ban.
    assert get(first, attacker) == 200
    assert get(second, attacker) == 200

    statuses = [get(first, attacker, "/login") for _ in range(5)]
    banned_at = time.monotonic()
    assert statuses == [401] * 5

    # Every process polls new bans at most 0.5 s apart and on the request
    # path, so any request a second after the ban meets it, in every worker.
    observed = None
    while time.monotonic() - banned_at < 5:
        if get(second, attacker) == 403:
            observed = time.monotonic() - banned_at
            break
        time.sleep(0.05)
    assert observed is not None
    time.sleep(max(0.0, 1.0 - (time.monotonic() - banned_at)))
    assert [get(second, attacker) for _ in range(8)] == [403] * 8
    # The other worker of the first instance learns the ban the same way.
    assert [get(first, attacker) for _ in range(8)] == [403] * 8
    assert get(second, bystander) == 200
    assert get(first, bystander) == 200
