from __future__ import annotations

import gzip
import logging
from typing import Any

import flask
import pytest

from tests.support.wsgi import EchoApp, call, make_environ
from wsgishield import ConfigurationError, Shield, context
from wsgishield.security_headers import PROFILES, HeaderProfile

HEADERS = {"headers": {}}
API_NAMES = {name.lower() for name, _ in PROFILES["api"]}
HSTS = "Strict-Transport-Security"


def app_with_headers(headers: list[tuple[str, str]], status: str = "200 OK") -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"{}"]

    return app


def test_api_profile_on_app_response() -> None:
    response = call(Shield(EchoApp(), policy=HEADERS), make_environ())

    assert response.header_names() >= API_NAMES
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert (
        response.header("Content-Security-Policy")
        == "default-src 'none'; frame-ancestors 'none'"
    )
    assert response.header("Cache-Control") is None


def test_html_profile_adds_document_policies() -> None:
    response = call(
        Shield(EchoApp(), policy={"headers": {"profile": "html"}}), make_environ()
    )

    assert "default-src 'self'" in (response.header("Content-Security-Policy") or "")
    assert response.header("Cross-Origin-Embedder-Policy") == "require-corp"
    assert "camera=()" in (response.header("Permissions-Policy") or "")


def test_route_profile_override() -> None:
    policy = {
        "headers": {},
        "routes": [
            {"id": "pages", "path": "/pages/**", "headers": {"profile": "html"}}
        ],
    }
    wrapped = Shield(EchoApp(), policy=policy)

    page = call(wrapped, make_environ("GET", "/pages/home"))
    api = call(wrapped, make_environ("GET", "/api/items"))

    assert page.header("Cross-Origin-Embedder-Policy") == "require-corp"
    assert api.header("Cross-Origin-Embedder-Policy") is None


# HSTS follows the scheme resolved through trusted proxies only.
@pytest.mark.parametrize(
    ("client", "remote_addr", "scheme", "forwarded_proto", "expected"),
    [
        pytest.param(
            {}, "203.0.113.9", "http", "https", False, id="untrusted-peer-claims-https"
        ),
        pytest.param({}, "203.0.113.9", "https", None, True, id="direct-https"),
        pytest.param({}, "203.0.113.9", "http", None, False, id="plain-http"),
        pytest.param(
            {"trusted_proxies": ["loopback"]},
            "127.0.0.1",
            "http",
            "https",
            True,
            id="trusted-proxy-https",
        ),
        pytest.param(
            {"trusted_proxies": ["loopback"]},
            "127.0.0.1",
            "http",
            "http",
            False,
            id="trusted-proxy-http",
        ),
        pytest.param(
            {"trusted_proxies": ["loopback"]},
            "203.0.113.9",
            "http",
            "https",
            False,
            id="untrusted-with-trust-configured",
        ),
    ],
)
def test_hsts_only_on_effective_https(
    client: dict[str, Any],
    remote_addr: str,
    scheme: str,
    forwarded_proto: str | None,
    expected: bool,
) -> None:
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
    headers["X-Forwarded-For"] = "198.51.100.1"
    environ = make_environ(
        "GET", "/", headers=headers, remote_addr=remote_addr, scheme=scheme
    )

    response = call(
        Shield(EchoApp(), policy={"client": client, "headers": {}}), environ
    )

    assert (response.header(HSTS) is not None) is expected


def test_hsts_value_and_preload_rules() -> None:
    environ = make_environ(scheme="https")
    policy = {"headers": {"hsts_max_age": 63_072_000, "hsts_preload": True}}

    response = call(Shield(EchoApp(), policy=policy), environ)

    assert response.header(HSTS) == "max-age=63072000; includeSubDomains; preload"
    with pytest.raises(ConfigurationError):
        Shield(
            EchoApp(),
            policy={
                "headers": {"hsts_preload": True, "hsts_include_subdomains": False}
            },
        )


def test_hsts_disabled_with_zero_age() -> None:
    response = call(
        Shield(EchoApp(), policy={"headers": {"hsts_max_age": 0}}),
        make_environ(scheme="https"),
    )

    assert response.header(HSTS) is None


# Fingerprinting headers and the app's own values.
def test_fingerprinting_headers_removed() -> None:
    app = app_with_headers(
        [
            ("Server", "Werkzeug/3.0"),
            ("x-powered-by", "Flask"),
            ("Content-Type", "text/plain"),
        ]
    )

    response = call(Shield(app, policy=HEADERS), make_environ())

    assert "server" not in response.header_names()
    assert "x-powered-by" not in response.header_names()
    assert response.header("Content-Type") == "text/plain"


def test_app_value_wins_over_profile() -> None:
    app = app_with_headers(
        [("Content-Security-Policy", "default-src 'self' cdn.example")]
    )

    response = call(Shield(app, policy=HEADERS), make_environ())

    csp = [
        value for name, value in response.headers if name == "Content-Security-Policy"
    ]
    assert csp == ["default-src 'self' cdn.example"]


def test_extra_headers_added() -> None:
    policy = {
        "headers": {
            "extra": {
                "X-Frame-Options": "SAMEORIGIN",
                "Reporting-Endpoints": 'csp="/csp"',
            }
        }
    }

    response = call(Shield(EchoApp(), policy=policy), make_environ())

    assert response.header("X-Frame-Options") == "SAMEORIGIN"
    assert response.header("Reporting-Endpoints") == 'csp="/csp"'


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"extra": {"X-Evil": "a\r\nSet-Cookie: x=1"}}, id="crlf-in-value"),
        pytest.param({"extra": {"Bad Name": "x"}}, id="space-in-name"),
        pytest.param(
            {"content_security_policy": "default-src 'self'\n"}, id="newline-in-csp"
        ),
        pytest.param({"remove": ["Server:"]}, id="colon-in-remove"),
        pytest.param(
            {"extra": {"strict-transport-security": "max-age=1"}}, id="hsts-in-extra"
        ),
    ],
)
def test_invalid_header_configuration(headers: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Shield(EchoApp(), policy={"headers": headers})


def test_app_header_list_not_mutated() -> None:
    shared = [("Content-Type", "text/plain")]
    wrapped = Shield(app_with_headers(shared), policy=HEADERS)

    for _ in range(3):
        call(wrapped, make_environ())

    assert shared == [("Content-Type", "text/plain")]


# Cache-Control on authenticated responses.
def with_identity(app: Any) -> Any:
    """Stand in for the authentication layer, which sits inside the headers layer."""

    def authenticate(environ: dict[str, Any], start_response: Any) -> Any:
        environ[context.IDENTITY] = "user-1"
        return app(environ, start_response)

    return authenticate


@pytest.mark.parametrize(
    ("request_headers", "authenticated_by_layer", "expected"),
    [
        pytest.param({}, False, "public, max-age=60", id="anonymous"),
        pytest.param(
            {"Authorization": "Bearer x"}, False, "no-store", id="authorization-header"
        ),
        pytest.param({}, True, "no-store", id="identity-from-auth-layer"),
    ],
)
def test_authenticated_response_not_stored(
    request_headers: dict[str, str], authenticated_by_layer: bool, expected: str
) -> None:
    app = app_with_headers([("Cache-Control", "public, max-age=60")])
    if authenticated_by_layer:
        app = with_identity(app)

    response = call(
        Shield(app, policy=HEADERS), make_environ("GET", "/", headers=request_headers)
    )

    values = [
        value for name, value in response.headers if name.lower() == "cache-control"
    ]
    assert values == [expected]


def test_route_cache_policy_keeps_app_value() -> None:
    policy = {
        "headers": {},
        "routes": [
            {"id": "me", "path": "/me", "headers": {"authenticated_cache": "app"}}
        ],
    }
    app = app_with_headers([("Cache-Control", "private, max-age=30")])

    response = call(
        Shield(app, policy=policy),
        make_environ("GET", "/me", headers={"Authorization": "Bearer x"}),
    )

    assert response.header("Cache-Control") == "private, max-age=30"


# Every rejection the shield can produce, and the app's errors.
REQUEST_POLICY = {
    "headers": {},
    "request": {
        "max_body": 100,
        "max_headers": 20,
        "content_types": ["application/json", "application/octet-stream"],
    },
    "routes": [
        {
            "id": "orders",
            "path": "/orders",
            "request": {"schema": "tests.apps.schemas:NewOrder"},
        },
    ],
}
JSON = {"Content-Type": "application/json"}
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.mark.parametrize(
    ("environ", "status"),
    [
        pytest.param(
            make_environ("POST", "/", body=b"x", content_length="x", headers=JSON),
            400,
            id="400-framing",
        ),
        pytest.param(
            make_environ("POST", "/", body=b"[" * 80, headers=JSON),
            400,
            id="400-json-depth",
        ),
        pytest.param(make_environ("TRACE", "/"), 405, id="405"),
        pytest.param(
            make_environ(
                "POST", "/", body=b"[]", chunked=True, terminated=False, headers=JSON
            ),
            411,
            id="411",
        ),
        pytest.param(
            make_environ("POST", "/", body=b"[" + b"1," * 60 + b"1]", headers=JSON),
            413,
            id="413",
        ),
        pytest.param(make_environ("GET", "/" + "a" * 9000), 414, id="414"),
        pytest.param(
            make_environ(
                "POST", "/", body=b"x", headers={"Content-Type": "text/plain"}
            ),
            415,
            id="415-type",
        ),
        pytest.param(
            make_environ(
                "POST",
                "/",
                body=gzip.compress(b"[]"),
                headers={**JSON, "Content-Encoding": "gzip"},
            ),
            415,
            id="415-coding",
        ),
        pytest.param(
            make_environ("POST", "/orders", body=b'{"customerId": "x"}', headers=JSON),
            422,
            id="422",
        ),
        pytest.param(
            make_environ(
                "GET", "/", headers={f"X-H{index}": "1" for index in range(30)}
            ),
            431,
            id="431",
        ),
        pytest.param(
            make_environ("POST", "/", body=b"x" * 101, chunked=True, headers=OCTETS),
            413,
            id="413-streamed",
        ),
        pytest.param(
            make_environ(
                "POST", "/", body=b"x" * 10, content_length="50", headers=OCTETS
            ),
            400,
            id="400-incomplete",
        ),
    ],
)
def test_every_rejection_carries_profile(environ: dict[str, Any], status: int) -> None:
    response = call(
        Shield(EchoApp(), policy=REQUEST_POLICY),
        dict(environ, **{"wsgi.input": _fresh(environ)}),
    )

    assert response.status_code == status
    assert response.header_names() >= API_NAMES
    assert response.header("Content-Type") == "application/problem+json"


def _fresh(environ: dict[str, Any]) -> Any:
    """Give each run its own copy of the parametrised body stream."""
    import io

    stream = environ["wsgi.input"]
    position = stream.tell()
    stream.seek(0)
    data = stream.read()
    stream.seek(position)
    return io.BytesIO(data)


def test_app_exception_becomes_500_with_profile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("database is down")

    with caplog.at_level(logging.ERROR, logger="wsgishield.middleware.headers"):
        response = call(Shield(broken, policy=HEADERS), make_environ())

    assert response.status_code == 500
    assert response.header_names() >= API_NAMES
    assert b"database" not in response.body
    assert caplog.records[-1].exc_info is not None


def test_flask_500_carries_profile() -> None:
    flask_app = flask.Flask(__name__)

    @flask_app.get("/")
    def index() -> str:
        raise RuntimeError("boom")

    response = call(Shield(flask_app.wsgi_app, policy=HEADERS), make_environ())

    assert response.status_code == 500
    assert response.header_names() >= API_NAMES


def test_exception_after_start_response_reraises() -> None:
    def late(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        raise RuntimeError("after start")

    sent: list[str] = []

    def server_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if exc_info is not None and sent:
            # The server has sent the first status already (PEP 3333).
            raise exc_info[1]
        sent.append(status)
        return lambda data: None

    with pytest.raises(RuntimeError, match="after start"):
        Shield(late, policy=HEADERS)(make_environ(), server_start_response)


def test_catch_errors_off_propagates() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        call(
            Shield(broken, policy={"headers": {"catch_errors": False}}), make_environ()
        )


def test_profile_variants_precomputed() -> None:
    profile = HeaderProfile("api", hsts="max-age=1")

    assert profile.variant(False, False).added == list(PROFILES["api"])
    assert profile.variant(True, False).added[-1] == (HSTS, "max-age=1")
    assert profile.variant(True, True).added[-1] == ("Cache-Control", "no-store")
    assert profile.variant(False, True) is profile.variant(False, True)


def test_extra_replaces_profile_header_any_case() -> None:
    policy = {"headers": {"extra": {"x-frame-options": "SAMEORIGIN"}}}

    response = call(Shield(EchoApp(), policy=policy), make_environ())

    values = [
        value for name, value in response.headers if name.lower() == "x-frame-options"
    ]
    assert values == ["SAMEORIGIN"]


def test_extra_cache_control_yields_to_no_store() -> None:
    policy = {"headers": {"extra": {"Cache-Control": "max-age=60"}}}
    wrapped = Shield(EchoApp(), policy=policy)

    anonymous = call(wrapped, make_environ())
    authenticated = call(wrapped, make_environ(headers={"Authorization": "Bearer x"}))

    def cache_control(response: Any) -> list[str]:
        return [
            value for name, value in response.headers if name.lower() == "cache-control"
        ]

    assert cache_control(anonymous) == ["max-age=60"]
    assert cache_control(authenticated) == ["no-store"]


def test_remove_drops_profile_header() -> None:
    policy = {"headers": {"remove": ["Server", "x-frame-options"]}}

    response = call(Shield(EchoApp(), policy=policy), make_environ(scheme="https"))

    assert "x-frame-options" not in response.header_names()
    assert response.header(HSTS) is not None
