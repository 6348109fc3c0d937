"""Policy sections of the authentication layer (see :mod:`wsgishield.auth`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ._options import STRUCT_OPTIONS as _STRUCT_OPTIONS

__all__ = [
    "AuthPolicy",
    "ClaimRule",
    "IssuerProfile",
    "JwksSettings",
    "RevocationSettings",
    "RouteAuth",
    "StaticKey",
    "TokenSources",
]


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
    """Location and refresh schedule of an issuer's JSON Web Key Set."""

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
    """Requirements a token from one issuer must meet to be accepted."""

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
    """Places in a request that may carry its token."""

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
    """Store of revoked token ids and subject cut-offs."""

    #: ``redis`` uses the policy's ``redis`` section and is shared by every
    #: worker. ``memory`` covers one process only.
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
    #: download links). The parameter is removed before the app is called.
    allow_query_token: bool = False
