"""JWT authentication costs, against PyJWT ``decode`` and flask-jwt-extended.

Run: ``python -m pytest bench/bench_auth.py --benchmark-only -q``.
Compare the rows of one group within one run; absolute figures depend on
the machine.
"""

from __future__ import annotations

import io
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.tokens import ISSUER, SECRET, claims, hs256
from wsgishield import context
from wsgishield.auth import (
    MemoryRevocationStore,
    Profile,
    Requirement,
    StaticKeySet,
    Verifier,
)
from wsgishield.auth.keys import bind_hmac_secret, bind_public_key
from wsgishield.middleware import AuthMiddleware
from wsgishield.routes import Route

ROUTE = Route("items", "/items/**")
REQUIREMENT = Requirement("items", roles_any=["reader", "admin"])


def verifier(alg: str, key: Any, cache_size: int) -> Verifier:
    profile = Profile("main", ISSUER, algorithms=[alg], keys=StaticKeySet([key]))
    return Verifier(
        [profile], cache_size=cache_size, revocation=MemoryRevocationStore()
    )


def hmac_verifier(cache_size: int = 10_000) -> Verifier:
    key = bind_hmac_secret(SECRET.encode(), ["HS256"], None)
    return verifier("HS256", key, cache_size)


def ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return []


def start_response(status: str, headers: list[tuple[str, str]]) -> None:
    return None


def environ_for(token: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/items/1",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "192.0.2.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": io.BytesIO(),
        context.ROUTE: ROUTE,
    }


def pyjwt_check(token: str) -> None:
    payload = jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        issuer=ISSUER,
        leeway=30,
        options={"require": ["exp", "iat", "sub", "iss"]},
    )
    if {"reader", "admin"}.isdisjoint(payload.get("roles", ())):
        raise PermissionError


# -- cached check: header parse, cache hit, expiry, revocation, role ----------


@pytest.mark.benchmark(group="cached-check")
def test_cached_wsgishield_middleware(benchmark: Any) -> None:
    token = hs256(claims())
    middleware = AuthMiddleware(
        ok_app, verifier=hmac_verifier(), requirements={"items": REQUIREMENT}
    )
    environ = environ_for(token)
    middleware(environ, start_response)
    assert environ[context.IDENTITY] is not None
    benchmark(middleware, environ, start_response)


@pytest.mark.benchmark(group="cached-check")
def test_cached_check_alone(benchmark: Any) -> None:
    """The check itself, without the WSGI plumbing around it: header parse,
    cache hit with expiry and revocation, role check."""
    token = hs256(claims())
    checker = hmac_verifier()
    header = f"Bearer {token}"
    checker.verify(token)

    def check() -> None:
        identity = checker.verify(header[7:] if header.startswith("Bearer ") else "")
        if REQUIREMENT.check(identity) is not None:
            raise PermissionError

    benchmark(check)


@pytest.mark.benchmark(group="cached-check")
def test_cached_pyjwt_decode(benchmark: Any) -> None:
    token = hs256(claims())
    benchmark(pyjwt_check, token)


@pytest.mark.benchmark(group="cached-check")
def test_cached_flask_jwt_extended(benchmark: Any) -> None:
    flask = pytest.importorskip("flask")
    extended = pytest.importorskip("flask_jwt_extended")
    app = flask.Flask(__name__)
    app.config.update(
        JWT_SECRET_KEY=SECRET,
        JWT_DECODE_ISSUER=ISSUER,
        JWT_DECODE_LEEWAY=30,
        JWT_ACCESS_TOKEN_EXPIRES=False,
    )
    extended.JWTManager(app)
    token = hs256(claims(type="access", fresh=False))

    def check() -> None:
        with app.test_request_context(headers={"Authorization": f"Bearer {token}"}):
            extended.verify_jwt_in_request()
            roles = extended.get_jwt().get("roles", ())
            if {"reader", "admin"}.isdisjoint(roles):
                raise PermissionError

    check()
    benchmark(check)


# -- uncached verification: strict checks vs PyJWT's decode -------------------

KEYS = {
    "HS256": None,
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def signed(alg: str) -> tuple[str, Any, Any]:
    private = KEYS[alg]
    if private is None:
        return hs256(claims()), SECRET, bind_hmac_secret(SECRET.encode(), [alg], None)
    token = jwt.encode(claims(), private, algorithm=alg)
    public = private.public_key()
    return token, public, bind_public_key(public, [alg], None, None)


@pytest.mark.parametrize("alg", list(KEYS))
def test_uncached_wsgishield(benchmark: Any, alg: str) -> None:
    benchmark.group = f"uncached-{alg}"
    token, _, key = signed(alg)
    check = verifier(alg, key, cache_size=0)
    assert check.verify(token).subject == "user-1"
    benchmark(check.verify, token)


@pytest.mark.parametrize("alg", list(KEYS))
def test_uncached_pyjwt_decode(benchmark: Any, alg: str) -> None:
    benchmark.group = f"uncached-{alg}"
    token, public, _ = signed(alg)
    benchmark(jwt.decode, token, public, algorithms=[alg], issuer=ISSUER, leeway=30)


# -- oversized tokens ----------------------------------------------------------


@pytest.mark.benchmark(group="oversized")
def test_5mb_token_rejected_wsgishield(benchmark: Any) -> None:
    middleware = AuthMiddleware(
        ok_app, verifier=hmac_verifier(), requirements={"items": REQUIREMENT}
    )
    environ = environ_for("a" * 5_000_000)
    responses: list[str] = []

    def reject() -> None:
        middleware(environ, lambda status, headers: responses.append(status))

    benchmark(reject)
    assert responses[-1].startswith("400")


@pytest.mark.benchmark(group="oversized")
def test_5mb_token_rejected_pyjwt(benchmark: Any) -> None:
    token = "a" * 5_000_000

    def reject() -> None:
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(token, SECRET, algorithms=["HS256"])

    benchmark.pedantic(reject, rounds=20, iterations=1)
