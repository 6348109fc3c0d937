"""The example API on SQLite (default) and on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app_example.app import create_app


@pytest.fixture
def sqlite_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("EXAMPLE_SQLITE_PATH", str(tmp_path / "items.db"))
    return create_app()


def exercise_crud(app: Flask) -> None:
    client = app.test_client()

    created = client.post("/items", json={"name": "widget", "price_cents": 250})
    assert created.status_code == 201
    item = created.get_json()
    assert created.headers["Location"] == f"/items/{item['id']}"

    assert client.get(f"/items/{item['id']}").get_json()["name"] == "widget"
    updated = client.put(
        f"/items/{item['id']}", json={"name": "gadget", "price_cents": 300}
    )
    assert updated.get_json()["price_cents"] == 300
    assert [entry["name"] for entry in client.get("/items").get_json()["items"]] == [
        "gadget"
    ]
    assert client.get("/admin/stats").get_json()["items"] == 1

    assert client.delete(f"/items/{item['id']}").status_code == 204
    missing = client.get(f"/items/{item['id']}")
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"


def test_crud_on_sqlite(sqlite_app: Flask) -> None:
    exercise_crud(sqlite_app)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "price_cents": 1},
        {"name": "x" * 201, "price_cents": 1},
        {"name": "x", "price_cents": -1},
        {"name": "x", "price_cents": True},
        {"name": "x", "price_cents": "5"},
        ["not", "an", "object"],
    ],
    ids=[
        "empty-name",
        "long-name",
        "negative-price",
        "bool-price",
        "string-price",
        "array",
    ],
)
def test_invalid_items_rejected(sqlite_app: Flask, body: object) -> None:
    response = sqlite_app.test_client().post("/items", json=body)
    assert response.status_code in (400, 422)
    assert response.content_type == "application/problem+json"


def test_not_json_rejected(sqlite_app: Flask) -> None:
    response = sqlite_app.test_client().post(
        "/items", data=b"{", content_type="application/json"
    )
    assert response.status_code == 400


def test_health(sqlite_app: Flask) -> None:
    assert sqlite_app.test_client().get("/health").get_json() == {"status": "ok"}


POSTGRES_ADMIN_URL = os.environ.get(
    "EXAMPLE_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"wsgishield_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_crud_on_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    exercise_crud(create_app())


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "/items?offset=99999999999999999999", None, 400),
        ("GET", "/items/9223372036854775808", None, 404),
        ("PUT", "/items/9223372036854775808", b'{"name": "a", "price_cents": 1}', 405),
        # Werkzeug checks the method before the converter's range, so an id
        # out of range answers 405 to PUT and DELETE, and 404 to GET.
        ("DELETE", "/items/9223372036854775808", None, 405),
        ("POST", "/items", b'{"name": "\\ud800", "price_cents": 1}', 422),
        ("POST", "/items", b"[" * 100_000 + b"]" * 100_000, 400),
        ("POST", "/items", b" " * (2 * 1024 * 1024), 413),
    ],
    ids=[
        "huge-offset",
        "huge-id-get",
        "huge-id-put",
        "huge-id-delete",
        "lone-surrogate",
        "nesting-bomb",
        "oversized",
    ],
)
def test_hostile_requests_never_500(
    sqlite_app: Flask, method: str, path: str, body: bytes | None, expected: int
) -> None:
    response = sqlite_app.test_client().open(
        path, method=method, data=body, content_type="application/json"
    )
    assert response.status_code == expected
