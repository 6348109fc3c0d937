"""The five failures seen with Flask-Caching's ``@cached``, replayed on a
real Flask app behind the shield's cache."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify, make_response, request
from werkzeug.test import Client

from wsgishield import Shield

POLICY = {
    "cache": {},
    "routes": [
        {"id": "items", "path": "/items", "cache": {"ttl": 60}},
        {"id": "status", "path": "/status", "cache": {"ttl": 60}},
        {"id": "welcome", "path": "/welcome", "cache": {"ttl": 60, "public": True}},
        {"id": "me", "path": "/me", "cache": {"ttl": 60}},
        {"id": "list", "path": "/list", "cache": {"ttl": 60}},
        {"id": "echo", "path": "/echo", "cache": {"ttl": 60}},
    ],
}


@pytest.fixture
def flask_app() -> tuple[Flask, dict[str, int]]:
    app = Flask(__name__)
    calls: dict[str, int] = {}

    def count(name: str) -> int:
        calls[name] = calls.get(name, 0) + 1
        return calls[name]

    @app.route("/items", methods=["GET", "POST"])
    def items() -> Any:
        count("items")
        return jsonify(method=request.method)

    @app.get("/status")
    def status() -> Any:
        if count("status") == 1:
            return jsonify(healthy=False), 503
        return jsonify(healthy=True)

    @app.get("/welcome")
    def welcome() -> Any:
        number = count("welcome")
        response = make_response(jsonify(visitor=number))
        response.set_cookie("session", f"visitor-{number}")
        return response

    @app.get("/me")
    def me() -> Any:
        count("me")
        return jsonify(token=request.headers.get("Authorization"))

    @app.get("/list")
    def listing() -> Any:
        count("list")
        return jsonify(page=request.args.get("page"))

    @app.get("/echo")
    def echo() -> Any:
        count("echo")
        return jsonify(host=request.headers.get("X-Forwarded-Host"))

    app.wsgi_app = Shield(app.wsgi_app, POLICY)  # type: ignore[method-assign]
    return app, calls


def client(app: Flask) -> Client:
    return Client(app, use_cookies=False)


def test_post_not_served_cached_get(flask_app: tuple[Flask, dict[str, int]]) -> None:
    app, calls = flask_app
    client(app).get("/items")

    posted = client(app).post("/items")

    assert posted.get_json() == {"method": "POST"}
    assert calls["items"] == 2


def test_503_not_replayed(flask_app: tuple[Flask, dict[str, int]]) -> None:
    app, _ = flask_app
    assert client(app).get("/status").status_code == 503

    recovered = client(app).get("/status")

    assert recovered.status_code == 200
    assert recovered.get_json() == {"healthy": True}


def test_set_cookie_not_shared(flask_app: tuple[Flask, dict[str, int]]) -> None:
    app, _ = flask_app
    first = client(app).get("/welcome")

    second = client(app).get("/welcome")

    assert "visitor-1" in first.headers["Set-Cookie"]
    assert "visitor-2" in second.headers["Set-Cookie"]
    assert second.get_json() == {"visitor": 2}


def test_authorization_body_not_shared(flask_app: tuple[Flask, dict[str, int]]) -> None:
    app, _ = flask_app
    client(app).get("/me", headers={"Authorization": "Bearer alice"})

    bob = client(app).get("/me", headers={"Authorization": "Bearer bob"})
    anonymous = client(app).get("/me")

    assert bob.get_json() == {"token": "Bearer bob"}
    assert anonymous.get_json() == {"token": None}


def test_query_string_not_ignored(flask_app: tuple[Flask, dict[str, int]]) -> None:
    app, calls = flask_app
    client(app).get("/list?page=1")

    second = client(app).get("/list?page=2")
    first_again = client(app).get("/list?page=1")

    assert second.get_json() == {"page": "2"}
    assert first_again.get_json() == {"page": "1"}
    assert calls["list"] == 2


def test_flask_header_echo_not_stored(flask_app: tuple[Flask, dict[str, int]]) -> None:
    app, _ = flask_app
    client(app).get("/echo", headers={"X-Forwarded-Host": "evil.example"})

    victim = client(app).get("/echo")

    assert victim.get_json() == {"host": None}
    assert "detail=unkeyed-header" in victim.headers["Cache-Status"]
