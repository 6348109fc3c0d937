from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tokens import SECRET, b64url, claims, dumps, hs256, raw_hs256
from tests.test_jwt_verifier import hmac_verifier
from wsgishield.auth import TokenError
from wsgishield.auth.credentials import parse_authorization
from wsgishield.auth.tokens import split_token

TOKEN_ALPHABET = st.characters(codec="ascii") | st.sampled_from("Bb.=-_ ,")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=TOKEN_ALPHABET, max_size=80))
def test_authorization_parse_never_raises(value: str) -> None:
    kind, detail = parse_authorization(value)
    assert kind in ("token", "absent", "malformed")
    if kind == "token":
        assert value.lower().startswith("bearer ")
        assert " " not in detail
        assert "," not in detail


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_authorization_parse_any_text(value: str) -> None:
    assert parse_authorization(value)[0] in ("token", "absent", "malformed")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_verifier_rejects_garbage_with_token_error(value: str) -> None:
    verifier = hmac_verifier()
    try:
        verifier.verify(value)
    except TokenError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_split_token_random_segments(header: bytes, payload: bytes) -> None:
    token = f"{b64url(header)}.{b64url(payload)}.c2ln"
    try:
        split_token(token)
    except TokenError as exc:
        assert exc.reason == "malformed"


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
))  # fmt: skip
def test_any_claim_value_never_crashes(value: object) -> None:
    verifier = hmac_verifier()
    for name in ("exp", "nbf", "iat", "aud", "sub", "jti", "roles", "scope", "scp"):
        body = claims(1_800_000_000)
        body[name] = value
        try:
            token = raw_hs256('{"alg":"HS256"}', dumps(body))
        except ValueError:
            continue
        try:
            verifier.verify(token)
        except TokenError:
            pass


def test_secret_helper_sanity() -> None:
    assert len(SECRET) >= 32
    assert hs256(claims()).count(".") == 2
