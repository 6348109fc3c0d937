"""JWT verification with strict claim rules and a verified-token cache.

The verifier accepts a token only when every one of these holds:

- it is at most ``max_token_bytes`` long, checked before any decoding;
- it is a strict compact JWS (:mod:`wsgishield.auth.tokens`);
- its ``iss`` is a string equal to a configured issuer, which selects the
  issuer profile; a list, a prefix or a look-alike selects nothing;
- ``alg`` is in that profile's allowlist and matches the key's type;
- the header has no ``crit`` member, because no extension is understood
  (RFC 7515, section 4.1.11);
- ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never followed, and ``kid`` is
  only a lookup key;
- ``typ``, when present (or required), is an accepted type;
- the signature verifies;
- the required claims are present; ``exp``, ``nbf`` and ``iat`` are JSON
  numbers (never strings or booleans) and hold with the leeway; ``exp - iat``
  is within the maximum lifetime and ``now - iat`` within the maximum age;
- ``aud`` contains a configured audience, and is absent when none is set
  (RFC 7519, section 4.1.3);
- the token is not revoked.

A verified token is cached per process until its ``exp``, never stretched by
the leeway, so a repeated token costs a dict lookup and a revocation check.
A change of the issuer's key set drops the cached result, so a key removed
from a JWKS stops verifying cached tokens too.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..errors import ConfigurationError
from .errors import TokenError
from .jwks import JwksKeySet
from .keys import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    BoundKey,
    StaticKeySet,
    UnusableKeyError,
    algorithm,
    bind_hmac_secret,
    bind_jwk,
    bind_pem,
)
from .tokens import split_token

if TYPE_CHECKING:
    from jwt.algorithms import Algorithm

    from ..metrics import MetricsRegistry
    from ..policy import IssuerProfile
    from .revocation import RevocationStore

__all__ = [
    "Identity",
    "KeySource",
    "Profile",
    "Verifier",
    "check_algorithms",
    "claim_at",
    "fingerprint",
]

#: Longest ``kid`` accepted; real key ids are short.
MAX_KID_LENGTH = 256


class Identity(msgspec.Struct, frozen=True, gc=False):
    """The verified caller, as the layers below and the app see it.

    Instances are cached and shared between requests, so ``claims`` is a
    read-only mapping.
    """

    subject: str
    issuer: str
    #: Name of the issuer profile that accepted the token.
    profile: str
    roles: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, Any]
    token_id: str | None
    issued_at: float | None
    expires_at: float | None
    #: First 16 hex digits of the token's SHA-256, for logs.
    fingerprint: str


class KeySource(Protocol):
    """A key set: :class:`~wsgishield.auth.keys.StaticKeySet` or a JWKS."""

    generation: int
    refresh_at: float

    def find(self, kid: str | None, alg: str) -> BoundKey | None: ...

    def maintain(self, now: float) -> None: ...


def fingerprint(token: str) -> str:
    """Return a short, one-way fingerprint of ``token`` that is safe to log."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]


def _is_number(value: Any) -> bool:
    # bool is an int subclass, so the type is compared exactly.
    kind = type(value)
    if kind is int:
        return True
    return kind is float and math.isfinite(value)


def _normalize_type(value: str) -> str:
    # RFC 7515, section 4.1.9: media types compare without case, and the
    # "application/" prefix may be left out.
    value = value.lower()
    return value[12:] if value.startswith("application/") else value


def claim_at(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Return the value at a dotted claim path, or ``None``."""
    value: Any = claims
    for part in path:
        if not isinstance(value, (dict, MappingProxyType)):
            return None
        value = value.get(part)
    return value


def _string_set(value: Any) -> frozenset[str]:
    if type(value) is str:
        return frozenset(value.split())
    if type(value) is list:
        return frozenset(item for item in value if type(item) is str)
    return frozenset()


class Profile:
    """A compiled issuer profile: what a token from one issuer must satisfy."""

    __slots__ = (
        "algorithms",
        "audiences",
        "issuer",
        "keys",
        "leeway",
        "max_age",
        "max_lifetime",
        "name",
        "required",
        "roles_path",
        "typ_required",
        "types",
    )

    def __init__(
        self,
        name: str,
        issuer: str,
        *,
        algorithms: Iterable[str],
        keys: KeySource,
        audiences: Iterable[str] = (),
        types: Iterable[str] = ("at+jwt", "jwt"),
        typ_required: bool = False,
        required_claims: Iterable[str] = ("exp", "iat", "sub", "iss"),
        leeway: float = 30,
        max_lifetime: float = 86_400,
        max_age: float | None = None,
        roles_claim: str = "roles",
        key: str = "auth.issuers",
    ) -> None:
        if not issuer:
            raise ConfigurationError(
                f"{key}.issuer", issuer, "the issuer must not be empty"
            )
        names = list(algorithms)
        check_algorithms(names, f"{key}.algorithms")
        self.name = name
        self.issuer = issuer
        self.algorithms: dict[str, Algorithm] = {alg: algorithm(alg) for alg in names}
        self.keys = keys
        self.audiences = frozenset(audiences)
        self.types = frozenset(_normalize_type(value) for value in types)
        self.typ_required = typ_required
        required = list(dict.fromkeys(required_claims))
        if self.audiences and "aud" not in required:
            required.append("aud")
        self.required = tuple(required)
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.max_age = max_age
        self.roles_path = tuple(roles_claim.split("."))

    @classmethod
    def from_policy(
        cls,
        name: str,
        settings: IssuerProfile,
        *,
        environ: Mapping[str, str] = os.environ,
        registry: MetricsRegistry | None = None,
    ) -> Profile:
        """Compile a policy profile, reading HMAC secrets from ``environ``.

        A JWKS key set counts its fetches in ``registry`` when one is given.
        """
        key = f"auth.issuers.{name}"
        check_algorithms(settings.algorithms, f"{key}.algorithms")
        keys: KeySource
        if settings.jwks is not None:
            if settings.keys:
                raise ConfigurationError(
                    f"{key}.keys",
                    len(settings.keys),
                    "set either keys or jwks, not both",
                )
            if settings.algorithms[0] in HMAC_ALGORITHMS:
                raise ConfigurationError(
                    f"{key}.jwks",
                    settings.jwks.uri,
                    "an HMAC profile cannot use a JWKS, which has public keys only",
                )
            keys = JwksKeySet.from_policy(
                settings.jwks,
                settings.algorithms,
                key=f"{key}.jwks",
                registry=registry,
            )
        else:
            keys = StaticKeySet(_load_static_keys(settings, key=key, environ=environ))
        return cls(
            name,
            settings.issuer,
            algorithms=settings.algorithms,
            keys=keys,
            audiences=settings.audiences,
            types=settings.types,
            typ_required=settings.typ_required,
            required_claims=settings.required_claims,
            leeway=settings.leeway_seconds,
            max_lifetime=settings.max_lifetime_seconds,
            max_age=settings.max_age_seconds,
            roles_claim=settings.roles_claim,
            key=key,
        )


def check_algorithms(names: list[str], key: str) -> None:
    """Reject an empty, unknown, ``none`` or mixed HMAC/asymmetric allowlist."""
    if not names:
        raise ConfigurationError(key, names, "at least one algorithm is required")
    for name in names:
        if name.lower() == "none":
            raise ConfigurationError(key, name, "unsigned tokens are never accepted")
        if name not in HMAC_ALGORITHMS and name not in ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(key, name, "unknown or unsupported algorithm")
    hmac = [name for name in names if name in HMAC_ALGORITHMS]
    if hmac and len(hmac) != len(names):
        # With both kinds allowed, a public key could be tried as an HMAC
        # secret: the algorithm-confusion attack.
        raise ConfigurationError(
            key, names, "HMAC and asymmetric algorithms cannot share one profile"
        )


def _load_static_keys(
    settings: IssuerProfile, *, key: str, environ: Mapping[str, str]
) -> list[BoundKey]:
    if not settings.keys:
        raise ConfigurationError(f"{key}.keys", [], "missing: set keys or jwks")
    hmac = settings.algorithms[0] in HMAC_ALGORITHMS
    bound: list[BoundKey] = []
    for index, entry in enumerate(settings.keys):
        entry_key = f"{key}.keys[{index}]"
        sources = [
            name
            for name in ("secret_env", "pem", "pem_file", "jwk")
            if getattr(entry, name) is not None
        ]
        if len(sources) != 1:
            raise ConfigurationError(
                entry_key, sources, "set exactly one of secret_env, pem, pem_file, jwk"
            )
        if hmac != (entry.secret_env is not None):
            raise ConfigurationError(
                f"{entry_key}.{sources[0]}",
                settings.algorithms,
                "HMAC algorithms need secret_env; asymmetric ones need a public key",
            )
        try:
            if entry.secret_env is not None:
                secret = environ.get(entry.secret_env)
                if not secret:
                    raise ConfigurationError(
                        f"{entry_key}.secret_env",
                        entry.secret_env,
                        "the environment variable is not set",
                    )
                bound.append(
                    bind_hmac_secret(secret.encode(), settings.algorithms, entry.kid)
                )
            elif entry.jwk is not None:
                jwk = dict(entry.jwk)
                if entry.kid is not None:
                    jwk["kid"] = entry.kid
                bound.append(bind_jwk(jwk, settings.algorithms))
            else:
                pem = (
                    entry.pem.encode()
                    if entry.pem is not None
                    else _read(entry, entry_key)
                )
                bound.append(bind_pem(pem, settings.algorithms, entry.kid))
        except UnusableKeyError as exc:
            # The message names the problem, never the secret.
            raise ConfigurationError(
                f"{entry_key}.{sources[0]}", "(key)", str(exc)
            ) from exc
    return bound


def _read(entry: Any, key: str) -> bytes:
    try:
        with open(entry.pem_file, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigurationError(f"{key}.pem_file", entry.pem_file, str(exc)) from exc


def _reject(reason: str, description: str) -> TokenError:
    return TokenError(reason, description)


class Verifier:
    """Verify tokens against issuer profiles, with a bounded per-process cache."""

    def __init__(
        self,
        profiles: Iterable[Profile],
        *,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        revocation: RevocationStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.profiles = tuple(profiles)
        self.by_issuer: dict[str, Profile] = {}
        for profile in self.profiles:
            if profile.issuer in self.by_issuer:
                raise ConfigurationError(
                    f"auth.issuers.{profile.name}.issuer",
                    profile.issuer,
                    "another profile has the same issuer",
                )
            self.by_issuer[profile.issuer] = profile
        self.max_token_bytes = max_token_bytes
        self.cache_size = cache_size
        self.revocation = revocation
        self.clock = clock
        #: Verified tokens: token -> (identity, key source, key generation).
        #: Only tokens that passed the strict grammar are keys.
        self.cache: dict[str, tuple[Identity, KeySource, int]] = {}

    def verify(self, token: str) -> Identity:
        """Return the identity in ``token`` or raise.

        Raises :class:`TokenError` for a token that must be rejected (401)
        and :class:`KeysUnavailable` when no key can be had (503).
        """
        now = self.clock()
        entry = self.cache.get(token)
        if entry is not None:
            identity, keys, generation = entry
            if now < identity.expires_at and generation == keys.generation:  # type: ignore[operator]
                if now >= keys.refresh_at:
                    keys.maintain(now)
                # Tested here rather than inside the call: a repeated token
                # is the hot path, and the call alone costs about 50 ns.
                if self.revocation is not None:
                    self._check_revocation(identity, now)
                return identity
            self.cache.pop(token, None)

        identity, keys, generation = self._verify(token, now)
        self._check_revocation(identity, now)
        # A token inside the leeway after its exp passes, but is not cached.
        if (
            self.cache_size
            and identity.expires_at is not None
            and now < identity.expires_at
        ):
            if len(self.cache) >= self.cache_size:
                # Evict the oldest entry. Another thread may evict it
                # first, which is harmless.
                try:
                    del self.cache[next(iter(self.cache))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            self.cache[token] = (identity, keys, generation)
        return identity

    def _check_revocation(self, identity: Identity, now: float) -> None:
        revocation = self.revocation
        if revocation is None:
            return
        if now >= revocation.next_sync:
            revocation.sync(now)
        # Two dict probes settle the common case of a token never revoked.
        if (
            identity.token_id in revocation.token_ids
            or identity.subject in revocation.cutoffs
        ) and revocation.is_revoked(
            identity.token_id, identity.subject, identity.issued_at, now
        ):
            raise _reject("revoked", "The token has been revoked.")

    def _verify(self, token: str, now: float) -> tuple[Identity, KeySource, int]:
        if len(token) > self.max_token_bytes:
            raise _reject("too-large", "The token is too large.")
        parts = split_token(token)
        header = parts.header
        payload = parts.payload

        issuer = payload.get("iss")
        profile = self.by_issuer.get(issuer) if type(issuer) is str else None
        if profile is None:
            raise _reject("wrong-issuer", "The token issuer is not accepted.")

        alg = header.get("alg")
        if type(alg) is not str or alg not in profile.algorithms:
            raise _reject(
                "algorithm-not-allowed", "The token algorithm is not accepted."
            )
        if "crit" in header:
            raise _reject(
                "unsupported-crit", "The token requires an unsupported extension."
            )
        self._check_type(header, profile)
        kid = header.get("kid")
        if kid is not None and (type(kid) is not str or len(kid) > MAX_KID_LENGTH):
            raise _reject("malformed", "The token key id is invalid.")

        keys = profile.keys
        key = keys.find(kid, alg)
        generation = keys.generation
        if key is None:
            raise _reject("unknown-key", "The token signing key is unknown.")
        if not profile.algorithms[alg].verify(
            parts.signing_input, key.key, parts.signature
        ):
            raise _reject("bad-signature", "The token signature is invalid.")

        return self._identity(token, payload, profile, now), keys, generation

    @staticmethod
    def _check_type(header: dict[str, Any], profile: Profile) -> None:
        typ = header.get("typ")
        if typ is None:
            if profile.typ_required:
                raise _reject("wrong-type", "The token type is missing.")
            return
        if type(typ) is not str or _normalize_type(typ) not in profile.types:
            raise _reject("wrong-type", "The token type is not accepted.")

    def _identity(
        self, token: str, payload: dict[str, Any], profile: Profile, now: float
    ) -> Identity:
        for name in profile.required:
            if name not in payload:
                raise _reject("missing-claim", f"The token lacks the {name} claim.")
        leeway = profile.leeway
        for name in ("exp", "nbf", "iat"):
            if name in payload and not _is_number(payload[name]):
                raise _reject("invalid-claim", f"The {name} claim is not a number.")

        expires_at = payload.get("exp")
        if expires_at is not None and now >= expires_at + leeway:
            raise _reject("expired", "The token has expired.")
        not_before = payload.get("nbf")
        if not_before is not None and not_before > now + leeway:
            raise _reject("not-yet-valid", "The token is not valid yet.")
        issued_at = payload.get("iat")
        if issued_at is not None:
            if issued_at > now + leeway:
                raise _reject("issued-in-future", "The token was issued in the future.")
            if (
                profile.max_age is not None
                and now - issued_at > profile.max_age + leeway
            ):
                raise _reject("too-old", "The token is too old.")
        if expires_at is not None:
            start = issued_at if issued_at is not None else now
            if expires_at - start > profile.max_lifetime:
                raise _reject("lifetime-too-long", "The token lifetime is too long.")

        self._check_audience(payload.get("aud"), profile)

        subject = payload.get("sub", "")
        token_id = payload.get("jti")
        if type(subject) is not str or (
            token_id is not None and type(token_id) is not str
        ):
            raise _reject("invalid-claim", "The sub or jti claim is not a string.")

        scopes = _string_set(payload.get("scope"))
        if "scp" in payload:
            scopes = scopes | _string_set(payload["scp"])
        return Identity(
            subject=subject,
            issuer=profile.issuer,
            profile=profile.name,
            roles=_string_set(claim_at(payload, profile.roles_path)),
            scopes=scopes,
            claims=MappingProxyType(payload),
            token_id=token_id,
            issued_at=issued_at,
            expires_at=expires_at,
            fingerprint=fingerprint(token),
        )

    @staticmethod
    def _check_audience(audience: Any, profile: Profile) -> None:
        if audience is None:
            return
        if not profile.audiences:
            raise _reject("wrong-audience", "The token audience is not accepted.")
        if type(audience) is str:
            if audience in profile.audiences:
                return
        elif type(audience) is list and any(
            type(item) is str and item in profile.audiences for item in audience
        ):
            return
        raise _reject("wrong-audience", "The token audience is not accepted.")
