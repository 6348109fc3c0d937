"""The example Flask API, wrapped by ``Shield`` with ``app_example/shield.toml``.

Routes:

- ``GET /health``: liveness, with no database access;
- ``GET /items``, ``POST /items``, ``GET|PUT|DELETE /items/<id>``: items CRUD;
- ``GET /admin/stats``: the admin area, for the ``admin`` role;
- ``GET /whoami``: what the shield resolved for this request;
- ``POST /auth/login`` and ``POST /auth/refresh``: access and refresh tokens
  (see :mod:`app_example.tokens`).

Reads are open to anyone; writes need the ``items:write`` scope.

``EXAMPLE_SHIELD_POLICY`` names another policy file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from wsgishield import Shield, context
from wsgishield.auth import TokenError
from wsgishield.middleware import AuthMiddleware
from wsgishield.schemas import request_body

from .db import Database
from .schemas import ItemBody
from .tokens import TokenService

POLICY_PATH = Path(__file__).resolve().parent / "shield.toml"

PROBLEM_TYPE_BASE = "urn:wsgishield-example:problem:"
# Response-cache tag of every page of the item list.
ITEM_LISTS_TAG = "items-list"
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


def _item_fields(decoded: Any, payload: Any) -> tuple[str, int] | Any:
    """Return ``(name, price_cents)`` of an item body, or a problem response.

    With ``shield.toml`` the shield has already validated the body against
    :class:`ItemBody`; a policy without that schema falls back to checking
    the parsed JSON here.
    """
    if isinstance(decoded, ItemBody):
        return decoded.name, decoded.price_cents
    return _read_item(payload)


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


def _policy_with_keys(
    source: str | os.PathLike[str] | Mapping[str, Any], tokens: TokenService
) -> dict[str, Any]:
    """Load the policy and point its ``example`` issuer at the signing keys in use."""
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        with open(source, "rb") as handle:
            raw = tomllib.load(handle)
    issuers = raw.get("auth", {}).get("issuers", {})
    if "example" in issuers:
        issuers["example"] = {**issuers["example"], **tokens.policy_keys()}
    return raw


def _credentials(payload: Any, *names: str) -> tuple[str, ...] | None:
    """Return the string members ``names`` of a JSON object, or ``None``."""
    if not isinstance(payload, dict):
        return None
    values: list[str] = []
    for name in names:
        value = payload.get(name)
        if not isinstance(value, str):
            return None
        values.append(value)
    return tuple(values)


def purge_item_lists() -> None:
    """Drop the cached pages of ``GET /items`` after a write.

    The cache invalidates the written item's own URI by itself.
    """
    cache = request.environ.get(context.CACHE)
    if cache is not None:
        cache.purge(ITEM_LISTS_TAG)


def create_app(policy: str | os.PathLike[str] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    database = Database()
    tokens = TokenService()
    tokens.claim_once = database.claim_refresh_token

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
        identity = request.environ.get(context.IDENTITY)
        return {
            "client_ip": request.environ.get(context.CLIENT_IP),
            "peer": client.peer if client else None,
            "source": client.source if client else None,
            "reason": client.reason if client else None,
            "scheme": request.environ.get(context.SCHEME),
            "route": route.id if route else None,
            "subject": identity.subject if identity else None,
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
        items = database.list_items(limit, offset)
        # The tag lets writes purge every cached page of the list at once.
        return {"items": items}, 200, {"Surrogate-Key": ITEM_LISTS_TAG}

    def item_fields() -> tuple[str, int] | Any:
        decoded = request_body(request.environ)
        return _item_fields(decoded, None if decoded is not None else json_body())

    @app.post("/items")
    def create_item() -> Any:
        parsed = item_fields()
        if not isinstance(parsed, tuple):
            return parsed
        item = database.create_item(*parsed)
        purge_item_lists()
        return item, 201, {"Location": f"/items/{item['id']}"}

    @app.get(f"/items/<int(max={MAX_ITEM_ID}):item_id>")
    def get_item(item_id: int) -> Any:
        item = database.get_item(item_id)
        if item is None:
            return problem(404, "not-found", "Not Found", f"no item {item_id}")
        return item

    @app.put(f"/items/<int(max={MAX_ITEM_ID}):item_id>")
    def update_item(item_id: int) -> Any:
        parsed = item_fields()
        if not isinstance(parsed, tuple):
            return parsed
        item = database.update_item(item_id, *parsed)
        if item is None:
            return problem(404, "not-found", "Not Found", f"no item {item_id}")
        purge_item_lists()
        return item

    @app.delete(f"/items/<int(max={MAX_ITEM_ID}):item_id>")
    def delete_item(item_id: int) -> Any:
        if not database.delete_item(item_id):
            return problem(404, "not-found", "Not Found", f"no item {item_id}")
        purge_item_lists()
        return "", 204

    @app.post("/auth/login")
    def login() -> Any:
        credentials = _credentials(
            request.get_json(silent=True), "username", "password"
        )
        if credentials is None:
            return problem(
                400,
                "invalid-body",
                "Invalid request body",
                "expected a JSON object with username and password strings",
            )
        username, password = credentials
        if not tokens.check_password(username, password):
            response = problem(401, "invalid-credentials", "Invalid credentials")
            response.headers["WWW-Authenticate"] = 'Bearer realm="example-api"'
            return response
        # RFC 6749, section 5.1: responses carrying tokens must not be cached.
        return tokens.issue(username), 200, {"Cache-Control": "no-store"}

    @app.post("/auth/refresh")
    def refresh() -> Any:
        credentials = _credentials(request.get_json(silent=True), "refresh_token")
        if credentials is None:
            return problem(
                400,
                "invalid-body",
                "Invalid request body",
                "expected a JSON object with a refresh_token string",
            )
        try:
            pair = tokens.refresh(credentials[0])
        except TokenError as error:
            response = problem(401, "invalid-token", "Invalid token", error.description)
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="example-api", error="invalid_token"'
            )
            return response
        return pair, 200, {"Cache-Control": "no-store"}

    @app.get("/admin/stats")
    def admin_stats() -> Any:
        return {"items": database.count_items(), "pid": os.getpid()}

    policy_path = policy or os.environ.get("EXAMPLE_SHIELD_POLICY") or POLICY_PATH
    shield = Shield(app.wsgi_app, policy=_policy_with_keys(policy_path, tokens))
    auth = next(
        (layer for layer in shield.layers if isinstance(layer, AuthMiddleware)), None
    )
    if auth is not None and auth.revocation is not None:
        # Used refresh tokens go where the shield keeps revocations, which
        # every worker sees when that is Redis.
        tokens.use_revocation_store(auth.revocation)
    app.wsgi_app = shield  # type: ignore[method-assign]
    return app
