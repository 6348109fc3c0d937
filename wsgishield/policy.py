"""The policy: one validated description of what every layer does.

A policy comes from a TOML file, a mapping with the same shape, or the
structs below built in Python. It is decoded and validated once, at start-up;
a mistake raises :class:`~wsgishield.errors.ConfigurationError` that names the
key path and the bad value. Unknown keys are errors too, so a misspelt
setting never silently falls back to its default.

An empty policy is valid and trusts nothing: the peer address is the client,
no route rules apply, and only the layers a section enables do any work.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .errors import ConfigurationError
from .problem import PROBLEM_TYPE_BASE

__all__ = [
    "ClientPolicy",
    "HeadersPolicy",
    "Policy",
    "RedisSettings",
    "RequestPolicy",
    "RouteHeaders",
    "RouteRequest",
    "RouteRule",
    "load_policy",
]

_STRUCT_OPTIONS: dict[str, Any] = {
    "forbid_unknown_fields": True,
    "frozen": True,
    "kw_only": True,
}


class ClientPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Client address resolution settings (see :mod:`wsgishield.client`)."""

    #: CIDRs or presets (``loopback``, ``private``, ``cloudflare``) whose
    #: forwarding headers are believed. Empty: no header is ever read.
    trusted_proxies: list[str] = []
    #: The one forwarding header to read from a trusted peer.
    source: Literal["x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip"] = (
        "x-forwarded-for"
    )
    #: 0 walks the list from the right past trusted proxies; N takes the N-th
    #: address from the right.
    hops: Annotated[int, msgspec.Meta(ge=0, le=32)] = 0
    #: Longer forwarding headers are ignored as invalid.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=64, le=1_048_576)] = 8192
    #: A file with Cloudflare's ranges; the packaged snapshot when unset.
    cloudflare_ranges: str | None = None
    #: Take the scheme from ``X-Forwarded-Proto`` or ``Forwarded: proto=``
    #: when the peer is trusted.
    forwarded_proto: bool = True
    #: Also write the resolved address to ``REMOTE_ADDR`` for the app, keeping
    #: the original in ``wsgishield.client``.
    set_remote_addr: bool = False


class RedisSettings(msgspec.Struct, **_STRUCT_OPTIONS):
    """Connection to the Redis deployment that stores shared state.

    ``WSGISHIELD_REDIS_URL`` in the environment overrides ``url``, so the
    policy file need not carry credentials.
    """

    #: ``single``: one server at ``url``; ``sentinel``: ask ``sentinels`` for
    #: the master of ``service_name``; ``cluster``: Redis Cluster seeded at ``url``.
    mode: Literal["single", "sentinel", "cluster"] = "single"
    url: Annotated[str, msgspec.Meta(pattern=r"^(redis|rediss|unix)://")] = (
        "redis://127.0.0.1:6379/0"
    )
    #: ``HOST:PORT`` of each sentinel (IPv6 hosts in brackets).
    sentinels: list[
        Annotated[
            str, msgspec.Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}$")
        ]
    ] = []
    service_name: str = "mymaster"
    #: Hard timeout of one command, in milliseconds.
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 10
    #: Prefix of every key wsgishield writes.
    key_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")] = (
        "wsgishield"
    )


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
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"
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


class RouteRule(msgspec.Struct, **_STRUCT_OPTIONS):
    """One route rule; later rules only apply when earlier ones do not match."""

    #: Stable name used in logs, metrics and ``explain``.
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    #: Path pattern (see :mod:`wsgishield.routes`).
    path: str
    #: HTTP methods the rule applies to; empty means all.
    methods: list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{1,20}$")]] = []
    #: Request limits for this route.
    request: RouteRequest | None = None
    #: Security headers for this route.
    headers: RouteHeaders | None = None


class Policy(msgspec.Struct, **_STRUCT_OPTIONS):
    """The whole policy."""

    client: ClientPolicy = ClientPolicy()
    #: Shared-state connection, used by the layers whose store is ``redis``.
    redis: RedisSettings | None = None
    routes: list[RouteRule] = []
    #: Size of the (method, path) to route memo table.
    route_cache_size: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 4096
    #: Request limits and validation; off when unset and no route sets any.
    request: RequestPolicy | None = None
    #: Security headers; off when unset and no route sets any.
    headers: HeadersPolicy | None = None
    #: Prefix of every problem ``type`` URI.
    problem_type_base: str = PROBLEM_TYPE_BASE


PolicySource = str | Path | Mapping[str, Any] | Policy | None

_ERROR_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def load_policy(source: PolicySource) -> Policy:
    """Decode and validate a policy from a TOML path, a mapping or a ``Policy``."""
    if source is None:
        return Policy()
    if isinstance(source, Policy):
        return source
    if isinstance(source, (str, Path)):
        raw = _read_toml(Path(source))
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise ConfigurationError(
            "policy", source, "expected a TOML file path, a mapping or a Policy"
        )

    try:
        return msgspec.convert(raw, Policy, strict=True)
    except msgspec.ValidationError as exc:
        raise _configuration_error(exc, raw) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigurationError("policy", str(path), exc.strerror or str(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError("policy", str(path), f"invalid TOML: {exc}") from exc


def _configuration_error(
    exc: msgspec.ValidationError, raw: Mapping[str, Any]
) -> ConfigurationError:
    """Turn msgspec's ``... - at `$.a.b[0]``` message into key path and value."""
    message = str(exc)
    match = _ERROR_PATH.search(message)
    path = match.group("path").lstrip(".") if match else ""
    reason = message[: match.start()] if match else message
    value: Any = raw
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            value = value[int(part[1:-1])] if part.startswith("[") else value[part]
        except (KeyError, IndexError, TypeError, ValueError):
            value = None
            break
    unknown = _UNKNOWN_FIELD.match(reason)
    if unknown is not None:
        name = unknown.group("name")
        key = f"{path}.{name}" if path else name
        found = value.get(name) if isinstance(value, Mapping) else None
        return ConfigurationError(key, found, "unknown setting")
    return ConfigurationError(path or "policy", value, reason)
