"""The example API's login and admin rule under real Gunicorn workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.servers import REPOSITORY, GunicornServer

PASSWORD = "correct horse battery staple"


@pytest.mark.gunicorn
def test_login_and_admin_through_gunicorn(tmp_path: Path) -> None:
    env = {
        "EXAMPLE_SQLITE_PATH": str(tmp_path / "items.db"),
        "DATABASE_URL": "",
        "EXAMPLE_DEMO_PASSWORD": PASSWORD,
        "EXAMPLE_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
        "EXAMPLE_JWT_SECRET": "",
    }
    server = GunicornServer(
        "app_example.wsgi:app",
        config=str(REPOSITORY / "deploy" / "gunicorn.conf.py"),
        workers=2,
        env=env,
    ).start()
    try:
        session = requests.Session()
        login = session.post(
            f"{server.url}/auth/login",
            json={"username": "admin", "password": PASSWORD},
            timeout=10,
        )
        assert login.status_code == 200
        assert login.headers["Cache-Control"] == "no-store"
        access = login.json()["access_token"]
        # Both workers must accept the token, so they share one key file.
        for _ in range(10):
            response = session.get(
                f"{server.url}/admin/stats",
                headers={"Authorization": f"Bearer {access}"},
                timeout=10,
            )
            assert response.status_code == 200
        assert session.get(f"{server.url}/admin/stats", timeout=10).status_code == 401
    finally:
        server.stop()
