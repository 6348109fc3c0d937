"""A changed list file takes effect in every Gunicorn worker within a second."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from tests.support.servers import GunicornServer

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]


def get(server: GunicornServer, client: str) -> int:
    response = requests.get(server.url, headers={"X-Forwarded-For": client}, timeout=10)
    return response.status_code


def test_list_file_reload_reaches_every_worker(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("198.51.100.0/24\n")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[client]\ntrusted_proxies = ["loopback"]\n'
        f'[access]\ndeny_files = ["{deny}"]\nreload_interval = 1.0\n'
    )
    server = GunicornServer(
        "tests.apps.shielded_app:app",
        workers=3,
        env={"WSGISHIELD_TEST_POLICY": str(policy)},
    ).start()
    try:
        assert [get(server, "198.51.100.1") for _ in range(6)] == [403] * 6
        assert [get(server, "203.0.113.1") for _ in range(6)] == [200] * 6

        replacement = tmp_path / "deny.txt.new"
        replacement.write_text("# rotated feed\n203.0.113.0/24\nnot-a-network\n")
        os.replace(replacement, deny)
        changed_at = time.monotonic()

        # Each worker checks the file at most once a second and on the
        # request path, so every request a second later meets the new table.
        time.sleep(max(0.0, 1.0 - (time.monotonic() - changed_at)))
        assert [get(server, "203.0.113.1") for _ in range(12)] == [403] * 12
        assert [get(server, "198.51.100.1") for _ in range(12)] == [200] * 12
        assert f"{deny}:3" in server.log()
    finally:
        server.stop()
