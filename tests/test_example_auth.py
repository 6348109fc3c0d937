"""The example API's login, refresh and role rules, through the shield."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app_example.app import create_app

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["EdDSA", "HS256"])
def app(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Flask:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("EXAMPLE_SQLITE_PATH", str(tmp_path / "items.db"))
    monkeypatch.setenv("EXAMPLE_DEMO_PASSWORD", PASSWORD)
    monkeypatch.setenv("EXAMPLE_JWT_KEY_FILE", str(tmp_path / "jwt.pem"))
    if request.param == "HS256":
        monkeypatch.setenv("EXAMPLE_JWT_SECRET", "h" * 48)
    else:
        monkeypatch.delenv("EXAMPLE_JWT_SECRET", raising=False)
    return create_app()


def login(client: FlaskClient, username: str) -> dict[str, Any]:
    response = client.post(
        "/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_issues_token_pair(app: Flask) -> None:
    tokens = login(app.test_client(), "alice")
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] > 0
    assert tokens["access_token"] != tokens["refresh_token"]


@pytest.mark.parametrize(
    "body",
    [{"username": "alice", "password": "wrong"}, {"username": "mallory", "password": PASSWORD},
     {"username": "alice"}, ["alice", PASSWORD], None],
    ids=["wrong-password", "unknown-user", "no-password", "list", "no-body"],
)  # fmt: skip
def test_login_rejects_bad_credentials(app: Flask, body: Any) -> None:
    response = app.test_client().post("/auth/login", json=body)
    assert response.status_code in (400, 401)
    assert response.content_type == "application/problem+json"


def test_login_disabled_without_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_SQLITE_PATH", str(tmp_path / "items.db"))
    monkeypatch.setenv("EXAMPLE_JWT_KEY_FILE", str(tmp_path / "jwt.pem"))
    monkeypatch.delenv("EXAMPLE_DEMO_PASSWORD", raising=False)
    monkeypatch.delenv("EXAMPLE_JWT_SECRET", raising=False)
    client = create_app().test_client()
    response = client.post("/auth/login", json={"username": "alice", "password": ""})
    assert response.status_code == 401


def test_write_needs_token(app: Flask) -> None:
    client = app.test_client()
    anonymous = client.post("/items", json={"name": "a", "price_cents": 1})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="example-api"'
    tokens = login(client, "alice")
    created = client.post(
        "/items",
        json={"name": "a", "price_cents": 1},
        headers=bearer(tokens["access_token"]),
    )
    assert created.status_code == 201


def test_reads_are_open(app: Flask) -> None:
    assert app.test_client().get("/items").status_code == 200


def test_admin_needs_admin_role(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/admin/stats").status_code == 401
    alice = login(client, "alice")
    forbidden = client.get("/admin/stats", headers=bearer(alice["access_token"]))
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
    admin = login(client, "admin")
    assert (
        client.get("/admin/stats", headers=bearer(admin["access_token"])).status_code
        == 200
    )


def test_refresh_token_refused_on_resources(app: Flask) -> None:
    client = app.test_client()
    tokens = login(client, "admin")
    response = client.get("/admin/stats", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_refresh_rotates_and_blocks_reuse(app: Flask) -> None:
    client = app.test_client()
    tokens = login(client, "alice")
    refreshed = client.post(
        "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    fresh = refreshed.get_json()
    assert fresh["access_token"] != tokens["access_token"]
    reused = client.post(
        "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert reused.status_code == 401


def test_access_token_refused_on_refresh(app: Flask) -> None:
    client = app.test_client()
    tokens = login(client, "alice")
    response = client.post(
        "/auth/refresh", json={"refresh_token": tokens["access_token"]}
    )
    assert response.status_code == 401


def test_whoami_shows_subject(app: Flask) -> None:
    client = app.test_client()
    tokens = login(client, "alice")
    assert (
        client.get("/whoami", headers=bearer(tokens["access_token"])).get_json()[
            "subject"
        ]
        == "alice"
    )
    assert client.get("/whoami").get_json()["subject"] is None


def test_key_generated_once(app: Flask, tmp_path: Path) -> None:
    key = tmp_path / "jwt.pem"
    if key.exists():
        assert key.stat().st_mode & 0o777 == 0o600


def test_refresh_reuse_blocked_across_workers(app: Flask) -> None:
    """A second app on the same database stands in for another Gunicorn
    worker, whose in-memory revocation store knows nothing of the first use."""
    other_worker = create_app()
    tokens = login(app.test_client(), "alice")
    body = {"refresh_token": tokens["refresh_token"]}

    first = app.test_client().post("/auth/refresh", json=body)
    second = other_worker.test_client().post("/auth/refresh", json=body)

    assert first.status_code == 200
    assert second.status_code == 401


def test_login_lone_surrogate_password(app: Flask) -> None:
    response = app.test_client().post(
        "/auth/login",
        data=b'{"username": "alice", "password": "\\ud800"}',
        content_type="application/json",
    )
    assert response.status_code == 401
