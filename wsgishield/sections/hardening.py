"""Policy sections of the request-limit and security-header layers."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._options import STRUCT_OPTIONS as _STRUCT_OPTIONS

__all__ = [
    "HeadersPolicy",
    "RequestPolicy",
    "RouteHeaders",
    "RouteRequest",
]


_Method = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{1,20}$")]
_MEDIA_RANGE = r"^[a-z0-9!#$&^_.+-]+/(\*|[a-z0-9!#$&^_.+-]+)$"
_MediaRange = Annotated[str, msgspec.Meta(pattern=_MEDIA_RANGE)]
_Bytes = Annotated[int, msgspec.Meta(ge=0, le=1 << 40)]


class RequestPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Request limits for every request (see :mod:`wsgishield.request_limits`).

    Routes override single keys with their ``request`` table.
    """

    #: Methods accepted; others get 405 with ``Allow``. TRACE and CONNECT are
    #: left out because an API has no use for them.
    methods: list[_Method] = msgspec.field(
        default_factory=lambda: [
            "GET",
            "HEAD",
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "OPTIONS",
        ]
    )
    #: Maximum length of the request target (path and query) in bytes; longer gets 414.
    max_url_bytes: Annotated[int, msgspec.Meta(ge=64, le=1_048_576)] = 8192
    #: Maximum number of header fields; more gets 431.
    max_headers: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    #: Maximum bytes of all header names and values together; more gets 431.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=256, le=1_048_576)] = 32768
    #: Maximum body size in bytes, on the wire and after decompression; more gets 413.
    max_body: _Bytes = 1_048_576
    #: Media types a body may have (``type/*`` allowed); empty accepts any.
    content_types: list[_MediaRange] = []
    #: Maximum JSON nesting depth accepted before any decoder runs.
    json_max_depth: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    #: Maximum number of JSON tokens (values and keys) accepted before any decoder runs.
    json_max_tokens: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 200_000
    #: Inflate ``Content-Encoding: gzip`` or ``deflate`` bodies. When off,
    #: such bodies get 415.
    decompress: bool = False
    #: Maximum inflated-to-compressed size ratio; more gets 413.
    max_inflate_ratio: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100


class RouteRequest(msgspec.Struct, **_STRUCT_OPTIONS):
    """A route's request limits; unset keys keep the global value."""

    methods: list[_Method] | None = None
    max_url_bytes: Annotated[int, msgspec.Meta(ge=64, le=1_048_576)] | None = None
    max_headers: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    max_header_bytes: Annotated[int, msgspec.Meta(ge=256, le=1_048_576)] | None = None
    max_body: _Bytes | None = None
    content_types: list[_MediaRange] | None = None
    #: A ``msgspec.Struct`` that JSON bodies must decode to, as ``"module:Name"``.
    schema: Annotated[str, msgspec.Meta(pattern=r"^[\w.]+:[\w.]+$")] | None = None
    json_max_depth: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    json_max_tokens: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] | None = None
    decompress: bool | None = None
    max_inflate_ratio: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


class HeadersPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Security headers on every response (see :mod:`wsgishield.security_headers`)."""

    #: ``api`` for JSON APIs, ``html`` for pages (adds a CSP for documents).
    profile: Literal["api", "html"] = "api"
    #: ``Strict-Transport-Security`` max-age in seconds, sent on https only.
    #: 0 disables it.
    hsts_max_age: Annotated[int, msgspec.Meta(ge=0, le=63_072_000)] = 31_536_000
    hsts_include_subdomains: bool = True
    hsts_preload: bool = False
    #: Replaces the profile's Content-Security-Policy.
    content_security_policy: str | None = None
    #: Extra response headers to add, or to replace a profile header's value.
    extra: dict[str, str] = {}
    #: Response headers to remove because they fingerprint the stack.
    remove: list[str] = msgspec.field(
        default_factory=lambda: ["Server", "X-Powered-By"]
    )
    #: Send ``Cache-Control: no-store`` on authenticated responses.
    no_store_authenticated: bool = True
    #: Answer an exception the app raises before responding with a 500
    #: problem that carries the profile headers, logging the traceback.
    catch_errors: bool = True


class RouteHeaders(msgspec.Struct, **_STRUCT_OPTIONS):
    """A route's security headers; unset keys keep the global value."""

    profile: Literal["api", "html"] | None = None
    #: ``app`` keeps the app's own ``Cache-Control`` on authenticated
    #: responses, for routes whose cache policy allows private caching.
    authenticated_cache: Literal["no-store", "app"] | None = None
