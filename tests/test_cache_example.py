"""The example API's cached read routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app_example.app import create_app


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("EXAMPLE_SQLITE_PATH", str(tmp_path / "items.db"))
    return create_app()


def test_item_read_cached_and_invalidated(example: Flask) -> None:
    client = example.test_client(use_cookies=False)
    item = client.post("/items", json={"name": "widget", "price_cents": 250}).get_json()
    url = f"/items/{item['id']}"

    first = client.get(url)
    second = client.get(url)
    client.put(url, json={"name": "gadget", "price_cents": 300})
    after_write = client.get(url)

    assert "fwd=miss; stored" in first.headers["Cache-Status"]
    assert second.headers["Cache-Status"].startswith("wsgishield; hit")
    assert after_write.get_json()["name"] == "gadget"


def test_item_lists_purged_on_write(example: Flask) -> None:
    client = example.test_client(use_cookies=False)
    client.post("/items", json={"name": "first", "price_cents": 1})
    page = client.get("/items?limit=10")
    assert (
        client.get("/items?limit=10")
        .headers["Cache-Status"]
        .startswith("wsgishield; hit")
    )

    client.post("/items", json={"name": "second", "price_cents": 2})
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
