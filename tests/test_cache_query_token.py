"""A query-string token must never let one identity's response reach another."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tests.support.wsgi import call
from wsgishield import Shield, context

SECRET = "a-test-secret-of-at-least-thirty-two-bytes!"
ISSUER = "https://issuer.test"


def token(subject: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": subject, "iss": ISSUER, "iat": now, "exp": now + 300},
        SECRET,
        algorithm="HS256",
    )


def subject_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    identity = environ.get(context.IDENTITY)
    body = (identity.subject if identity else "anonymous").encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")]
    )
    return [body]


@pytest.fixture
def shield(monkeypatch: pytest.MonkeyPatch) -> Shield:
    monkeypatch.setenv("WSGISHIELD_TEST_CACHE_SECRET", SECRET)
    return Shield(
        subject_app,
        {
            "auth": {
                "issuers": {
                    "main": {
                        "issuer": ISSUER,
                        "algorithms": ["HS256"],
                        "keys": [{"secret_env": "WSGISHIELD_TEST_CACHE_SECRET"}],
                    }
                }
            },
            "cache": {},
            "routes": [
                {
                    "id": "me",
                    "path": "/me",
                    "auth": {"optional": True, "allow_query_token": True},
                    "cache": {"ttl": 60},
                },
                {
                    "id": "open",
                    "path": "/open",
                    "auth": {"optional": True, "allow_query_token": True},
                    "cache": {"ttl": 60, "public": True},
                },
            ],
        },
    )


@pytest.mark.parametrize(
    "path", ["/me", "/open"], ids=["private-route", "public-route"]
)
def test_query_token_responses_stay_apart(shield: Shield, path: str) -> None:
    alice = call(shield, f"{path}?access_token={token('alice')}")
    bob = call(shield, f"{path}?access_token={token('bob')}")
    anonymous = call(shield, path)

    assert bob.body != b"alice"
    assert anonymous.body != b"alice"
    if path == "/me":
        assert alice.body == b"alice"
        assert bob.body == b"bob"
        assert anonymous.body == b"anonymous"
    else:
        # A public route never sees the identity, so every caller gets the
        # same anonymous response.
        assert alice.body == b"anonymous"
