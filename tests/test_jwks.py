from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from tests.support.jwks_server import JwksServer
from tests.support.tokens import ISSUER, claims
from tests.support.wsgi import call
from wsgishield import Shield
from wsgishield.auth import JwksKeySet, KeysUnavailable, Profile, TokenError, Verifier
from wsgishield.auth.authorization import Requirement
from wsgishield.auth.jwks import JwksError, fetch_jwks, parse_jwks
from wsgishield.errors import ConfigurationError
from wsgishield.middleware import AuthMiddleware


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def ed_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="EdDSA")
    return private, jwk


@pytest.fixture
def server() -> Iterator[JwksServer]:
    running = JwksServer().start()
    try:
        yield running
    finally:
        running.stop()


def make(
    server: JwksServer, clock: Clock, **options: Any
) -> tuple[JwksKeySet, Verifier]:
    keys = JwksKeySet(server.uri, algorithms=["EdDSA", "RS256"], clock=clock, **options)
    profile = Profile("idp", ISSUER, algorithms=["EdDSA", "RS256"], keys=keys)
    return keys, Verifier([profile], clock=clock)


def token(
    private: Any, kid: str, clock: Clock, alg: str = "EdDSA", **overrides: Any
) -> str:
    return jwt.encode(
        claims(clock.now, **overrides), private, algorithm=alg, headers={"kid": kid}
    )


def test_verifies_with_fetched_key(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    server.keys = [jwk]
    clock = Clock()
    _, verifier = make(server, clock)
    assert verifier.verify(token(private, "k1", clock)).subject == "user-1"
    assert server.requests == 1


def test_rsa_key_from_jwks(server: JwksServer) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = "r1"
    server.keys = [jwk]
    clock = Clock()
    _, verifier = make(server, clock)
    assert verifier.verify(token(private, "r1", clock, alg="RS256")).subject == "user-1"


def test_unknown_kid_flood_costs_one_fetch(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    server.keys = [jwk]
    clock = Clock()
    _, verifier = make(server, clock, unknown_kid_cooldown=30)
    verifier.verify(token(private, "k1", clock))
    for index in range(200):
        with pytest.raises(TokenError) as caught:
            verifier.verify(token(private, f"bogus-{index}", clock, jti=str(index)))
        assert caught.value.reason == "unknown-key"
    assert server.requests == 2


def test_rotation_found_by_unknown_kid(server: JwksServer) -> None:
    old_private, old_jwk = ed_key("old")
    new_private, new_jwk = ed_key("new")
    server.keys = [old_jwk]
    clock = Clock()
    _, verifier = make(server, clock)
    verifier.verify(token(old_private, "old", clock))
    server.keys = [old_jwk, new_jwk]
    assert verifier.verify(token(new_private, "new", clock)).subject == "user-1"


def test_removed_key_stops_verifying_cached_token(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    other_private, other_jwk = ed_key("k2")
    server.keys = [jwk, other_jwk]
    clock = Clock()
    _, verifier = make(server, clock)
    cached = token(private, "k1", clock)
    verifier.verify(cached)
    server.keys = [other_jwk]
    # Trigger a refetch through an unknown kid; the set changes.
    with pytest.raises(TokenError):
        verifier.verify(token(other_private, "k3", clock))
    with pytest.raises(TokenError) as caught:
        verifier.verify(cached)
    assert caught.value.reason == "unknown-key"


def test_background_refresh_does_not_block(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    server.keys = [jwk]
    clock = Clock()
    keys, verifier = make(server, clock, refresh_seconds=60)
    first = token(private, "k1", clock)
    verifier.verify(first)

    server.gate = threading.Event()
    server.handling.clear()
    clock.now += 50  # past three quarters of the refresh period
    # The refresh thread is held inside the server; the request still
    # completes from the cached keys.
    assert verifier.verify(token(private, "k1", clock, jti="2")).subject == "user-1"
    assert server.handling.wait(5)
    server.gate.set()
    deadline = time.monotonic() + 5
    while keys._refreshing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests == 2
    assert keys.refresh_at > clock.now


def test_stale_keys_served_during_outage(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    server.keys = [jwk]
    clock = Clock()
    _, verifier = make(server, clock, refresh_seconds=60, max_stale=3600)
    verifier.verify(token(private, "k1", clock))
    server.status = 500
    clock.now += 600
    assert verifier.verify(token(private, "k1", clock, jti="late")).subject == "user-1"


def test_outage_without_usable_key_raises_unavailable(server: JwksServer) -> None:
    server.status = 503
    clock = Clock()
    private, _ = ed_key("k1")
    _, verifier = make(server, clock)
    with pytest.raises(KeysUnavailable) as caught:
        verifier.verify(token(private, "k1", clock))
    assert caught.value.retry_after >= 1
    # A second request inside the retry window does not fetch again.
    with pytest.raises(KeysUnavailable):
        verifier.verify(token(private, "k1", clock, jti="again"))
    assert server.requests == 1


def test_outage_past_staleness_answers_503(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    server.keys = [jwk]
    clock = Clock()
    _, verifier = make(server, clock, refresh_seconds=60, max_stale=120)
    cached = token(private, "k1", clock, exp=int(clock.now) + 3600)
    verifier.verify(cached)
    server.status = 500
    clock.now += 600
    middleware = AuthMiddleware(
        lambda environ, start_response: [],
        verifier=verifier,
        requirements={"all": Requirement("all")},
        routes=None,
    )
    from wsgishield.routes import Route

    response = call(
        middleware, "/x", headers={"Authorization": f"Bearer {cached}"},
        extra={"wsgishield.route": Route("all", "/**")},
    )  # fmt: skip
    assert response.status_code == 503
    assert response.header("Retry-After") is not None
    assert response.header("WWW-Authenticate") is None


def test_redirect_not_followed(server: JwksServer) -> None:
    server.status = 302
    server.headers = {"Location": "http://127.0.0.1:1/elsewhere"}
    with pytest.raises(JwksError, match="302"):
        fetch_jwks(server.uri, timeout=2, max_body_bytes=10_000)


def test_body_cap(server: JwksServer) -> None:
    server.body = b"{" + b" " * 20_000 + b"}"
    with pytest.raises(JwksError, match="bytes"):
        fetch_jwks(server.uri, timeout=2, max_body_bytes=10_000)


def test_max_age_read(server: JwksServer) -> None:
    server.headers = {"Cache-Control": "public, max-age=120"}
    _, max_age = fetch_jwks(server.uri, timeout=2, max_body_bytes=10_000)
    assert max_age == 120


def test_key_count_cap() -> None:
    _, jwk = ed_key("k")
    body = json.dumps({"keys": [jwk] * 6}).encode()
    with pytest.raises(JwksError, match="limit"):
        parse_jwks(body, ["EdDSA"], max_keys=5)


@pytest.mark.parametrize(
    "entry",
    [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, {"kty": "OKP", "crv": "Ed25519", "x": "!!"},
     {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "not-an-object"],
    ids=["symmetric", "bad-x", "weak-rsa", "string"],
)  # fmt: skip
def test_unusable_keys_skipped(entry: Any) -> None:
    _, good = ed_key("good")
    keys = parse_jwks(
        json.dumps({"keys": [entry, good]}).encode(), ["EdDSA", "RS256"], 10
    )
    assert [key.kid for key in keys] == ["good"]


def test_encryption_key_skipped() -> None:
    _, jwk = ed_key("enc")
    jwk["use"] = "enc"
    with pytest.raises(JwksError, match="no usable"):
        parse_jwks(json.dumps({"keys": [jwk]}).encode(), ["EdDSA"], 10)


@pytest.mark.parametrize(
    "uri",
    ["http://idp.example.com/jwks", "ftp://127.0.0.1/jwks", "/jwks", "https:///jwks"],
)
def test_uri_must_be_https_or_loopback(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        JwksKeySet(uri, algorithms=["EdDSA"])


def test_no_thread_in_constructor(server: JwksServer) -> None:
    before = threading.active_count()
    JwksKeySet(server.uri, algorithms=["EdDSA"])
    assert threading.active_count() == before
    assert server.requests == 0


def ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def test_shield_with_jwks_policy(server: JwksServer) -> None:
    private, jwk = ed_key("k1")
    server.keys = [jwk]
    shield = Shield(
        ok_app,
        {
            "auth": {
                "issuers": {
                    "idp": {
                        "issuer": ISSUER,
                        "algorithms": ["EdDSA"],
                        "jwks": {"uri": server.uri, "refresh_seconds": 60},
                    }
                }
            },
            "routes": [{"id": "all", "path": "/**", "auth": {}}],
        },
    )
    clock = Clock()
    good = {"Authorization": f"Bearer {token(private, 'k1', clock)}"}
    assert call(shield, "/x", headers=good).status_code == 200
    forged_private, _ = ed_key("k1")
    forged = {"Authorization": f"Bearer {token(forged_private, 'k1', clock)}"}
    assert call(shield, "/x", headers=forged).status_code == 401
    assert server.requests == 1


def test_shield_jwks_down_at_start(server: JwksServer) -> None:
    server.status = 500
    private, _ = ed_key("k1")
    shield = Shield(
        ok_app,
        {
            "auth": {
                "issuers": {
                    "idp": {
                        "issuer": ISSUER,
                        "algorithms": ["EdDSA"],
                        "jwks": {"uri": server.uri},
                    }
                }
            },
            "routes": [{"id": "all", "path": "/**", "auth": {}}],
        },
    )
    headers = {"Authorization": f"Bearer {token(private, 'k1', Clock())}"}
    response = call(shield, "/x", headers=headers)
    assert response.status_code == 503
    assert int(response.header("Retry-After") or "0") >= 1
    assert response.json()["status"] == 503
