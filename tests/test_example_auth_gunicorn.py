"""The example API's login and admin rule under real Gunicorn workers."""

from __future__ import annotations

import socket
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


def raw_status(port: int, head: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    return int(response.split(b" ", 2)[1])


@pytest.mark.gunicorn
def test_hostile_authorization_headers(tmp_path: Path) -> None:
    env = {
        "EXAMPLE_SQLITE_PATH": str(tmp_path / "items.db"),
        "DATABASE_URL": "",
        "EXAMPLE_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
        "EXAMPLE_JWT_SECRET": "",
    }
    server = GunicornServer(
        "app_example.wsgi:app",
        config=str(REPOSITORY / "deploy" / "gunicorn.conf.py"),
        workers=1,
        env=env,
    ).start()
    cases = {
        b"Authorization: Bearer a.b.c\r\nAuthorization: Bearer d.e.f\r\n": {400},
        b"Authorization: Bearer \xff\xfe.x.y\r\n": {400},
        b"Authorization: Bearer " + b"A" * 8000 + b"\r\n": {401, 431},
        b"Authorization: bearer eyJhbGciOiJub25lIn0.e30.\r\n": {401},
        b"Authorization: Bearer eyJhbGciOiJub25lIn0.e30.c2ln\r\n": {401},
        b"Authorization: Basic YTpi\r\n": {401},
    }
    try:
        for header, expected in cases.items():
            head = (
                b"GET /admin/stats HTTP/1.1\r\nHost: localhost\r\n"
                + header
                + b"Connection: close\r\n\r\n"
            )
            assert raw_status(server.port, head) in expected, header[:40]
    finally:
        server.stop()
