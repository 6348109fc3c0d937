from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from tests.support.tokens import ISSUER, SECRET, SECRET_VARIABLE, claims, hs256
from tests.support.wsgi import Response, call
from wsgishield import Shield, context
from wsgishield.auth import Identity
from wsgishield.errors import ConfigurationError
from wsgishield.middleware import AuthMiddleware

SEEN: list[dict[str, Any]] = []


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    SEEN.append(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def policy(**auth: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "issuers": {
            "main": {
                "issuer": ISSUER,
                "algorithms": ["HS256"],
                "keys": [{"secret_env": SECRET_VARIABLE}],
            }
        },
    }
    settings.update(auth)
    return {
        "auth": settings,
        "routes": [
            {"id": "health", "path": "/health", "auth": {"public": True}},
            {"id": "admin", "path": "/admin/**", "auth": {"roles_any": ["admin"]}},
            {"id": "write", "path": "/items/**", "methods": ["POST"],
             "auth": {"scopes": ["items:write"]}},
            {"id": "items", "path": "/items/**", "auth": {"roles_any": ["reader", "admin"]}},
            {"id": "feed", "path": "/feed", "auth": {"optional": True}},
            {"id": "download", "path": "/download", "auth": {"allow_query_token": True}},
            {"id": "open", "path": "/open"},
        ],
    }  # fmt: skip


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)
    SEEN.clear()


@pytest.fixture
def shield() -> Shield:
    return Shield(app, policy())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: Response) -> str:
    value = response.header("WWW-Authenticate")
    assert value is not None
    return value


def test_valid_token_reaches_app_with_identity(shield: Shield) -> None:
    response = call(shield, "/items/1", headers=bearer(hs256(claims())))
    assert response.status_code == 200
    identity = SEEN[-1][context.IDENTITY]
    assert isinstance(identity, Identity)
    assert identity.subject == "user-1"


def test_missing_token_gets_bare_challenge(shield: Shield) -> None:
    response = call(shield, "/items/1")
    assert response.status_code == 401
    assert challenge(response) == 'Bearer realm="api"'
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["status"] == 401
    assert response.environ[context.DECISION].reason == "missing-token"


@pytest.mark.parametrize(
    ("template", "status"),
    [
        ("bearer {t}", 200),
        ("BEARER {t}", 200),
        ("Bearer  {t}", 200),
        ("Bearer {t} junk", 400),
        ("Bearer {t},", 400),
        ("Bearer", 400),
        ("Bearer ", 400),
        ("Basic eDp5, Bearer {t}", 400),
        ("Bearer {t}, Basic eDp5", 400),
        ("Bearer\t{t}", 400),
        ("Token {t}", 401),
        ("Basic eDp5", 401),
    ],
    ids=["lower", "upper", "two-spaces", "junk-after", "trailing-comma", "alone",
         "alone-space", "basic-then-bearer", "bearer-then-basic", "tab", "token-scheme",
         "basic"],
)  # fmt: skip
def test_bearer_grammar(shield: Shield, template: str, status: int) -> None:
    token = hs256(claims())
    response = call(
        shield, "/items/1", headers={"Authorization": template.format(t=token)}
    )
    assert response.status_code == status
    if status == 400:
        assert 'error="invalid_request"' in challenge(response)
    if status == 401:
        assert challenge(response) == 'Bearer realm="api"'
    assert token not in response.body.decode()
    assert token not in (response.header("WWW-Authenticate") or "")


def test_tampered_signature_is_invalid_token(shield: Shield) -> None:
    token = hs256(claims())
    head, body, signature = token.split(".")
    tampered = f"{head}.{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    response = call(shield, "/items/1", headers=bearer(tampered))
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert response.json()["title"] == "Invalid token"


@pytest.mark.parametrize(
    "overrides",
    [{"exp": int(time.time()) - 3600}, {"iss": "https://test.example.com/auth/evil"},
     {"iat": int(time.time()) + 3600}],
    ids=["expired", "wrong-issuer", "future-iat"],
)  # fmt: skip
def test_bad_tokens_are_invalid_token(
    shield: Shield, overrides: dict[str, Any]
) -> None:
    response = call(shield, "/items/1", headers=bearer(hs256(claims(**overrides))))
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)


def test_missing_role_is_insufficient_scope(shield: Shield) -> None:
    response = call(shield, "/admin/users", headers=bearer(hs256(claims())))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenge(response)
    assert 'scope="admin"' in challenge(response)


def test_missing_scope_names_scope(shield: Shield) -> None:
    response = call(shield, "/items/1", method="POST", headers=bearer(hs256(claims())))
    assert response.status_code == 403
    assert 'scope="items:write"' in challenge(response)


def test_admin_role_passes(shield: Shield) -> None:
    token = hs256(claims(roles=["admin"]))
    assert call(shield, "/admin/users", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "path", ["//admin/users", "/items/../admin/users", "/./admin/x"]
)
def test_path_tricks_meet_admin_rule(shield: Shield, path: str) -> None:
    response = call(shield, path, headers=bearer(hs256(claims())))
    assert response.status_code == 403


def test_cors_preflight_reaches_app(shield: Shield) -> None:
    headers = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "DELETE",
    }
    response = call(shield, "/items/1", method="OPTIONS", headers=headers)
    assert response.status_code == 200


def test_bare_options_needs_token(shield: Shield) -> None:
    response = call(shield, "/items/1", method="OPTIONS")
    assert response.status_code == 401


def test_public_and_uncovered_routes_pass(shield: Shield) -> None:
    assert call(shield, "/health").status_code == 200
    assert call(shield, "/open").status_code == 200
    assert call(shield, "/elsewhere").status_code == 200


def test_deny_uncovered() -> None:
    shield = Shield(app, policy(deny_uncovered=True))
    assert call(shield, "/elsewhere").status_code == 403
    assert call(shield, "/open").status_code == 403
    assert call(shield, "/health").status_code == 200


def test_optional_route_without_token(shield: Shield) -> None:
    assert call(shield, "/feed").status_code == 200
    assert SEEN[-1][context.IDENTITY] is None


def test_optional_route_with_bad_token(shield: Shield) -> None:
    response = call(shield, "/feed", headers=bearer("a.b.c"))
    assert response.status_code == 401


def test_query_token_only_where_allowed(shield: Shield) -> None:
    token = hs256(claims())
    assert call(shield, "/items/1", query=f"access_token={token}").status_code == 401
    response = call(shield, "/download", query=f"x=1&access_token={token}")
    assert response.status_code == 200
    assert SEEN[-1]["QUERY_STRING"] == "x=1"


def test_query_and_header_token_together(shield: Shield) -> None:
    token = hs256(claims())
    response = call(
        shield, "/download", query=f"access_token={token}", headers=bearer(token)
    )
    assert response.status_code == 400


def test_repeated_query_token(shield: Shield) -> None:
    token = hs256(claims())
    response = call(
        shield, "/download", query=f"access_token={token}&access_token={token}"
    )
    assert response.status_code == 400


def test_huge_header_rejected_fast(shield: Shield) -> None:
    response = call(
        shield, "/items/1", headers={"Authorization": "Bearer " + "a" * 5_000_000}
    )
    assert response.status_code == 400


def test_revoked_token_rejected(shield: Shield) -> None:
    token = hs256(claims(jti="revoke-me"))
    assert call(shield, "/items/1", headers=bearer(token)).status_code == 200
    layer = next(layer for layer in shield.layers if isinstance(layer, AuthMiddleware))
    assert layer.revocation is not None
    layer.revocation.revoke_token("revoke-me", time.time() + 600)
    response = call(shield, "/items/1", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)


def test_refresh_type_refused(shield: Shield) -> None:
    token = hs256(claims(), typ="refresh+jwt")
    assert call(shield, "/items/1", headers=bearer(token)).status_code == 401


def test_cookie_token_with_csrf() -> None:
    shield = Shield(app, policy(tokens={"cookie": "session"}))
    token = hs256(claims())
    cookie = f"session={token}; csrf_token=abc123"
    assert call(shield, "/items/1", headers={"Cookie": cookie}).status_code == 200
    response = call(shield, "/items/1", method="POST", headers={"Cookie": cookie})
    assert response.status_code == 403
    assert response.json()["type"].endswith("csrf-failed")
    ok = call(
        shield, "/items/1", method="POST",
        headers={"Cookie": cookie, "X-CSRF-Token": "abc123"},
    )  # fmt: skip
    # The token has no items:write scope: past CSRF, stopped by the rule.
    assert ok.status_code == 403
    assert 'error="insufficient_scope"' in challenge(ok)


def test_duplicate_cookie_counts_as_none() -> None:
    shield = Shield(app, policy(tokens={"cookie": "session"}))
    token = hs256(claims())
    response = call(
        shield, "/items/1", headers={"Cookie": f"session={token}; session=x"}
    )
    assert response.status_code == 401


def test_identity_headers_replace_client_copies() -> None:
    shield = Shield(app, policy(identity_headers={"X-User-Id": "sub"}))
    response = call(
        shield, "/items/1", headers={**bearer(hs256(claims())), "X-User-Id": "admin"}
    )
    assert response.status_code == 200
    assert SEEN[-1]["HTTP_X_USER_ID"] == "user-1"
    call(shield, "/health", headers={"X-User-Id": "admin"})
    assert "HTTP_X_USER_ID" not in SEEN[-1]


def test_event_has_fingerprint_not_token(
    shield: Shield, caplog: pytest.LogCaptureFixture
) -> None:
    token = hs256(claims(roles=[]))
    with caplog.at_level(logging.WARNING, logger="wsgishield.events.auth"):
        call(shield, "/admin/x", headers=bearer(token), remote_addr="192.0.2.77")
    records = [
        record for record in caplog.records if record.name == "wsgishield.events.auth"
    ]
    assert records
    event = records[-1].event  # type: ignore[attr-defined]
    assert event["event.reason"] == "missing-role"
    assert event["rule.id"] == "admin"
    assert len(event["labels.token_fingerprint"]) == 16
    assert token not in repr(event)


def test_route_auth_without_auth_section() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Shield(
            app, {"routes": [{"id": "a", "path": "/a", "auth": {"roles_any": ["x"]}}]}
        )
    assert caught.value.key == "routes[0].auth"


def test_unknown_issuer_name_on_route() -> None:
    raw = policy()
    raw["routes"][1]["auth"]["issuers"] = ["nope"]
    with pytest.raises(ConfigurationError) as caught:
        Shield(app, raw)
    assert caught.value.key == "routes[1].auth.issuers"


@pytest.mark.parametrize(
    "header",
    ["Bearer \x00", "Bearer é", "Bearer " + "." * 100, "Bearer a.b.c", "bearer=x",
     "Bearer eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer " + "A" * 9000],
    ids=["nul", "non-ascii", "dots", "short", "equals", "empty-signature", "over-cap"],
)  # fmt: skip
def test_hostile_headers_never_500(shield: Shield, header: str) -> None:
    response = call(shield, "/items/1", headers={"Authorization": header})
    assert response.status_code in (400, 401)


def test_missing_claim_names_each_claim(shield: Shield) -> None:
    without_exp = call(shield, "/items/1", headers=bearer(hs256(claims(exp=None))))
    without_sub = call(shield, "/items/1", headers=bearer(hs256(claims(sub=None))))
    assert "exp claim" in without_exp.json()["detail"]
    assert "sub claim" in without_sub.json()["detail"]


def test_query_token_removal_keeps_other_parameters(shield: Shield) -> None:
    token = hs256(claims())
    query = f"a=b%20c&access%5Ftoken={token}&d=%2F"
    response = call(
        shield, "/download", query=query, extra={"RAW_URI": f"/download?{query}"}
    )
    assert response.status_code == 200
    assert SEEN[-1]["QUERY_STRING"] == "a=b%20c&d=%2F"
    assert SEEN[-1]["RAW_URI"] == "/download?a=b%20c&d=%2F"


def test_empty_query_token(shield: Shield) -> None:
    assert call(shield, "/download", query="access_token=").status_code == 400
