from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache_helpers import (
    CountingApp,
    FakeClock,
    build,
    close_store,
    json_body,
    make_store,
)
from tests.support.servers import RedisServer
from tests.support.wsgi import call, make_environ
from wsgishield import Shield, context, events

JSON = [("Content-Type", "application/json")]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, clock: FakeClock) -> Any:
    server = (
        request.getfixturevalue("shared_redis_server") if backend == "redis" else None
    )
    return make_store(backend, server, clock)


def numbered(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """A view whose body contains how many times it ran."""
    return "200 OK", list(JSON), json_body(call=environ["test.call_number"])


# -- the five failures seen with Flask-Caching's @cached -----------------------


def test_post_runs_handler_after_cached_get(store: Any, clock: FakeClock) -> None:
    app = CountingApp(
        {"/items": lambda e: ("200 OK", JSON, json_body(method=e["REQUEST_METHOD"]))}
    )
    cache = build(app, {"/items": {"ttl": 60}}, store, clock)

    assert call(cache, "/items").body == json_body(method="GET")
    posted = call(cache, "/items", method="POST")

    assert posted.body == json_body(method="POST")
    assert app.count("/items") == 2


def test_503_not_replayed_after_recovery(store: Any, clock: FakeClock) -> None:
    def flaky(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["test.call_number"] == 1:
            return "503 Service Unavailable", JSON, b'{"down":true}'
        return "200 OK", JSON, b'{"down":false}'

    cache = build(
        CountingApp({"/status": flaky}), {"/status": {"ttl": 60}}, store, clock
    )

    assert call(cache, "/status").status_code == 503
    recovered = call(cache, "/status")

    assert recovered.status_code == 200
    assert recovered.body == b'{"down":false}'


def test_set_cookie_never_reaches_next_user(store: Any, clock: FakeClock) -> None:
    def login_page(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        number = environ["test.call_number"]
        return (
            "200 OK",
            [*JSON, ("Set-Cookie", f"session=user{number}")],
            json_body(user=number),
        )

    app = CountingApp({"/welcome": login_page})
    cache = build(app, {"/welcome": {"ttl": 60, "public": True}}, store, clock)

    first = call(cache, "/welcome")
    second = call(cache, "/welcome")

    assert first.header("Set-Cookie") == "session=user1"
    assert second.header("Set-Cookie") == "session=user2"
    assert "detail=set-cookie" in (second.header("Cache-Status") or "")
    assert app.count("/welcome") == 2


def test_authorization_body_not_shared(store: Any, clock: FakeClock) -> None:
    def profile(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        return "200 OK", JSON, json_body(token=environ.get("HTTP_AUTHORIZATION"))

    cache = build(CountingApp({"/me": profile}), {"/me": {"ttl": 60}}, store, clock)

    alice = call(cache, "/me", headers={"Authorization": "Bearer alice"})
    bob = call(cache, "/me", headers={"Authorization": "Bearer bob"})
    anonymous = call(cache, "/me")

    assert alice.body == json_body(token="Bearer alice")
    assert bob.body == json_body(token="Bearer bob")
    assert anonymous.body == json_body(token=None)
    assert "detail=authorization" in (bob.header("Cache-Status") or "")


def test_query_string_is_keyed(store: Any, clock: FakeClock) -> None:
    def page(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        return "200 OK", JSON, json_body(query=environ["QUERY_STRING"])

    cache = build(CountingApp({"/list": page}), {"/list": {"ttl": 60}}, store, clock)

    assert call(cache, "/list?page=1").body == json_body(query="page=1")
    assert call(cache, "/list?page=2").body == json_body(query="page=2")


# -- query canonicalisation ----------------------------------------------------


def test_query_order_hits_same_entry(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    first = call(cache, "/q?a=1&b=2")
    second = call(cache, "/q?b=2&a=1")

    assert second.body == first.body
    assert (second.header("Cache-Status") or "").startswith("wsgishield; hit")
    assert app.count("/q") == 1


def test_utm_param_hits_plain_entry(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    call(cache, "/q?a=1")
    tracked = call(cache, "/q?a=1&utm_source=x")

    assert (tracked.header("Cache-Status") or "").startswith("wsgishield; hit")
    assert app.count("/q") == 1


def test_dropped_params_removed_from_raw_uri(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": lambda e: ("200 OK", JSON, json_body(raw=e["RAW_URI"]))})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)
    environ = make_environ("GET", "/q", query="utm_source=evil&a=1")
    environ["RAW_URI"] = "/q?utm_source=evil&a=1"

    body = b"".join(cache(environ, lambda *args: None))

    assert body == json_body(raw="/q?a=1")


def test_dropped_params_hidden_from_app(store: Any, clock: FakeClock) -> None:
    app = CountingApp(
        {"/q": lambda e: ("200 OK", JSON, json_body(query=e["QUERY_STRING"]))}
    )
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    response = call(cache, "/q?utm_source=evil&b=2&a=1")

    assert response.body == json_body(query="b=2&a=1")


# -- unkeyed input and Vary ----------------------------------------------------


def echo_header(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    return "200 OK", JSON, json_body(echo=environ.get("HTTP_X_FORWARDED_HOST"))


def test_undeclared_header_echo_never_stored(
    store: Any,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh event budget, so earlier tests' events do not suppress this one.
    monkeypatch.setattr(events, "_limiter", events.EventLimiter())
    app = CountingApp({"/echo": echo_header})
    cache = build(app, {"/echo": {"ttl": 60}}, store, clock)

    with caplog.at_level(logging.WARNING, logger="wsgishield.events.cache"):
        poisoned = call(cache, "/echo", headers={"X-Forwarded-Host": "evil.example"})
    victim = call(cache, "/echo")

    assert poisoned.body == json_body(echo="evil.example")
    assert victim.body == json_body(echo=None)
    assert app.count("/echo") == 2
    assert "detail=unkeyed-header" in (victim.header("Cache-Status") or "")
    logged = [record.event for record in caplog.records if hasattr(record, "event")]
    assert logged
    assert logged[0]["event.action"] == "unkeyed-input"
    assert logged[0]["labels.headers"] == "x-forwarded-host"


def test_declared_vary_header_is_keyed(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/echo": echo_header})
    cache = build(
        app, {"/echo": {"ttl": 60, "vary": ["X-Forwarded-Host"]}}, store, clock
    )

    call(cache, "/echo", headers={"X-Forwarded-Host": "evil.example"})
    victim = call(cache, "/echo")
    again = call(cache, "/echo", headers={"X-Forwarded-Host": "evil.example"})

    assert victim.body == json_body(echo=None)
    assert again.body == json_body(echo="evil.example")
    assert app.count("/echo") == 2


def test_response_vary_keys_variants(store: Any, clock: FakeClock) -> None:
    def localized(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        language = environ.get("HTTP_ACCEPT_LANGUAGE", "en")
        return (
            "200 OK",
            [*JSON, ("Vary", "Accept-Language")],
            json_body(language=language),
        )

    app = CountingApp({"/hello": localized})
    cache = build(app, {"/hello": {"ttl": 60}}, store, clock)

    french = call(cache, "/hello", headers={"Accept-Language": "fr"})
    german = call(cache, "/hello", headers={"Accept-Language": "de"})
    french_again = call(cache, "/hello", headers={"Accept-Language": "fr"})

    assert french.body == json_body(language="fr")
    assert german.body == json_body(language="de")
    assert french_again.body == json_body(language="fr")
    assert (french_again.header("Cache-Status") or "").startswith("wsgishield; hit")
    assert app.count("/hello") == 2


def test_unkeyed_log_mode_still_stores(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/echo": echo_header})
    cache = build(app, {"/echo": {"ttl": 60}}, store, clock, unkeyed_headers="log")

    call(cache, "/echo", headers={"X-Forwarded-Host": "a"})
    call(cache, "/echo")

    assert app.count("/echo") == 1


def test_ignored_header_reads_allowed(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/echo": echo_header})
    cache = build(
        app, {"/echo": {"ttl": 60}}, store, clock, ignore_headers=["X-Forwarded-Host"]
    )

    call(cache, "/echo")
    call(cache, "/echo")

    assert app.count("/echo") == 1


# -- identity and bypass -------------------------------------------------------


def whoami(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    subject = environ[context.IDENTITY].subject
    return (
        "200 OK",
        [*JSON, ("Cache-Control", "private, max-age=30")],
        json_body(subject=subject),
    )


def test_per_identity_entries_apart(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/me": whoami})
    cache = build(app, {"/me": {"ttl": 60, "per_identity": True}}, store, clock)

    for _ in range(2):
        for subject in ("alice", "bob"):
            response = call(
                cache,
                "/me",
                headers={"Authorization": f"Bearer {subject}"},
                subject=subject,
            )
            assert response.body == json_body(subject=subject)
            assert "private" in (response.header("Cache-Control") or "")
    assert app.count("/me") == 2


def test_per_identity_without_identity_bypasses(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/me": lambda e: ("200 OK", JSON, b"{}")})
    cache = build(app, {"/me": {"ttl": 60, "per_identity": True}}, store, clock)

    first = call(cache, "/me")
    call(cache, "/me")

    assert "detail=no-identity" in (first.header("Cache-Status") or "")
    assert app.count("/me") == 2


def test_per_identity_public_directive_removed(store: Any, clock: FakeClock) -> None:
    app = CountingApp(
        {
            "/me": lambda e: (
                "200 OK",
                [("Cache-Control", "public, s-maxage=60, max-age=60")],
                b"{}",
            )
        }
    )
    cache = build(app, {"/me": {"ttl": 60, "per_identity": True}}, store, clock)

    response = call(cache, "/me", subject="alice")

    assert response.header("Cache-Control") == "private, max-age=60"


def test_cookie_bypasses_non_public(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    call(cache, "/q")
    with_cookie = call(cache, "/q", headers={"Cookie": "session=1"})

    assert "detail=cookie" in (with_cookie.header("Cache-Status") or "")
    assert app.count("/q") == 2


def test_public_route_serves_cookie_requests(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60, "public": True}}, store, clock)

    call(cache, "/q")
    call(cache, "/q", headers={"Cookie": "session=1"})

    assert app.count("/q") == 1


def test_public_route_app_gets_no_credentials(store: Any, clock: FakeClock) -> None:
    def view(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        return (
            "200 OK",
            JSON,
            json_body(
                cookie=environ.get("HTTP_COOKIE"),
                token=environ.get("HTTP_AUTHORIZATION"),
            ),
        )

    app = CountingApp({"/q": view})
    cache = build(app, {"/q": {"ttl": 60, "public": True}}, store, clock)

    alice = call(
        cache, "/q", headers={"Cookie": "session=alice", "Authorization": "Bearer a"}
    )
    anonymous = call(cache, "/q")

    assert alice.body == json_body(cookie=None, token=None)
    assert anonymous.body == json_body(cookie=None, token=None)
    assert app.count("/q") == 1


def test_range_request_bypasses(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    response = call(cache, "/q", headers={"Range": "bytes=0-1"})

    assert "detail=range" in (response.header("Cache-Status") or "")


def test_uncached_route_untouched(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/plain": numbered})
    cache = build(app, {"/plain": None}, store, clock)

    first = call(cache, "/plain")
    call(cache, "/plain")

    assert first.header("Cache-Status") is None
    assert app.count("/plain") == 2


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.example/../x", id="path-in-host"),
        pytest.param("x" * 400, id="huge-host"),
        pytest.param("", id="empty-host"),
    ],
)
def test_invalid_host_bypasses(store: Any, clock: FakeClock, host: str) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    response = call(cache, "/q", headers={"Host": host})

    assert response.status_code == 200
    assert "detail=invalid-host" in (response.header("Cache-Status") or "")


# -- freshness, validation and HEAD --------------------------------------------


def test_hit_has_age_and_cache_status(store: Any, clock: FakeClock) -> None:
    cache = build(CountingApp({"/q": numbered}), {"/q": {"ttl": 60}}, store, clock)

    miss = call(cache, "/q")
    clock.advance(5)
    hit = call(cache, "/q")

    assert miss.header("Cache-Status") == "wsgishield; fwd=miss; stored"
    assert miss.header("Age") is None
    assert hit.header("Age") == "5"
    assert hit.header("Cache-Status") == "wsgishield; hit; ttl=55"


def test_expired_entry_refetched(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 10}}, store, clock)

    call(cache, "/q")
    clock.advance(11)
    response = call(cache, "/q")

    assert response.body == json_body(call=2)


def test_max_age_from_response(store: Any, clock: FakeClock) -> None:
    app = CountingApp(
        {"/q": lambda e: ("200 OK", [("Cache-Control", "max-age=2")], b"x")}
    )
    cache = build(app, {"/q": {"ttl": 600}}, store, clock)

    call(cache, "/q")
    clock.advance(3)
    call(cache, "/q")

    assert app.count("/q") == 2


def test_if_none_match_gets_304(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    etag = call(cache, "/q").header("ETag")
    assert etag is not None
    revalidated = call(cache, "/q", headers={"If-None-Match": f'"other", W/{etag}'})
    changed = call(cache, "/q", headers={"If-None-Match": '"other"'})

    assert revalidated.status_code == 304
    assert revalidated.body == b""
    assert revalidated.header("ETag") == etag
    assert revalidated.header("Content-Type") is None
    assert changed.status_code == 200
    assert app.count("/q") == 1


def test_if_none_match_on_miss_answered_by_cache(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": lambda e: ("200 OK", [("ETag", '"v1"')], b"x")})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    response = call(cache, "/q", headers={"If-None-Match": '"v1"'})

    assert response.status_code == 304
    assert "HTTP_IF_NONE_MATCH" not in app.environs[0]


def test_if_modified_since(store: Any, clock: FakeClock) -> None:
    modified = "Tue, 01 Dec 2026 10:00:00 GMT"
    app = CountingApp({"/q": lambda e: ("200 OK", [("Last-Modified", modified)], b"x")})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock, etag=False)

    call(cache, "/q")
    later = call(
        cache, "/q", headers={"If-Modified-Since": "Wed, 02 Dec 2026 10:00:00 GMT"}
    )
    earlier = call(
        cache, "/q", headers={"If-Modified-Since": "Mon, 30 Nov 2026 10:00:00 GMT"}
    )
    garbage = call(cache, "/q", headers={"If-Modified-Since": "yesterday"})

    assert later.status_code == 304
    assert earlier.status_code == 200
    assert garbage.status_code == 200


def test_head_served_from_get_entry(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    head_miss = call(cache, "/q", method="HEAD")
    get_hit = call(cache, "/q")
    head_hit = call(cache, "/q", method="HEAD")

    assert head_miss.body == b""
    assert app.environs[0]["REQUEST_METHOD"] == "GET"
    assert get_hit.body == json_body(call=1)
    assert head_hit.body == b""
    assert head_hit.header("Content-Length") == get_hit.header("Content-Length")
    assert app.count("/q") == 1


def test_404_uses_negative_ttl(store: Any, clock: FakeClock) -> None:
    app = CountingApp({})
    cache = build(app, {"/missing": {"ttl": 600}}, store, clock, negative_ttl=5)

    call(cache, "/missing")
    call(cache, "/missing")
    clock.advance(6)
    call(cache, "/missing")

    assert app.count("/missing") == 2


def test_large_body_streamed_not_stored(store: Any, clock: FakeClock) -> None:
    chunks = [b"x" * 1000] * 5

    def streaming(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield from chunks

    cache = build(streaming, {"/big": {"ttl": 60}}, store, clock, max_entry_bytes=2500)

    first = call(cache, "/big")
    second = call(cache, "/big")

    assert first.body == b"".join(chunks)
    assert "detail=too-large" in (second.header("Cache-Status") or "")


def test_unstorable_stream_not_buffered(store: Any, clock: FakeClock) -> None:
    pulled: list[int] = []

    def events_stream(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Cache-Control", "no-store")])

        def body() -> Iterator[bytes]:
            for number in range(3):
                pulled.append(number)
                yield b"data: %d\n\n" % number

        return body()

    cache = build(events_stream, {"/events": {"ttl": 60}}, store, clock)
    result = cache(make_environ("GET", "/events"), lambda *args: None)

    assert pulled == []
    assert b"".join(result) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_large_content_length_not_buffered(store: Any, clock: FakeClock) -> None:
    pulled: list[int] = []

    def download(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "10000")])

        def body() -> Iterator[bytes]:
            pulled.append(1)
            yield b"x" * 10000

        return body()

    cache = build(download, {"/file": {"ttl": 60}}, store, clock, max_entry_bytes=1000)
    result = cache(make_environ("GET", "/file"), lambda *args: None)

    assert pulled == []
    assert len(b"".join(result)) == 10000


def test_passthrough_closes_app_iterable(store: Any, clock: FakeClock) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x" * 100

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("500 Internal Server Error", [])
        return Body()

    cache = build(app, {"/q": {"ttl": 60}}, store, clock)
    call(cache, "/q")

    assert closed == [True]


def test_tag_header_removed_downstream(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": lambda e: ("200 OK", [("Surrogate-Key", "a b")], b"x")})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)

    miss = call(cache, "/q")
    hit = call(cache, "/q")

    assert miss.header("Surrogate-Key") is None
    assert hit.header("Surrogate-Key") is None


# -- invalidation, tags and versions -------------------------------------------


def test_unsafe_request_invalidates_uri(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/orders": numbered})
    cache = build(app, {"/orders": {"ttl": 60}}, store, clock)

    call(cache, "/orders")
    call(cache, "/orders", method="POST")
    after = call(cache, "/orders")

    assert after.body == json_body(call=3)


def test_failed_unsafe_request_keeps_entry(store: Any, clock: FakeClock) -> None:
    def orders(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            return "422 Unprocessable Content", JSON, b"{}"
        return numbered(environ)

    app = CountingApp({"/orders": orders})
    cache = build(app, {"/orders": {"ttl": 60}}, store, clock)

    call(cache, "/orders")
    call(cache, "/orders", method="POST")
    after = call(cache, "/orders")

    assert after.body == json_body(call=1)


def test_location_invalidated(store: Any, clock: FakeClock) -> None:
    def create(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        return (
            "201 Created",
            [
                ("Location", "http://api.example/orders/7"),
                ("Content-Location", "https://elsewhere.example/orders"),
            ],
            b"",
        )

    app = CountingApp({"/orders": create, "/orders/7": numbered})
    cache = build(app, {"/orders/7": {"ttl": 60}, "/orders": None}, store, clock)

    call(cache, "/orders/7")
    call(cache, "/orders", method="POST")
    after = call(cache, "/orders/7")

    assert after.body == json_body(call=2)


def test_purge_by_tag(store: Any, clock: FakeClock) -> None:
    def order(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        return (
            "200 OK",
            [("Surrogate-Key", "order:7")],
            json_body(call=environ["test.call_number"]),
        )

    app = CountingApp({"/orders/7": order, "/orders/8": numbered})
    cache = build(app, {"/orders/*": {"ttl": 60, "tags": ["orders"]}}, store, clock)

    call(cache, "/orders/7")
    call(cache, "/orders/8")
    assert cache.purge("order:7") == 1
    call(cache, "/orders/7")
    call(cache, "/orders/8")
    assert app.count("/orders/7") == 2
    assert app.count("/orders/8") == 1

    assert cache.purge("orders") == 2
    call(cache, "/orders/8")
    assert app.count("/orders/8") == 2


def test_app_purges_through_environ(store: Any, clock: FakeClock) -> None:
    def update(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        environ[context.CACHE].purge("catalog")
        return "204 No Content", [], b""

    app = CountingApp({"/catalog": numbered, "/admin/reindex": update})
    cache = build(
        app,
        {"/catalog": {"ttl": 60, "tags": ["catalog"]}, "/admin/reindex": None},
        store,
        clock,
    )

    call(cache, "/catalog")
    call(cache, "/admin/reindex", method="POST")
    after = call(cache, "/catalog")

    assert after.body == json_body(call=2)


def test_version_bump_starts_empty(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    rules = {"/q": {"ttl": 60}}

    call(build(app, rules, store, clock, version="1"), "/q")
    call(build(app, rules, store, clock, version="1"), "/q")
    call(build(app, rules, store, clock, version="2"), "/q")

    assert app.count("/q") == 2


# -- stale-while-revalidate and stale-if-error ---------------------------------


def test_stale_while_revalidate_one_refresh(store: Any, clock: FakeClock) -> None:
    release = threading.Event()

    def slow(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["test.call_number"] > 1:
            release.wait(10)
        return numbered(environ)

    app = CountingApp({"/q": slow})
    cache = build(app, {"/q": {"ttl": 10, "stale_while_revalidate": 60}}, store, clock)

    call(cache, "/q")
    clock.advance(15)
    stale = [call(cache, "/q") for _ in range(5)]
    release.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = call(cache, "/q")
        if fresh.body == json_body(call=2) and not cache._refreshing:
            break
        time.sleep(0.01)

    assert all(response.body == json_body(call=1) for response in stale)
    assert "detail=stale-while-revalidate" in (stale[0].header("Cache-Status") or "")
    assert fresh.body == json_body(call=2)
    assert app.count("/q") == 2


def wait_for_refreshes(cache: Any) -> None:
    deadline = time.monotonic() + 10
    while cache._refreshing and time.monotonic() < deadline:
        time.sleep(0.01)


def test_stale_lookup_after_refresh_calls_app_once(
    store: Any, clock: FakeClock
) -> None:
    # A request that read the stale entry just before another refresh stored
    # a fresh one and released its slot must not refresh a second time.
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 10, "stale_while_revalidate": 60}}, store, clock)
    call(cache, "/q")
    clock.advance(15)

    lookup = cache._lookup
    stale_lookups: list[Any] = []

    def remembering(*args: Any) -> Any:
        result = lookup(*args)
        stale_lookups.append(result)
        return result

    cache._lookup = remembering
    call(cache, "/q")
    wait_for_refreshes(cache)
    cache._lookup = lambda *args: stale_lookups[0]
    late = call(cache, "/q")
    wait_for_refreshes(cache)

    assert "detail=stale-while-revalidate" in (late.header("Cache-Status") or "")
    assert app.count("/q") == 2


def test_stale_if_error_replaces_500(store: Any, clock: FakeClock) -> None:
    def failing(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["test.call_number"] > 1:
            return "500 Internal Server Error", JSON, b"{}"
        return numbered(environ)

    cache = build(
        CountingApp({"/q": failing}),
        {"/q": {"ttl": 10, "stale_if_error": 60}},
        store,
        clock,
    )

    call(cache, "/q")
    clock.advance(20)
    served = call(cache, "/q")
    clock.advance(60)
    too_old = call(cache, "/q")

    assert served.status_code == 200
    assert "detail=stale-if-error" in (served.header("Cache-Status") or "")
    assert too_old.status_code == 500


def test_stale_if_error_replaces_exception(store: Any, clock: FakeClock) -> None:
    def raising(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["test.call_number"] > 1:
            raise RuntimeError("database down")
        return numbered(environ)

    cache = build(
        CountingApp({"/q": raising}),
        {"/q": {"ttl": 10, "stale_if_error": 60}},
        store,
        clock,
    )

    call(cache, "/q")
    clock.advance(20)
    served = call(cache, "/q")

    assert served.status_code == 200


def test_must_revalidate_disables_stale(store: Any, clock: FakeClock) -> None:
    def failing(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["test.call_number"] > 1:
            return "503 Service Unavailable", JSON, b"{}"
        return "200 OK", [("Cache-Control", "max-age=10, must-revalidate")], b"x"

    cache = build(
        CountingApp({"/q": failing}),
        {"/q": {"ttl": 10, "stale_if_error": 60}},
        store,
        clock,
    )

    call(cache, "/q")
    clock.advance(20)

    assert call(cache, "/q").status_code == 503


# -- concurrency in one process ------------------------------------------------


def test_concurrent_misses_call_app_once(store: Any, clock: FakeClock) -> None:
    def slow(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        time.sleep(0.2)
        return numbered(environ)

    app = CountingApp({"/q": slow})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)
    barrier = threading.Barrier(20)
    bodies: list[bytes] = []

    def worker() -> None:
        barrier.wait()
        bodies.append(call(cache, "/q").body)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert app.count("/q") == 1
    assert bodies == [json_body(call=1)] * 20


# -- explain -------------------------------------------------------------------


def test_explain_never_stores_or_purges(store: Any, clock: FakeClock) -> None:
    app = CountingApp({"/q": numbered})
    cache = build(app, {"/q": {"ttl": 60}}, store, clock)
    call(cache, "/q")

    trace: list[Any] = []
    environ = make_environ("POST", "/q")
    environ[context.TRACE] = trace
    b"".join(cache(environ, lambda *args: None))
    miss_trace: list[Any] = []
    fresh = make_environ("GET", "/q", query="page=9")
    fresh[context.TRACE] = miss_trace
    b"".join(cache(fresh, lambda *args: None))
    hit = call(cache, "/q")
    after = call(cache, "/q?page=9")

    assert (hit.header("Cache-Status") or "").startswith("wsgishield; hit")
    assert trace[0][:2] == ("cache", "not invalidated while explaining")
    assert miss_trace[0][:2] == ("cache", "miss")
    assert "fwd=miss; stored" in (after.header("Cache-Status") or "")


# -- the policy path -----------------------------------------------------------


def test_shield_builds_cache_from_policy() -> None:
    app = CountingApp({"/q": numbered})
    shield = Shield(
        app, {"cache": {}, "routes": [{"id": "q", "path": "/q", "cache": {"ttl": 30}}]}
    )

    call(shield, "/q")
    hit = call(shield, "/q")

    assert app.count("/q") == 1
    assert (hit.header("Cache-Status") or "").startswith("wsgishield; hit")


def test_shield_without_cache_section() -> None:
    app = CountingApp({"/q": numbered})
    shield = Shield(app, {"routes": [{"id": "q", "path": "/q", "cache": {"ttl": 30}}]})

    call(shield, "/q")
    call(shield, "/q")

    assert app.count("/q") == 2


def test_shield_with_redis_store(shared_redis_server: RedisServer) -> None:
    app = CountingApp({"/q": numbered})
    policy = {
        "redis": {
            "url": shared_redis_server.url,
            "key_prefix": "policy-test",
            "timeout_ms": 1000,
        },
        "cache": {"store": "redis", "local_bytes": 65536},
        "routes": [{"id": "q", "path": "/q", "cache": {"ttl": 30}}],
    }
    first = Shield(app, policy)
    second = Shield(app, policy)

    try:
        call(first, "/q")
        hit = call(second, "/q")
    finally:
        for shield in (first, second):
            close_store(shield.layers[-1].store)

    assert app.count("/q") == 1
    assert (hit.header("Cache-Status") or "").startswith("wsgishield; hit")


test_shield_with_redis_store = pytest.mark.redis(test_shield_with_redis_store)


# -- hostile requests ----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        pytest.param("/q?" + "a=1&" * 5000, {}, id="huge-query"),
        pytest.param("/q?%ff%fe=%00", {}, id="binary-query"),
        pytest.param("/q", {"If-None-Match": "W/" * 1000}, id="garbage-if-none-match"),
        pytest.param("/q", {"If-None-Match": ","}, id="empty-etag-list"),
        pytest.param("/q", {"If-Modified-Since": "\x00" * 100}, id="garbage-date"),
        pytest.param(
            "/q", {"If-Modified-Since": "Mon, 99 Foo 99999 99:99:99 GMT"}, id="bad-date"
        ),
        pytest.param("/q", {"Accept-Language": "x" * 8000}, id="huge-vary-value"),
        pytest.param("/q", {"Host": "api.example:99999999"}, id="huge-port"),
        pytest.param("/q", {"Host": "[::1"}, id="broken-ipv6"),
        pytest.param("/q?a=\udcff", {}, id="surrogate-in-query"),
        pytest.param("/q", {"Accept-Language": "\udcff"}, id="surrogate-in-header"),
    ],
)
def test_hostile_request_never_fails(
    store: Any, clock: FakeClock, target: str, headers: dict[str, str]
) -> None:
    def localized(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        return "200 OK", [("Vary", "Accept-Language")], b"x"

    cache = build(CountingApp({"/q": localized}), {"/q": {"ttl": 60}}, store, clock)

    for _ in range(2):
        response = call(cache, target, headers=headers)
        assert response.status_code in (200, 304)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Vary", ", , ,")], id="empty-vary-items"),
        pytest.param(
            [("Vary", ",".join(f"X-H{n}" for n in range(200)))], id="many-vary-names"
        ),
        pytest.param(
            [("Cache-Control", "max-age=99999999999999999999")], id="huge-max-age"
        ),
        pytest.param([("Cache-Control", "max-age=-5")], id="negative-max-age"),
        pytest.param([("Cache-Control", "=,=,max-age")], id="broken-cache-control"),
        pytest.param([("Surrogate-Key", "{x} \x00 " + "t" * 5000)], id="odd-tags"),
        pytest.param([("ETag", "")], id="empty-etag"),
    ],
)
def test_odd_app_headers_never_fail(
    store: Any, clock: FakeClock, headers: list[tuple[str, str]]
) -> None:
    cache = build(
        CountingApp({"/q": lambda e: ("200 OK", headers, b"x")}),
        {"/q": {"ttl": 60}},
        store,
        clock,
    )

    for _ in range(2):
        assert call(cache, "/q").status_code == 200
    assert cache.purge("unknown-tag") == 0


@pytest.mark.redis
def test_stale_refresh_once_across_processes(
    shared_redis_server: RedisServer, clock: FakeClock
) -> None:
    release = threading.Event()

    def slow(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        if environ["test.call_number"] > 1:
            release.wait(10)
        return numbered(environ)

    app = CountingApp({"/q": slow})
    rules = {"/q": {"ttl": 10, "stale_while_revalidate": 60}}
    first_store = make_store("redis", shared_redis_server, clock)
    # A second store object on the same keys, as another process would have.
    second_store = make_store("redis", shared_redis_server, clock)
    second_store.prefix = first_store.prefix
    caches = [
        build(app, rules, first_store, clock),
        build(app, rules, second_store, clock),
    ]
    try:
        call(caches[0], "/q")
        clock.advance(15)
        for _ in range(3):
            for cache in caches:
                assert call(cache, "/q").body == json_body(call=1)
        release.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            cache._refreshing for cache in caches
        ):
            time.sleep(0.01)
    finally:
        release.set()
        close_store(first_store)
        close_store(second_store)

    assert app.count("/q") == 2
