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
    "AccessPolicy",
    "AuthPolicy",
    "BanPolicy",
    "CachePolicy",
    "ClaimRule",
    "ClientPolicy",
    "HeadersPolicy",
    "IssuerProfile",
    "JwksSettings",
    "LimitRule",
    "LimitsPolicy",
    "MetricsPolicy",
    "Policy",
    "RedisSettings",
    "RequestPolicy",
    "RevocationSettings",
    "RouteAccess",
    "RouteAuth",
    "RouteCache",
    "RouteHeaders",
    "RouteLimits",
    "RouteRequest",
    "RouteRule",
    "StaticKey",
    "TokenSources",
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


# --- Access lists and bans (see wsgishield.access and wsgishield.bans) ---

_Seconds = Annotated[float, msgspec.Meta(gt=0, le=31_536_000)]


class RouteAccess(msgspec.Struct, **_STRUCT_OPTIONS):
    """Allow and deny networks: CIDRs, bare addresses or the presets
    ``loopback``, ``private`` and ``cloudflare``. The longest matching
    network decides; with any allow entry, an address matching none is denied.
    """

    allow: list[str] = []
    deny: list[str] = []
    #: Files with one network per line, reloaded when they change.
    allow_files: list[str] = []
    deny_files: list[str] = []


class AccessPolicy(RouteAccess, **_STRUCT_OPTIONS):
    """Site-wide allow and deny lists; routes may add their own."""

    #: Seconds between checks of a list file's modification time, per process.
    reload_interval: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 1.0


class BanPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Strikes for failed requests and bans that grow with each repeat offence."""

    #: ``memory``: per process; ``redis``: shared through the ``redis`` section.
    store: Literal["memory", "redis"] = "memory"
    #: Strikes that earn a ban when they arrive faster than they drain.
    threshold: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20
    #: Seconds over which ``threshold`` strikes drain away.
    window: _Seconds = 60.0
    #: Response statuses that count as one strike each.
    strike_statuses: list[Annotated[int, msgspec.Meta(ge=400, le=599)]] = msgspec.field(
        default_factory=lambda: [401, 403, 429]
    )
    #: Also count 400 and 422 responses (failed validation).
    strike_validation: bool = True
    #: Route patterns no client has a reason to request (``/wp-login.php``).
    trap_paths: list[str] = []
    #: Strikes per trap request; unset means ``threshold``: one request bans.
    trap_strikes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    #: Seconds of the first ban.
    ban_time: _Seconds = 600.0
    #: Each repeat offence multiplies the ban by this factor ...
    ban_multiplier: Annotated[float, msgspec.Meta(ge=1, le=1000)] = 2.0
    #: ... up to this many seconds.
    max_ban_time: _Seconds = 86_400.0
    #: Seconds a ban is remembered as an earlier offence.
    repeat_window: _Seconds = 604_800.0
    #: Prefix lengths that group addresses into one client.
    ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 32
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64
    #: Route patterns never counted (health checks).
    exempt_paths: list[str] = []
    #: Networks or presets never counted or banned (monitoring).
    exempt_networks: list[str] = []
    #: 403, or 429 with ``Retry-After``.
    status: Literal[403, 429] = 403
    #: Seconds between fetches of new bans from Redis, per process.
    sync_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.5
    #: Clients tracked per process by the memory store; the oldest go first.
    max_clients: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000
# --- authentication (see wsgishield.auth and docs/auth.md) ---------------

_NAME = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
_ENV_NAME = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
_HEADER_NAME = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,64}$")]


class StaticKey(msgspec.Struct, **_STRUCT_OPTIONS):
    """One verification key given in the policy; exactly one source is set.

    Secrets never appear in the policy: an HMAC secret is read from the
    environment variable that ``secret_env`` names.
    """

    #: Key id matched against the token's ``kid``; optional for a lone key.
    kid: str | None = None
    #: Environment variable holding an HMAC secret (at least 32 bytes).
    secret_env: _ENV_NAME | None = None
    #: A public key in PEM, inline.
    pem: str | None = None
    #: A file holding a public key in PEM.
    pem_file: str | None = None
    #: A public JWK (``kty``, ``crv``, ``x``...) as a table.
    jwk: dict[str, Any] | None = None


class JwksSettings(msgspec.Struct, **_STRUCT_OPTIONS):
    """Where and how often to fetch an issuer's JSON Web Key Set."""

    #: ``https://`` URL; ``http://`` only for a loopback host.
    uri: str
    #: Keys are refetched in the background after this many seconds, or the
    #: ``Cache-Control: max-age`` of the response when that is shorter.
    refresh_seconds: Annotated[int, msgspec.Meta(ge=10, le=86_400)] = 300
    #: Keys stay usable this long after a refresh fails.
    max_stale_seconds: Annotated[int, msgspec.Meta(ge=0, le=604_800)] = 86_400
    #: Minimum time between two refetches caused by an unknown ``kid``.
    unknown_kid_cooldown_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    #: Timeout of one fetch, connect and read, in milliseconds.
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=30_000)] = 2000
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=4_194_304)] = 262_144
    max_keys: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50


class IssuerProfile(msgspec.Struct, **_STRUCT_OPTIONS):
    """What a token from one issuer must look like to be accepted."""

    #: Exact ``iss`` value; compared as a whole string, never as a prefix.
    issuer: str
    #: Allowed ``alg`` values, all HMAC or all asymmetric; never ``none``.
    algorithms: list[str]
    keys: list[StaticKey] = []
    jwks: JwksSettings | None = None
    #: Accepted ``aud`` values; when set, ``aud`` is required and must
    #: contain one of them.
    audiences: list[str] = []
    #: Accepted ``typ`` header values, compared without case and without an
    #: ``application/`` prefix. A token without ``typ`` passes unless
    #: ``typ_required`` is set.
    types: list[str] = msgspec.field(default_factory=lambda: ["at+jwt", "jwt"])
    typ_required: bool = False
    #: Claims every token must carry; ``aud`` is added when ``audiences``
    #: is set.
    required_claims: list[str] = msgspec.field(
        default_factory=lambda: ["exp", "iat", "sub", "iss"]
    )
    leeway_seconds: Annotated[int, msgspec.Meta(ge=0, le=300)] = 30
    #: Largest ``exp - iat`` accepted.
    max_lifetime_seconds: Annotated[int, msgspec.Meta(ge=1, le=31_536_000)] = 86_400
    #: Largest ``now - iat`` accepted; none when unset.
    max_age_seconds: Annotated[int, msgspec.Meta(ge=1, le=31_536_000)] | None = None
    #: Claim path holding the roles, a list of strings or one string.
    roles_claim: str = "roles"


class TokenSources(msgspec.Struct, **_STRUCT_OPTIONS):
    """Where a request may carry its token."""

    #: ``Authorization: Bearer`` (RFC 6750, section 2.1).
    header: bool = True
    #: Cookie holding the token; none when unset.
    cookie: str | None = None
    #: With a cookie token, unsafe methods must repeat the value of
    #: ``csrf_cookie`` in the ``csrf_header`` header (double submit).
    csrf: bool = True
    csrf_cookie: str = "csrf_token"
    csrf_header: _HEADER_NAME = "X-CSRF-Token"
    #: Query parameter for routes with ``allow_query_token``.
    query_parameter: str = "access_token"


class RevocationSettings(msgspec.Struct, **_STRUCT_OPTIONS):
    """Where revoked token ids and subject cut-offs live."""

    #: ``redis`` uses the policy's ``redis`` section and is shared by every
    #: worker; ``memory`` holds one process only.
    store: Literal["memory", "redis"] = "memory"
    #: Each worker rereads the shared list at most this often.
    sync_interval_ms: Annotated[int, msgspec.Meta(ge=50, le=60_000)] = 1000
    #: Entries kept in memory per process.
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 1_000_000


class AuthPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """JWT authentication and per-route authorization."""

    issuers: dict[_NAME, IssuerProfile]
    #: ``realm`` of every ``WWW-Authenticate`` challenge: printable ASCII
    #: without quotes or backslashes, so it fits a quoted-string.
    realm: Annotated[
        str, msgspec.Meta(pattern=r"^[\x20\x21\x23-\x5B\x5D-\x7E]{1,64}$")
    ] = "api"
    tokens: TokenSources = TokenSources()
    revocation: RevocationSettings = RevocationSettings()
    #: Tokens longer than this are rejected before any decoding.
    max_token_bytes: Annotated[int, msgspec.Meta(ge=256, le=65_536)] = 8192
    #: Verified tokens cached per process.
    cache_size: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 10_000
    #: Reject requests that no route rule with an ``auth`` section covers.
    deny_uncovered: bool = False
    #: Request headers set from claims for the app (header name to claim
    #: path). The client's own copies are always removed first.
    identity_headers: dict[_HEADER_NAME, str] = {}


class ClaimRule(msgspec.Struct, **_STRUCT_OPTIONS):
    """A predicate on one claim; every condition given must hold."""

    #: Dotted path such as ``realm_access.roles``.
    path: str
    #: The claim equals this value.
    equals: str | int | bool | None = None
    #: The claim is one of these values.
    one_of: list[str] = []
    #: The claim, a list, contains this value.
    contains: str | None = None


class RouteAuth(msgspec.Struct, **_STRUCT_OPTIONS):
    """Authentication and authorization for one route rule."""

    #: No token needed at all; counts as covered for ``deny_uncovered``.
    public: bool = False
    #: A request without a token passes as anonymous; a bad token is still
    #: rejected.
    optional: bool = False
    #: Issuer profile names accepted here; all when empty.
    issuers: list[str] = []
    roles_any: list[str] = []
    roles_all: list[str] = []
    #: Every scope listed is required (``scope`` string or ``scp`` list).
    scopes: list[str] = []
    claims: list[ClaimRule] = []
    #: Accept the token from the query string (such as for WebSocket or
    #: download links). The parameter is removed before the app sees it.
    allow_query_token: bool = False
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
# Rate limits (see wsgishield.middleware.ratelimit and docs/ratelimit.md).

LimitKeyPart = Literal["ip", "identity", "api-key", "route"]
FailureMode = Literal["open", "local", "closed"]


class LimitRule(msgspec.Struct, **_STRUCT_OPTIONS):
    """One named rate-limit policy: a token bucket per key."""

    #: ``"N/unit"`` or ``"N/K unit"`` with unit second, minute, hour or day
    #: (``"10/second"``, ``"1000/day"``, ``"100/5 minutes"``).
    rate: str
    #: Tokens a full bucket holds; the count of the rate when unset.
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None
    #: What one bucket is kept per; empty means one bucket for all requests.
    key: list[LimitKeyPart] = msgspec.field(default_factory=lambda: ["ip"])
    #: Count and log the requests this policy would deny, deny none.
    shadow: bool = False
    #: What to do when the shared store fails; ``limits.failure_mode`` if unset.
    failure_mode: FailureMode | None = None


class RouteLimits(msgspec.Struct, **_STRUCT_OPTIONS):
    """The rate-limit policies of one route and the tokens a request costs."""

    policies: list[str] = []
    cost: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1


class LimitsPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Rate limiting: named policies, where they apply and where buckets live."""

    #: ``auto``: ``shm`` under Gunicorn, ``memory`` otherwise.
    store: Literal["auto", "memory", "shm", "redis"] = "auto"
    policies: dict[
        Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], LimitRule
    ] = {}
    #: Policies of requests whose route names none (or that match no route).
    default: list[str] = []
    #: Policies applied to every request, on top of the route's own.
    global_: list[str] = msgspec.field(name="global", default_factory=list)
    failure_mode: FailureMode = "open"
    headers: Literal["ietf", "x-ratelimit", "none"] = "ietf"
    #: Prefix lengths that group client addresses into one key.
    ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 32
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64
    api_key_header: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,64}$")] = (
        "X-API-Key"
    )
    #: Count CORS preflight ``OPTIONS`` requests.
    count_preflight: bool = False
    #: Route patterns (see wsgishield.routes) that are never limited.
    exempt_paths: list[str] = []
    #: CIDRs or presets whose clients are never limited.
    exempt_networks: list[str] = []
    #: Origins whose CORS headers a 429 carries when the app's own headers for
    #: that origin were not seen yet; ``["*"]`` for any origin.
    cors_origins: list[str] = []
    #: Buckets kept by the memory store and by the local fallback.
    max_keys: Annotated[int, msgspec.Meta(ge=16, le=100_000_000)] = 100_000
    #: Slots of the shared-memory table (rounded up to a power of two).
    shm_slots: Annotated[int, msgspec.Meta(ge=1024, le=1 << 28)] = 1 << 18
    #: Consecutive Redis failures that open the circuit breaker.
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    #: Seconds the breaker stays open before one probe request may pass.
    breaker_reset_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=300)] = 2.0
class MetricsPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Prometheus metrics and their scrape endpoint (see
    :mod:`wsgishield.middleware.metrics`)."""

    #: Path of the scrape endpoint the shield serves itself. Scrapes are
    #: never counted in the request metrics.
    path: Annotated[str, msgspec.Meta(pattern=r"^/[!-~]{0,255}$")] = "/metrics"
    #: CIDRs or presets (``loopback``, ``private``) whose clients may scrape
    #: ``path``; others get 404. Empty: the shield serves no scrape endpoint,
    #: and scrapes go to the listener ``wsgishield.gunicorn`` starts on
    #: ``WSGISHIELD_METRICS_PORT``.
    allow: list[str] = []
    #: Label sets per process across all wsgishield metrics; new ones beyond
    #: this are dropped and counted.
    max_series: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 5000
    #: Share of allowed requests logged as access events (0 to 1).
    access_log_sample: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    #: Also expose prometheus-client's default registry (process and Python
    #: metrics) when not in multiprocess mode.
    include_default_registry: bool = True


class RouteRule(msgspec.Struct, **_STRUCT_OPTIONS):
    """One route rule; later rules only apply when earlier ones do not match."""

    #: Stable name used in logs, metrics and ``explain``.
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    #: Path pattern (see :mod:`wsgishield.routes`).
    path: str
    #: HTTP methods the rule applies to; empty means all.
    methods: list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{1,20}$")]] = []
    #: Networks allowed or denied on this route, after the site-wide lists.
    access: RouteAccess | None = None
    auth: RouteAuth | None = None
    #: Response caching for this route; not cached when unset.
    cache: RouteCache | None = None
    #: Request limits for this route.
    request: RouteRequest | None = None
    #: Security headers for this route.
    headers: RouteHeaders | None = None
    #: Rate-limit policies by name, or ``{policies = [...], cost = N}``.
    limits: list[str] | RouteLimits | None = None


class Policy(msgspec.Struct, **_STRUCT_OPTIONS):
    """The whole policy."""

    client: ClientPolicy = ClientPolicy()
    #: Shared-state connection, used by the layers whose store is ``redis``.
    redis: RedisSettings | None = None
    routes: list[RouteRule] = []
    access: AccessPolicy | None = None
    bans: BanPolicy | None = None
    auth: AuthPolicy | None = None
    #: The response cache; off when unset.
    cache: CachePolicy | None = None
    limits: LimitsPolicy | None = None
    #: Size of the (method, path) to route memo table.
    route_cache_size: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 4096
    #: Request limits and validation; off when unset and no route sets any.
    request: RequestPolicy | None = None
    #: Security headers; off when unset and no route sets any.
    headers: HeadersPolicy | None = None
    #: Prefix of every problem ``type`` URI.
    problem_type_base: str = PROBLEM_TYPE_BASE
    #: Prometheus metrics and the scrape endpoint; ``None`` turns them off.
    metrics: MetricsPolicy | None = None


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
