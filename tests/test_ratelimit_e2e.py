"""End to end: the example API with rate limits under real Gunicorn workers."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import requests

from tests.support.servers import REPOSITORY, GunicornServer
from wsgishield.stores.buckets_shm import remove_tables, table_path

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]

CONFIG = str(REPOSITORY / "deploy" / "gunicorn.conf.py")

POLICY = """
[client]
trusted_proxies = ["loopback"]

[limits]
default = ["per-ip"]
exempt_paths = ["/health"]

[limits.policies.per-ip]
rate = "3/minute"

[limits.policies.writes]
rate = "1/minute"
key = ["ip", "route"]

[[routes]]
id = "health"
path = "/health"
methods = ["GET"]

[[routes]]
id = "items.read"
path = "/items/**"
methods = ["GET"]

[[routes]]
id = "items.write"
path = "/items/**"
methods = ["POST", "PUT", "DELETE"]
limits = ["per-ip", "writes"]
"""


def test_example_api_limits_across_workers(tmp_path: Path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {
        "EXAMPLE_SQLITE_PATH": str(tmp_path / "items.db"),
        "DATABASE_URL": "",
        "EXAMPLE_SHIELD_POLICY": str(policy),
    }
    server = GunicornServer("app_example.wsgi:app", config=CONFIG, workers=3, env=env)
    server.start()
    assert server.process is not None
    arbiter = server.process.pid
    try:

        def get(path: str, client: str) -> requests.Response:
            # A fresh connection per request, so the workers take turns.
            return requests.get(
                server.url + path,
                headers={"X-Forwarded-For": client, "Connection": "close"},
                timeout=10,
            )

        for _ in range(5):
            assert get("/health", "203.0.113.1").status_code == 200

        statuses = [get("/items", "203.0.113.1").status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert get("/items", "203.0.113.2").status_code == 200

        denied = get("/items", "203.0.113.1")
        assert denied.headers["Content-Type"] == "application/problem+json"
        assert 1 <= int(denied.headers["Retry-After"]) <= 20
        assert denied.headers["RateLimit"].startswith('"per-ip";r=0;')
        assert denied.json()["status"] == 429

        write = requests.post(
            server.url + "/items",
            json={"name": "pen", "quantity": 1},
            headers={"X-Forwarded-For": "203.0.113.3", "Connection": "close"},
            timeout=10,
        )
        assert write.status_code != 429
        again = requests.post(
            server.url + "/items",
            json={"name": "pen", "quantity": 1},
            headers={"X-Forwarded-For": "203.0.113.3", "Connection": "close"},
            timeout=10,
        )
        assert again.status_code == 429
        assert '"writes";r=0' in again.headers["RateLimit"]
    finally:
        server.stop()
    assert not glob.glob(table_path(arbiter, 1 << 18))
    remove_tables(arbiter)
