from __future__ import annotations

from typing import Any

import flask
import pytest

from tests.support.tokens import ISSUER, SECRET, SECRET_VARIABLE, claims, hs256
from tests.support.wsgi import call
from wsgishield import context
from wsgishield.errors import ConfigurationError
from wsgishield.flask import install, public, require
from wsgishield.policy import RouteAuth


def policy(**auth: Any) -> dict[str, Any]:
    return {
        "auth": {
            "issuers": {
                "main": {
                    "issuer": ISSUER,
                    "algorithms": ["HS256"],
                    "keys": [{"secret_env": SECRET_VARIABLE}],
                }
            },
            **auth,
        }
    }


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)


def make_app(**auth: Any) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/admin/users")
    @require(roles_any=["admin"])
    def admin_users() -> str:
        return "users"

    @app.get("/admin/")
    @require(roles_any=["admin"])
    def admin_home() -> str:
        return "home"

    @app.get("/health")
    @public
    def health() -> str:
        return "ok"

    @app.get("/me")
    @require()
    def me() -> dict[str, Any]:
        identity = flask.request.environ[context.IDENTITY]
        return {"subject": identity.subject}

    @app.get("/reports/<int:number>")
    def report(number: int) -> str:
        return str(number)

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    install(app, policy(**auth), endpoints={"report": RouteAuth(scopes=["reports"])})
    return app


def token(**overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256(claims(**overrides))}"}


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users",
        "//admin/users",
        "/admin//users",
        "/x/../admin/users",
        "/admin/./users",
    ],
)
def test_endpoint_rule_follows_url_map(path: str) -> None:
    # The raw environ, because the test client reads "//admin" as a host.
    app = make_app()
    assert call(app, path).status_code == 401
    assert call(app, path, headers=token()).status_code == 403


def test_endpoint_rule_passes_with_role() -> None:
    client = make_app().test_client()
    assert client.get("/admin/users", headers=token(roles=["admin"])).status_code == 200


def test_redirect_target_rule_applies() -> None:
    client = make_app().test_client()
    assert client.get("/admin").status_code == 401


def test_identity_in_view() -> None:
    client = make_app().test_client()
    response = client.get("/me", headers=token())
    assert response.get_json() == {"subject": "user-1"}


def test_pattern_rule_for_endpoint() -> None:
    client = make_app().test_client()
    assert client.get("/reports/3", headers=token()).status_code == 403
    assert client.get("/reports/3", headers=token(scope="reports")).status_code == 200


def test_public_and_unruled_views() -> None:
    client = make_app().test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/plain").status_code == 200


def test_deny_uncovered_with_endpoints() -> None:
    client = make_app(deny_uncovered=True).test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/plain").status_code == 403
    assert client.get("/no-such-page").status_code == 403


def test_install_needs_auth_section() -> None:
    app = flask.Flask(__name__)
    with pytest.raises(ConfigurationError):
        install(app, {})
