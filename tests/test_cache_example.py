"""The example API's cached read routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app_example.app import create_app

DEMO_PASSWORD = "example-test-password"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("EXAMPLE_JWT_SECRET", raising=False)
    monkeypatch.setenv("EXAMPLE_SQLITE_PATH", str(tmp_path / "items.db"))
    monkeypatch.setenv("EXAMPLE_DEMO_PASSWORD", DEMO_PASSWORD)
    monkeypatch.setenv("EXAMPLE_JWT_KEY_FILE", str(tmp_path / "jwt.pem"))
    return create_app()


def writer_headers(app: Flask) -> dict[str, str]:
    """Log in as the demo admin; reads stay anonymous so they can be cached."""
    login = app.test_client().post(
        "/auth/login", json={"username": "admin", "password": DEMO_PASSWORD}
    )
    assert login.status_code == 200
    return {"Authorization": f"Bearer {login.get_json()['access_token']}"}


def test_item_read_cached_and_invalidated(example: Flask) -> None:
    client = example.test_client(use_cookies=False)
    auth = writer_headers(example)
    item = client.post(
        "/items", json={"name": "widget", "price_cents": 250}, headers=auth
    ).get_json()
    url = f"/items/{item['id']}"

    first = client.get(url)
    second = client.get(url)
    client.put(url, json={"name": "gadget", "price_cents": 300}, headers=auth)
    after_write = client.get(url)

    assert "fwd=miss; stored" in first.headers["Cache-Status"]
    assert second.headers["Cache-Status"].startswith("wsgishield; hit")
    assert after_write.get_json()["name"] == "gadget"


def test_item_lists_purged_on_write(example: Flask) -> None:
    client = example.test_client(use_cookies=False)
    auth = writer_headers(example)
    client.post("/items", json={"name": "first", "price_cents": 1}, headers=auth)
    page = client.get("/items?limit=10")
    assert (
        client.get("/items?limit=10")
        .headers["Cache-Status"]
        .startswith("wsgishield; hit")
    )

    client.post("/items", json={"name": "second", "price_cents": 2}, headers=auth)
    after_write = client.get("/items?limit=10")

    assert [entry["name"] for entry in page.get_json()["items"]] == ["first"]
    assert [entry["name"] for entry in after_write.get_json()["items"]] == [
        "first",
        "second",
    ]
    assert "Surrogate-Key" not in after_write.headers


def test_health_not_cached(example: Flask) -> None:
    response = example.test_client().get("/health")

    assert "Cache-Status" not in response.headers
