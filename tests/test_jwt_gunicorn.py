from __future__ import annotations

import time

import pytest
import requests

from tests.support.servers import GunicornServer, RedisServer
from tests.support.tokens import SECRET, SECRET_VARIABLE, claims, hs256
from wsgishield.auth import RedisRevocationStore
from wsgishield.policy import RedisSettings


@pytest.mark.redis
@pytest.mark.gunicorn
@pytest.mark.slow
def test_revocation_reaches_every_worker(redis_server: RedisServer) -> None:
    server = GunicornServer(
        "tests.support.auth_app:application",
        workers=2,
        env={SECRET_VARIABLE: SECRET, "WSGISHIELD_REDIS_URL": redis_server.url},
    ).start()
    try:
        token = hs256(claims(jti="shared-token"))
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(20):
            response = requests.get(f"{server.url}/x", headers=headers, timeout=5)
            assert response.status_code == 200

        store = RedisRevocationStore(
            RedisSettings(url=redis_server.url, key_prefix="authtest", timeout_ms=500)
        )
        store.revoke_token("shared-token", time.time() + 600)
        time.sleep(1.2)

        statuses = {
            requests.get(f"{server.url}/x", headers=headers, timeout=5).status_code
            for _ in range(20)
        }
        assert statuses == {401}
    finally:
        server.stop()
