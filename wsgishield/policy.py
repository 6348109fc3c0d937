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
    "CachePolicy",
    "ClientPolicy",
    "Policy",
    "RedisSettings",
    "RouteCache",
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


_HEADER_NAME = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
]
_TAG = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]


class RouteCache(msgspec.Struct, **_STRUCT_OPTIONS):
    """Response cache settings of one route (see :mod:`wsgishield.middleware.cache`)."""

    #: Freshness lifetime in seconds when the response sets no ``s-maxage`` or
    #: ``max-age``.
    ttl: Annotated[int, msgspec.Meta(ge=1, le=31_536_000)] = 60
    #: The response does not depend on ``Authorization`` or ``Cookie``, so
    #: requests carrying them may be served from the cache.
    public: bool = False
    #: Key entries by the verified subject; requests without one bypass.
    per_identity: bool = False
    #: Request headers always part of the key, as if the response named
    #: them in ``Vary``.
    vary: list[_HEADER_NAME] = []
    #: Seconds a stale entry may be served while one refresh runs (RFC 5861).
    stale_while_revalidate: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 0
    #: Seconds a stale entry may be served when the app fails (RFC 5861).
    stale_if_error: Annotated[int, msgspec.Meta(ge=0, le=604_800)] = 0
    #: Tags added to every entry of this route, for purges.
    tags: list[_TAG] = []


class CachePolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """The shared response cache (see :mod:`wsgishield.middleware.cache`)."""

    #: ``memory``: per process; ``redis``: shared through ``[redis]``.
    store: Literal["memory", "redis"] = "memory"
    #: Size bound of the memory store, in bytes of stored responses.
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 40)] = 64 * 1024 * 1024
    #: Larger responses are streamed through and not stored.
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)] = (
        1024 * 1024
    )
    #: Statuses that may be stored.
    statuses: list[Annotated[int, msgspec.Meta(ge=200, le=599)]] = msgspec.field(
        default_factory=lambda: [200, 203, 204, 300, 301, 404, 410]
    )
    #: Upper bound on the freshness of 404 and 410 responses, in seconds.
    negative_ttl: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 10
    #: Query parameters left out of the key and removed from the app's query.
    #: A trailing ``*`` matches a prefix.
    drop_params: list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]] = (
        msgspec.field(
            default_factory=lambda: [
                "utm_*",
                "gclid",
                "fbclid",
                "msclkid",
                "mc_cid",
                "mc_eid",
            ]
        )
    )
    #: Part of every key: change it on deploy to start from an empty cache.
    version: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "1"
    #: What to do when the app read a request header outside the key.
    unkeyed_headers: Literal["refuse", "log", "off"] = "refuse"
    #: Request headers whose reads the unkeyed-input detector ignores.
    ignore_headers: list[_HEADER_NAME] = []
    #: Response header carrying space-separated purge tags; removed before
    #: the response leaves the shield.
    tag_header: _HEADER_NAME = "Surrogate-Key"
    #: Cache name in ``Cache-Status`` (RFC 9211).
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] = "wsgishield"
    #: Compute a strong ``ETag`` for stored responses that have none.
    etag: bool = True
    #: Maximum wait for a concurrent fill of the same key, in milliseconds.
    lock_timeout_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 3000
    #: Lifetime of the Redis lease held while one process fills a key.
    lease_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 5000
    #: Bytes of the in-process tier in front of Redis; 0 turns it off.
    local_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 34)] = 0
    #: Maximum time an entry stays in the in-process tier, in milliseconds.
    local_ttl_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1000
    #: Background refreshes (stale-while-revalidate) running at once, per process.
    max_refreshes: Annotated[int, msgspec.Meta(ge=0, le=64)] = 4


class RouteRule(msgspec.Struct, **_STRUCT_OPTIONS):
    """One route rule; later rules only apply when earlier ones do not match."""

    #: Stable name used in logs, metrics and ``explain``.
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    #: Path pattern (see :mod:`wsgishield.routes`).
    path: str
    #: HTTP methods the rule applies to; empty means all.
    methods: list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{1,20}$")]] = []
    #: Response caching for this route; not cached when unset.
    cache: RouteCache | None = None


class Policy(msgspec.Struct, **_STRUCT_OPTIONS):
    """The whole policy."""

    client: ClientPolicy = ClientPolicy()
    #: Shared-state connection, used by the layers whose store is ``redis``.
    redis: RedisSettings | None = None
    routes: list[RouteRule] = []
    #: The response cache; off when unset.
    cache: CachePolicy | None = None
    #: Size of the (method, path) to route memo table.
    route_cache_size: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 4096
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
