"""Policy sections of the response cache (see :mod:`wsgishield.cache`)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._options import STRUCT_OPTIONS as _STRUCT_OPTIONS

__all__ = [
    "CachePolicy",
    "RouteCache",
]


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
