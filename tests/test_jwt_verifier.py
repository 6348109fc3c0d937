from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.tokens import ISSUER, SECRET, claims, dumps, hs256, raw_hs256
from wsgishield.auth import (
    MemoryRevocationStore,
    Profile,
    StaticKeySet,
    TokenError,
    Verifier,
)
from wsgishield.auth.keys import bind_hmac_secret, bind_public_key
from wsgishield.errors import ConfigurationError
from wsgishield.policy import IssuerProfile, StaticKey, load_policy

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hmac_verifier(clock: Clock | None = None, **profile: Any) -> Verifier:
    keys = StaticKeySet([bind_hmac_secret(SECRET.encode(), ["HS256"], None)])
    return Verifier(
        [Profile("main", ISSUER, algorithms=["HS256"], keys=keys, **profile)],
        revocation=MemoryRevocationStore(),
        clock=clock or Clock(),
    )


def reason(verifier: Verifier, token: str) -> str:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_valid_token_gives_identity() -> None:
    identity = hmac_verifier().verify(hs256(claims(NOW)))
    assert identity.subject == "user-1"
    assert identity.issuer == ISSUER
    assert identity.roles == {"reader"}
    assert identity.scopes == {"items:read"}
    assert identity.token_id == "token-1"
    assert identity.claims["sub"] == "user-1"
    assert len(identity.fingerprint) == 16


@pytest.mark.parametrize(
    "issuer",
    ["http", "test.example.com", "https://test.example.com/auth/evil",
     ["https://test.example.com/auth"], "https://test.example.com/auth/",
     "HTTPS://test.example.com/auth"],
    ids=["scheme-only", "host-only", "longer-path", "list", "trailing-slash", "case"],
)  # fmt: skip
def test_issuer_must_match_exactly(issuer: Any) -> None:
    token = raw_hs256('{"alg":"HS256"}', dumps(claims(NOW, iss=issuer)))
    assert reason(hmac_verifier(), token) == "wrong-issuer"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"iat": int(NOW) + 2, "nbf": int(NOW) + 2}, None),
        ({"iat": int(NOW) + 3600}, "issued-in-future"),
        ({"nbf": int(NOW) + 45}, "not-yet-valid"),
        ({"nbf": int(NOW) + 29}, None),
        ({"exp": int(NOW) - 10}, None),
        ({"exp": int(NOW) - 31}, "expired"),
        ({"exp": int(NOW) + 90_000}, "lifetime-too-long"),
    ],
    ids=["iat-nbf-2s-ahead", "iat-hour-ahead", "nbf-45s-ahead", "nbf-29s-ahead",
         "exp-in-leeway", "exp-past-leeway", "lifetime-over-max"],
)  # fmt: skip
def test_time_claims_with_leeway(
    overrides: dict[str, Any], expected: str | None
) -> None:
    token = hs256(claims(NOW, **overrides))
    verifier = hmac_verifier()
    if expected is None:
        assert verifier.verify(token).subject == "user-1"
    else:
        assert reason(verifier, token) == expected


@pytest.mark.parametrize(
    "value",
    ['"1900000000"', "true", "null", "[1900000000]", '{"n":1}'],
    ids=["string", "boolean", "null", "list", "object"],
)
def test_date_claims_must_be_numbers(value: str) -> None:
    payload = dumps(claims(NOW))[:-1] + f',"nbf":{value}}}'
    token = raw_hs256('{"alg":"HS256","typ":"JWT"}', payload)
    assert reason(hmac_verifier(), token) == "invalid-claim"


def test_exp_as_string_rejected() -> None:
    body = claims(NOW, exp=str(int(NOW) + 60))
    token = raw_hs256('{"alg":"HS256"}', dumps(body))
    assert reason(hmac_verifier(), token) == "invalid-claim"


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ('{"alg":"HS256","alg":"none"}', None),
        ('{"alg":"HS256"}', '{"sub":"a","sub":"admin"}'),
        ('{"alg":"HS256"}', '{"x":{"a":1,"a":2}}'),
    ],
    ids=["header", "payload", "nested"],
)
def test_duplicate_member_names_rejected(header: str, payload: str | None) -> None:
    body = dumps(claims(NOW))
    if payload is not None:
        body = body[:-1] + "," + payload[1:]
    token = raw_hs256(header, body)
    assert reason(hmac_verifier(), token) == "malformed"


@pytest.mark.parametrize(
    "text",
    ["NaN", "Infinity", "-Infinity", "1e400"],
)
def test_non_finite_numbers_rejected(text: str) -> None:
    body = dumps(claims(NOW, exp=None))[:-1] + f',"exp":{text}}}'
    token = raw_hs256('{"alg":"HS256"}', body)
    assert reason(hmac_verifier(), token) in ("malformed", "invalid-claim")


def test_unknown_crit_rejected() -> None:
    token = hs256(claims(NOW), crit=["exp"], exp=1)
    assert reason(hmac_verifier(), token) == "unsupported-crit"


@pytest.mark.parametrize(
    "member",
    [{"jku": "https://evil.example/jwks"}, {"x5u": "https://evil.example/x"},
     {"jwk": {"kty": "oct", "k": "AAAA"}}, {"x5c": ["MIIB"]}],
    ids=["jku", "x5u", "jwk", "x5c"],
)  # fmt: skip
def test_key_pointers_never_followed(member: dict[str, Any]) -> None:
    # Signed with another secret: only a followed pointer could verify it.
    token = hs256(claims(NOW), secret="x" * 40, **member)
    assert reason(hmac_verifier(), token) == "bad-signature"


@pytest.mark.parametrize(
    ("token_alg", "expected"),
    [("none", "algorithm-not-allowed"), ("HS512", "algorithm-not-allowed")],
)
def test_algorithm_outside_allowlist(token_alg: str, expected: str) -> None:
    token = raw_hs256(dumps({"alg": token_alg}), dumps(claims(NOW)))
    assert reason(hmac_verifier(), token) == expected


def test_unsigned_token_is_malformed() -> None:
    token = jwt.encode(claims(NOW), None, algorithm="none")
    assert reason(hmac_verifier(), token) == "malformed"


def test_tampered_signature_rejected() -> None:
    token = hs256(claims(NOW))
    head, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert reason(hmac_verifier(), f"{head}.{body}.{flipped}") == "bad-signature"


def test_tampered_payload_rejected() -> None:
    token = hs256(claims(NOW))
    head, _, signature = token.split(".")
    forged = hs256(claims(NOW, roles=["admin"])).split(".")[1]
    assert reason(hmac_verifier(), f"{head}.{forged}.{signature}") == "bad-signature"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "a.b.", "a+b.c.d", "eyJ.eyJ.sig=", "a. b.c", "é.b.c"],
    ids=["empty", "one", "two", "four", "no-signature", "plus", "padding", "space", "unicode"],
)  # fmt: skip
def test_malformed_tokens(token: str) -> None:
    assert reason(hmac_verifier(), token) == "malformed"


def test_non_object_payload_rejected() -> None:
    token = raw_hs256('{"alg":"HS256"}', "[1,2,3]")
    assert reason(hmac_verifier(), token) == "malformed"


def test_deep_nesting_rejected_cleanly() -> None:
    payload = dumps(claims(NOW))[:-1] + ',"x":' + "[" * 3000 + "]" * 3000 + "}"
    token = raw_hs256('{"alg":"HS256"}', payload)
    verifier = Verifier(hmac_verifier().profiles, max_token_bytes=65_536, clock=Clock())
    assert reason(verifier, token) in ("malformed", "too-large")


def test_large_token_rejected_before_decoding() -> None:
    token = "a" * 5_000_000
    assert reason(hmac_verifier(), token) == "too-large"


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss"])
def test_required_claims(missing: str) -> None:
    token = hs256(claims(NOW, **{missing: None}))
    expected = "wrong-issuer" if missing == "iss" else "missing-claim"
    assert reason(hmac_verifier(), token) == expected


@pytest.mark.parametrize(
    ("audience", "expected"),
    [("api", None), (["other", "api"], None), ("other", "wrong-audience"),
     (["other"], "wrong-audience"), (None, "missing-claim"), (7, "wrong-audience")],
    ids=["string", "list-member", "other", "list-without", "missing", "number"],
)  # fmt: skip
def test_audience(audience: Any, expected: str | None) -> None:
    token = hs256(claims(NOW, aud=audience))
    verifier = hmac_verifier(audiences=["api"])
    if expected is None:
        assert verifier.verify(token).subject == "user-1"
    else:
        assert reason(verifier, token) == expected


def test_audience_present_but_none_configured() -> None:
    token = hs256(claims(NOW, aud="api"))
    assert reason(hmac_verifier(), token) == "wrong-audience"


@pytest.mark.parametrize(
    ("typ", "expected"),
    [("JWT", None), ("at+jwt", None), ("application/at+JWT", None),
     ("refresh+jwt", "wrong-type"), (7, "wrong-type")],
)  # fmt: skip
def test_token_type(typ: Any, expected: str | None) -> None:
    token = raw_hs256(dumps({"alg": "HS256", "typ": typ}), dumps(claims(NOW)))
    verifier = hmac_verifier()
    if expected is None:
        assert verifier.verify(token).subject == "user-1"
    else:
        assert reason(verifier, token) == expected


def test_typ_required_rejects_missing() -> None:
    token = raw_hs256('{"alg":"HS256"}', dumps(claims(NOW)))
    assert reason(hmac_verifier(typ_required=True), token) == "wrong-type"


def test_max_age() -> None:
    token = hs256(claims(NOW - 4000, exp=int(NOW) + 100))
    assert reason(hmac_verifier(max_age=3600), token) == "too-old"


def test_scopes_from_scp_list() -> None:
    token = hs256(claims(NOW, scope=None, scp=["a", "b", 3]))
    assert hmac_verifier().verify(token).scopes == {"a", "b"}


def test_roles_from_nested_claim() -> None:
    token = hs256(claims(NOW, realm_access={"roles": ["admin"]}))
    verifier = hmac_verifier(roles_claim="realm_access.roles")
    assert verifier.verify(token).roles == {"admin"}


# -- cache ------------------------------------------------------------------


def test_cache_hit_returns_same_identity() -> None:
    verifier = hmac_verifier()
    token = hs256(claims(NOW))
    assert verifier.verify(token) is verifier.verify(token)


def test_cache_expires_at_exp_not_leeway() -> None:
    clock = Clock()
    verifier = hmac_verifier(clock)
    token = hs256(claims(NOW, exp=int(NOW) + 60))
    first = verifier.verify(token)
    clock.now = NOW + 61
    # Within the leeway the token is verified afresh, not served from cache.
    second = verifier.verify(token)
    assert second is not first
    clock.now = NOW + 91
    assert reason(verifier, token) == "expired"


def test_cache_is_bounded() -> None:
    verifier = Verifier(hmac_verifier().profiles, cache_size=3, clock=Clock())
    for index in range(10):
        verifier.verify(hs256(claims(NOW, jti=f"t{index}")))
    assert len(verifier.cache) == 3


def test_revocation_applies_to_cached_token() -> None:
    verifier = hmac_verifier()
    store = verifier.revocation
    assert isinstance(store, MemoryRevocationStore)
    token = hs256(claims(NOW))
    verifier.verify(token)
    store.revoke_token("token-1", time.time() + 3600)
    assert reason(verifier, token) == "revoked"


def test_subject_revocation_cutoff() -> None:
    verifier = hmac_verifier()
    store = verifier.revocation
    assert isinstance(store, MemoryRevocationStore)
    old = hs256(claims(NOW - 10, jti="old"))
    new = hs256(claims(NOW, jti="new"))
    store.revoke_subject("user-1", before=NOW - 5)
    assert reason(verifier, old) == "revoked"
    assert verifier.verify(new).token_id == "new"


# -- asymmetric keys ----------------------------------------------------------


def _public(private: Any) -> Any:
    return private.public_key()


@pytest.mark.parametrize(
    ("alg", "private"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("PS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
        ("ES384", ec.generate_private_key(ec.SECP384R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    ],
)
def test_asymmetric_algorithms(alg: str, private: Any) -> None:
    key = bind_public_key(_public(private), [alg], "k1", None)
    verifier = Verifier(
        [Profile("main", ISSUER, algorithms=[alg], keys=StaticKeySet([key]))],
        clock=Clock(),
    )
    token = jwt.encode(claims(NOW), private, algorithm=alg, headers={"kid": "k1"})
    assert verifier.verify(token).subject == "user-1"
    other = jwt.encode(claims(NOW), private, algorithm=alg, headers={"kid": "k2"})
    assert reason(verifier, other) == "unknown-key"


def test_algorithm_confusion_rejected() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _public(private).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = bind_public_key(_public(private), ["RS256"], None, None)
    verifier = Verifier(
        [Profile("main", ISSUER, algorithms=["RS256"], keys=StaticKeySet([key]))],
        clock=Clock(),
    )
    forged = raw_hs256('{"alg":"HS256"}', dumps(claims(NOW)), secret=pem.decode())
    assert reason(verifier, forged) == "algorithm-not-allowed"


def test_ec_key_bound_to_its_curve() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    key = bind_public_key(_public(private), ["ES256", "ES384"], None, None)
    assert key.algorithms == {"ES384"}


# -- configuration ------------------------------------------------------------


def profile_settings(**overrides: Any) -> IssuerProfile:
    raw: dict[str, Any] = {
        "issuer": ISSUER,
        "algorithms": ["HS256"],
        "keys": [{"secret_env": "WSGISHIELD_TEST_SECRET"}],
    }
    raw.update(overrides)
    policy = load_policy({"auth": {"issuers": {"main": raw}}})
    assert policy.auth is not None
    return policy.auth.issuers["main"]


@pytest.mark.parametrize(
    ("overrides", "environ", "key"),
    [
        ({"algorithms": ["none"]}, {"WSGISHIELD_TEST_SECRET": SECRET}, "auth.issuers.main.algorithms"),
        ({"algorithms": ["HS256", "RS256"]}, {"WSGISHIELD_TEST_SECRET": SECRET},
         "auth.issuers.main.algorithms"),
        ({}, {"WSGISHIELD_TEST_SECRET": "short-secret"}, "auth.issuers.main.keys[0].secret_env"),
        ({"algorithms": ["HS512"]}, {"WSGISHIELD_TEST_SECRET": SECRET},
         "auth.issuers.main.keys[0].secret_env"),
        ({}, {}, "auth.issuers.main.keys[0].secret_env"),
        ({"keys": []}, {}, "auth.issuers.main.keys"),
        ({"algorithms": ["RS256"]}, {"WSGISHIELD_TEST_SECRET": SECRET},
         "auth.issuers.main.keys[0].secret_env"),
        ({"algorithms": ["RS256"], "keys": [], "jwks": {"uri": "http://idp.example.com/jwks"}},
         {}, "auth.issuers.main.jwks.uri"),
    ],
    ids=["none", "mixed", "short-secret", "secret-short-for-hs512", "unset-env", "no-keys",
         "secret-for-rsa", "plain-http-jwks"],
)  # fmt: skip
def test_profile_configuration_errors(
    overrides: dict[str, Any], environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Profile.from_policy("main", profile_settings(**overrides), environ=environ)
    assert caught.value.key == key
    assert SECRET not in str(caught.value)
    assert "short-secret" not in str(caught.value)


def test_profile_from_pem_file(tmp_path: Any) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "key.pem"
    path.write_bytes(
        _public(private).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = profile_settings(algorithms=["EdDSA"], keys=[{"pem_file": str(path)}])
    profile = Profile.from_policy("main", settings, environ={})
    verifier = Verifier([profile], clock=Clock())
    token = jwt.encode(claims(NOW), private, algorithm="EdDSA")
    assert verifier.verify(token).subject == "user-1"


def test_private_pem_refused() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    settings = profile_settings(algorithms=["EdDSA"], keys=[{"pem": pem}])
    with pytest.raises(ConfigurationError) as caught:
        Profile.from_policy("main", settings, environ={})
    assert "PRIVATE" not in str(caught.value)


def test_static_key_struct_forbids_unknown() -> None:
    with pytest.raises(ConfigurationError):
        load_policy({"auth": {"issuers": {"main": {"issuer": ISSUER, "algorithms": ["HS256"],
                                                   "keys": [{"secret": SECRET}]}}}})  # fmt: skip
    assert StaticKey().kid is None


def test_key_without_kid_serves_any_kid() -> None:
    token = hs256(claims(NOW), kid="rotated-1")
    assert hmac_verifier().verify(token).subject == "user-1"


def test_kid_lookup_never_tries_every_key() -> None:
    first = bind_hmac_secret(SECRET.encode(), ["HS256"], "a")
    second = bind_hmac_secret(("y" * 40).encode(), ["HS256"], "b")
    profile = Profile(
        "main", ISSUER, algorithms=["HS256"], keys=StaticKeySet([first, second])
    )
    verifier = Verifier([profile], clock=Clock())
    assert verifier.verify(hs256(claims(NOW), kid="a")).subject == "user-1"
    assert reason(verifier, hs256(claims(NOW), kid="b")) == "bad-signature"
    assert reason(verifier, hs256(claims(NOW))) == "unknown-key"
    assert reason(verifier, hs256(claims(NOW), kid="c")) == "unknown-key"
