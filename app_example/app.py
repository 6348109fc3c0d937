"""The example Flask API, wrapped by ``Shield`` with ``app_example/shield.toml``.

Routes:

- ``GET /health``: liveness, with no database access;
- ``GET /items``, ``POST /items``, ``GET|PUT|DELETE /items/<id>``: items CRUD;
- ``GET /admin/stats``: the admin area;
- ``GET /whoami``: what the shield resolved for this request.

``EXAMPLE_SHIELD_POLICY`` names another policy file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from wsgishield import Shield, context

from .db import Database

POLICY_PATH = Path(__file__).resolve().parent / "shield.toml"

PROBLEM_TYPE_BASE = "urn:wsgishield-example:problem:"
MAX_NAME_LENGTH = 200
# Item ids are SQL BIGINTs and offsets stay far below them.
MAX_ITEM_ID = 2**63 - 1
MAX_OFFSET = 10**9
# Werkzeug's own cap on request bodies, behind the shield's per-route limits.
MAX_CONTENT_LENGTH = 1024 * 1024


def problem(status: int, slug: str, title: str, detail: str | None = None) -> Any:
    """Return an RFC 9457 problem response, the same shape the shield sends."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def _read_item(payload: Any) -> tuple[str, int] | Any:
    """Validate an item body; return ``(name, price_cents)`` or a problem response."""
    if not isinstance(payload, dict):
        return problem(
            400, "invalid-body", "Invalid request body", "expected a JSON object"
        )
    name = payload.get("name")
    price = payload.get("price_cents")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        return problem(
            422, "invalid-item", "Invalid item", "$.name: expected 1 to 200 characters"
        )
    if not name.isprintable() or any("\ud800" <= char <= "\udfff" for char in name):
        # JSON escapes can produce lone surrogates, which UTF-8 cannot store.
        return problem(
            422, "invalid-item", "Invalid item", "$.name: invalid characters"
        )
    if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price <= 10**9:
        return problem(
            422,
            "invalid-item",
            "Invalid item",
            "$.price_cents: expected an integer 0 to 10^9",
        )
    return name, price


def create_app(policy: str | os.PathLike[str] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    database = Database()

    def json_body() -> Any:
        try:
            return request.get_json(silent=True)
        except RecursionError:
            # Python's json module recurses per nesting level.
            return None

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        status = error.code or 500
        return problem(
            status, str(error.name).lower().replace(" ", "-"), str(error.name)
        )

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/whoami")
    def whoami() -> Any:
        client = request.environ.get(context.CLIENT)
        route = request.environ.get(context.ROUTE)
        return {
            "client_ip": request.environ.get(context.CLIENT_IP),
            "peer": client.peer if client else None,
            "source": client.source if client else None,
            "reason": client.reason if client else None,
            "scheme": request.environ.get(context.SCHEME),
            "route": route.id if route else None,
        }

    @app.get("/items")
    def list_items() -> Any:
        limit = request.args.get("limit", 100, type=int)
        offset = request.args.get("offset", 0, type=int)
        if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_OFFSET:
            return problem(
                400,
                "invalid-query",
                "Invalid query",
                "limit is 1 to 1000, offset is 0 to 10^9",
            )
        return {"items": database.list_items(limit, offset)}

    @app.post("/items")
    def create_item() -> Any:
        parsed = _read_item(json_body())
        if not isinstance(parsed, tuple):
            return parsed
        item = database.create_item(*parsed)
        return item, 201, {"Location": f"/items/{item['id']}"}

    @app.get(f"/items/<int(max={MAX_ITEM_ID}):item_id>")
    def get_item(item_id: int) -> Any:
        item = database.get_item(item_id)
        if item is None:
            return problem(404, "not-found", "Not Found", f"no item {item_id}")
        return item

    @app.put(f"/items/<int(max={MAX_ITEM_ID}):item_id>")
    def update_item(item_id: int) -> Any:
        parsed = _read_item(json_body())
        if not isinstance(parsed, tuple):
            return parsed
        item = database.update_item(item_id, *parsed)
        if item is None:
            return problem(404, "not-found", "Not Found", f"no item {item_id}")
        return item

    @app.delete(f"/items/<int(max={MAX_ITEM_ID}):item_id>")
    def delete_item(item_id: int) -> Any:
        if not database.delete_item(item_id):
            return problem(404, "not-found", "Not Found", f"no item {item_id}")
        return "", 204

    @app.get("/admin/stats")
    def admin_stats() -> Any:
        return {"items": database.count_items(), "pid": os.getpid()}

    policy_path = policy or os.environ.get("EXAMPLE_SHIELD_POLICY") or POLICY_PATH
    app.wsgi_app = Shield(app.wsgi_app, policy=policy_path)  # type: ignore[method-assign]
    return app
