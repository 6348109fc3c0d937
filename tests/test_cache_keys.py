from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.wsgi import make_environ
from wsgishield.cache.freshness import assess, mark_private, parse_cache_control
from wsgishield.cache.keys import KeyBuilder, canonical_query
from wsgishield.cache.validation import etag_matches, not_modified_since

DROP = KeyBuilder(drop_params=["utm_*", "gclid"]).drop_exact
PREFIXES = KeyBuilder(drop_params=["utm_*", "gclid"]).drop_prefixes


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("a=1&b=2", "a=1&b=2", id="sorted-already"),
        pytest.param("b=2&a=1", "a=1&b=2", id="sorted-by-name"),
        pytest.param("a=2&a=1", "a=2&a=1", id="repeats-keep-order"),
        pytest.param("a=1&utm_source=x&utm_medium=y", "a=1", id="utm-prefix-dropped"),
        pytest.param("gclid=1&a=1", "a=1", id="exact-name-dropped"),
        pytest.param("gclidx=1", "gclidx=1", id="exact-name-only"),
        pytest.param("a=1&&b=2&", "a=1&b=2", id="empty-pairs-removed"),
        pytest.param("a=%41", "a=%41", id="encoding-kept"),
        pytest.param("flag&a=1", "a=1&flag", id="name-without-value"),
    ],
)
def test_canonical_query(query: str, expected: str) -> None:
    assert canonical_query(query, DROP, PREFIXES) == expected


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdz"), st.text("0123456789", max_size=3)),
        max_size=8,
    )
)
def test_canonical_query_order_independent(pairs: list[tuple[str, str]]) -> None:
    distinct = list(dict(pairs).items())
    query = "&".join(f"{name}={value}" for name, value in distinct)
    reversed_query = "&".join(f"{name}={value}" for name, value in reversed(distinct))
    assert canonical_query(query) == canonical_query(reversed_query)


def test_strip_query_keeps_order() -> None:
    keys = KeyBuilder(drop_params=["utm_*"])
    assert keys.strip_query("b=2&utm_source=x&a=1") == "b=2&a=1"


@pytest.mark.parametrize(
    ("headers", "scheme", "host"),
    [
        pytest.param({"Host": "API.Example"}, "http", "api.example", id="lower-case"),
        pytest.param(
            {"Host": "api.example:80"}, "http", "api.example", id="default-port-http"
        ),
        pytest.param(
            {"Host": "api.example:443"}, "https", "api.example", id="default-port-https"
        ),
        pytest.param(
            {"Host": "api.example:8080"}, "http", "api.example:8080", id="other-port"
        ),
        pytest.param(
            {"Host": "api.example."}, "http", "api.example", id="trailing-dot"
        ),
        pytest.param({"Host": "[::1]:8080"}, "http", "[::1]:8080", id="ipv6"),
        pytest.param(
            {"Host": "api.example", "X-Forwarded-Host": "evil.example"},
            "http",
            "api.example",
            id="x-forwarded-host-ignored",
        ),
    ],
)
def test_target_host(headers: dict[str, str], scheme: str, host: str) -> None:
    environ = make_environ(headers=headers)
    target = KeyBuilder().target(environ, scheme)
    assert target is not None
    assert target.host == host


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.example/x", id="slash"),
        pytest.param("a b", id="space"),
        pytest.param("x" * 300, id="too-long"),
        pytest.param("", id="empty"),
        pytest.param("a\r\nb", id="crlf"),
    ],
)
def test_target_rejects_invalid_host(host: str) -> None:
    environ = make_environ(headers={"Host": host})
    assert KeyBuilder().target(environ, "http") is None


def test_target_falls_back_to_server_name() -> None:
    environ = make_environ()  # no Host header unless one is given
    target = KeyBuilder().target(environ, "http")
    assert target is not None
    assert target.host == "api.example"


def test_primary_key_parts() -> None:
    keys = KeyBuilder()
    environ = make_environ(headers={"Accept-Language": "fr"})
    target = keys.target(environ, "http")
    assert target is not None
    base = keys.primary(target, (), environ, None)
    https = keys.target(environ, "https")
    assert https is not None
    assert keys.primary(https, (), environ, None) != base
    assert keys.primary(target, (), environ, "alice") != base
    assert keys.primary(target, ("accept-language",), environ, None) != base
    assert KeyBuilder(version="2").primary(target, (), environ, None) != base
    assert keys.primary(target, (), environ, None) == base


def test_host_spelling_keyed_apart() -> None:
    keys = KeyBuilder()
    plain = make_environ(headers={"Host": "api.example"})
    shouting = make_environ(headers={"Host": "API.EXAMPLE:80"})
    plain_target = keys.target(plain, "http")
    shouting_target = keys.target(shouting, "http")
    assert plain_target is not None
    assert plain_target == shouting_target
    assert keys.uri_tag(plain_target) == keys.uri_tag(plain_target)
    assert keys.primary(plain_target, (), plain, None) != keys.primary(
        plain_target, (), shouting, None
    )


def test_surrogates_keyed_apart() -> None:
    keys = KeyBuilder()
    environ = make_environ(target="/q\udcff")
    other = make_environ(target="/q\udcfe")
    target = keys.target(environ, "http")
    other_target = keys.target(other, "http")
    assert target is not None
    assert other_target is not None
    assert keys.primary(target, (), environ, None) != keys.primary(
        other_target, (), other, None
    )


def test_variant_absent_differs_from_empty() -> None:
    keys = KeyBuilder()
    absent = keys.variant("p", ["x-a"], make_environ())
    empty = keys.variant("p", ["x-a"], make_environ(headers={"X-A": ""}))
    assert absent != empty


def _assess(
    status: int = 200, headers: list[tuple[str, str]] | None = None, **options: object
):
    settings: dict[str, object] = {
        "statuses": {200, 203, 204, 300, 301, 404, 410},
        "negative_ttl": 10.0,
        "default_ttl": 60.0,
        "stale_while_revalidate": 0.0,
        "stale_if_error": 0.0,
        "route_tags": (),
        "tag_header": "surrogate-key",
        "allow_private": False,
    }
    settings.update(options)
    return assess(status, headers or [], **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "headers", "refusal"),
    [
        pytest.param(200, [], "", id="plain-200"),
        pytest.param(503, [], "status", id="503"),
        pytest.param(500, [], "status", id="500"),
        pytest.param(201, [], "status", id="201"),
        pytest.param(200, [("Set-Cookie", "s=1")], "set-cookie", id="set-cookie"),
        pytest.param(200, [("set-cookie", "s=1")], "set-cookie", id="set-cookie-lower"),
        pytest.param(200, [("Cache-Control", "no-store")], "no-store", id="no-store"),
        pytest.param(
            200, [("Cache-Control", "private, max-age=60")], "private", id="private"
        ),
        pytest.param(200, [("Cache-Control", "no-cache")], "no-cache", id="no-cache"),
        pytest.param(
            200, [("Cache-Control", "max-age=0")], "max-age=0", id="max-age-0"
        ),
        pytest.param(200, [("Vary", "Accept, *")], "vary-star", id="vary-star"),
        pytest.param(
            200,
            [("Content-Security-Policy", "script-src 'nonce-abc'")],
            "csp-nonce",
            id="csp-nonce",
        ),
        pytest.param(
            200,
            [("Content-Security-Policy", "default-src 'self'")],
            "",
            id="csp-without-nonce",
        ),
        pytest.param(404, [], "", id="404"),
        pytest.param(410, [], "", id="410"),
    ],
)
def test_assess_refusals(
    status: int, headers: list[tuple[str, str]], refusal: str
) -> None:
    assert _assess(status, headers).refusal == refusal


@pytest.mark.parametrize(
    ("status", "cache_control", "ttl"),
    [
        pytest.param(200, "", 60, id="rule-ttl"),
        pytest.param(200, "max-age=30", 30, id="max-age"),
        pytest.param(200, "max-age=30, s-maxage=5", 5, id="s-maxage-wins"),
        pytest.param(200, "max-age=30, max-age=3000", 30, id="first-duplicate-wins"),
        pytest.param(200, "max-age=abc", 60, id="invalid-max-age-ignored"),
        pytest.param(404, "", 10, id="negative-ttl"),
        pytest.param(404, "max-age=5", 5, id="negative-shorter"),
        pytest.param(404, "max-age=500", 10, id="negative-capped"),
    ],
)
def test_assess_ttl(status: int, cache_control: str, ttl: float) -> None:
    headers = [("Cache-Control", cache_control)] if cache_control else []
    assert _assess(status, headers).ttl == ttl


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        pytest.param(
            [
                ("Date", "Tue, 01 Dec 2026 10:00:00 GMT"),
                ("Expires", "Tue, 01 Dec 2026 10:00:30 GMT"),
            ],
            30,
            id="expires-minus-date",
        ),
        pytest.param(
            [
                ("Date", "Tue, 01 Dec 2026 10:00:00 GMT"),
                ("Expires", "Tue, 01 Dec 2026 10:00:30 GMT"),
                ("Cache-Control", "max-age=5"),
            ],
            5,
            id="max-age-beats-expires",
        ),
    ],
)
def test_assess_expires(headers: list[tuple[str, str]], ttl: float) -> None:
    assert _assess(200, headers).ttl == ttl


@pytest.mark.parametrize(
    "expires", ["0", "-1", "yesterday", "Tue, 01 Dec 2020 10:00:00 GMT"]
)
def test_assess_past_expires_not_stored(expires: str) -> None:
    verdict = _assess(200, [("Expires", expires)], now=1_800_000_000.0)
    assert verdict.refusal == "max-age=0"


def test_assess_private_allowed_per_identity() -> None:
    assert (
        _assess(200, [("Cache-Control", "private")], allow_private=True).refusal == ""
    )


def test_assess_stale_windows() -> None:
    verdict = _assess(
        200,
        [("Cache-Control", "max-age=1, stale-while-revalidate=30, stale-if-error=60")],
    )
    assert verdict.stale_while_revalidate == 30
    assert verdict.stale_if_error == 60
    strict = _assess(
        200,
        [("Cache-Control", "max-age=1, must-revalidate")],
        stale_while_revalidate=30.0,
        stale_if_error=30.0,
    )
    assert strict.stale_while_revalidate == 0
    assert strict.stale_if_error == 0


def test_assess_headers_vary_and_tags() -> None:
    verdict = _assess(
        200,
        [
            ("Vary", "Accept-Language, Accept-Encoding"),
            ("Surrogate-Key", "orders order:1"),
            ("Connection", "keep-alive"),
            ("Age", "100"),
            ("ETag", '"v1"'),
            ("Content-Type", "application/json"),
        ],
        route_tags=("route",),
    )
    assert verdict.vary == ("accept-language", "accept-encoding")
    assert verdict.tags == ("route", "orders", "order:1")
    assert verdict.etag == '"v1"'
    names = [name.lower() for name, _ in verdict.headers]
    assert names == ["vary", "etag", "content-type"]


def test_parse_cache_control() -> None:
    assert parse_cache_control('Max-Age=5, private="set-cookie", no-store') == {
        "max-age": "5",
        "private": "set-cookie",
        "no-store": "",
    }


@pytest.mark.parametrize(
    ("header", "etag", "expected"),
    [
        pytest.param('"v1"', '"v1"', True, id="same"),
        pytest.param('W/"v1"', '"v1"', True, id="weak-request"),
        pytest.param('"v1"', 'W/"v1"', True, id="weak-entry"),
        pytest.param('"v0", "v1"', '"v1"', True, id="in-list"),
        pytest.param("*", '"v1"', True, id="star"),
        pytest.param('"v2"', '"v1"', False, id="other"),
        pytest.param("", '"v1"', False, id="empty"),
        pytest.param("v1", '"v1"', False, id="unquoted"),
    ],
)
def test_etag_matches(header: str, etag: str, expected: bool) -> None:
    assert etag_matches(header, etag) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("Tue, 01 Dec 2026 10:00:00 GMT", True, id="same-time"),
        pytest.param("Wed, 02 Dec 2026 10:00:00 GMT", True, id="later"),
        pytest.param("Mon, 30 Nov 2026 10:00:00 GMT", False, id="earlier"),
        pytest.param("not a date", False, id="invalid"),
        pytest.param("Tue, 01 Dec 2026 10:00:00", False, id="naive-date"),
    ],
)
def test_not_modified_since(header: str, expected: bool) -> None:
    assert not_modified_since(header, "Tue, 01 Dec 2026 10:00:00 GMT") is expected


def test_mark_private() -> None:
    headers = [("Cache-Control", "public, max-age=60, s-maxage=600"), ("ETag", '"x"')]

    marked = mark_private(headers)

    assert marked == [("ETag", '"x"'), ("Cache-Control", "private, max-age=60")]
    assert mark_private([("Cache-Control", "no-store")])[-1] == (
        "Cache-Control",
        "no-store",
    )
    assert mark_private([])[-1] == ("Cache-Control", "private")
