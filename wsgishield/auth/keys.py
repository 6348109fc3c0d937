"""Verification keys bound to the algorithms they may verify.

Every key is bound at load time to the ``alg`` values its type allows, so a
token cannot pick an algorithm its key was not meant for. An RSA public key
is therefore never used as an HMAC secret (the algorithm-confusion attack),
and a P-256 key only verifies ES256. Signatures are checked by PyJWT's
algorithm objects on top of ``cryptography``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import PyJWTError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "BoundKey",
    "StaticKeySet",
    "UnusableKeyError",
    "algorithm",
    "bind_hmac_secret",
    "bind_jwk",
    "bind_public_key",
]

#: Minimum HMAC secret length per algorithm: the hash output size, as
#: RFC 7518, section 3.2 requires.
HMAC_ALGORITHMS: Mapping[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "ES256K",
        "EdDSA",
    }
)

#: Smallest RSA modulus accepted, in bits (NIST SP 800-131A).
MIN_RSA_BITS = 2048

_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES: Mapping[str, str] = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
    "secp256k1": "ES256K",
}
_ALGORITHMS = get_default_algorithms()


class UnusableKeyError(ValueError):
    """A key cannot be used: wrong type, too weak or unreadable."""


def algorithm(name: str) -> Algorithm:
    """Return PyJWT's algorithm object for ``name``."""
    return _ALGORITHMS[name]


class BoundKey:
    """A prepared key, its ``kid`` and the algorithms it may verify."""

    __slots__ = ("algorithms", "key", "kid", "source")

    def __init__(
        self, key: Any, algorithms: frozenset[str], kid: str | None, source: Any
    ) -> None:
        self.key = key
        self.algorithms = algorithms
        self.kid = kid
        #: What the key was built from, compared to tell whether a refreshed
        #: key set still contains this key.
        self.source = source


def _algorithms_for(public_key: Any) -> frozenset[str]:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise UnusableKeyError(
                f"RSA key of {public_key.key_size} bits, expected >= {MIN_RSA_BITS}"
            )
        return _RSA
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        name = _EC_CURVES.get(public_key.curve.name)
        if name is None:
            raise UnusableKeyError(f"unsupported curve {public_key.curve.name}")
        return frozenset({name, "ES521"} if name == "ES512" else {name})
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return frozenset({"EdDSA"})
    raise UnusableKeyError(f"unsupported key type {type(public_key).__name__}")


def bind_public_key(
    public_key: Any, allowed: Iterable[str], kid: str | None, source: Any
) -> BoundKey:
    """Bind an asymmetric public key to the allowed algorithms its type supports."""
    if not hasattr(public_key, "public_bytes") or hasattr(public_key, "private_bytes"):
        raise UnusableKeyError("expected a public key")
    usable = _algorithms_for(public_key) & frozenset(allowed)
    if not usable:
        raise UnusableKeyError("the key type matches none of the allowed algorithms")
    return BoundKey(public_key, usable, kid, source)


def bind_pem(pem: bytes, allowed: Iterable[str], kid: str | None) -> BoundKey:
    """Load a PEM public key (not a private key or a certificate) and bind it."""
    try:
        public_key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise UnusableKeyError("not a PEM public key") from exc
    return bind_public_key(public_key, allowed, kid, pem)


def bind_jwk(jwk: Mapping[str, Any], allowed: Iterable[str]) -> BoundKey:
    """Bind a public JWK (RFC 7517). Symmetric (``oct``) and private keys are refused.

    ``x5c``, ``x5u`` and other members that point at more key material are
    ignored: only the key's own parameters are used.
    """
    if jwk.get("kty") == "oct":
        raise UnusableKeyError("symmetric keys are not accepted in a JWK")
    if "d" in jwk:
        raise UnusableKeyError("private key material in a public JWK")
    kid = jwk.get("kid")
    if kid is not None and type(kid) is not str:
        raise UnusableKeyError("kid is not a string")
    members = {
        name: jwk[name] for name in ("kty", "crv", "n", "e", "x", "y") if name in jwk
    }
    try:
        public_key = PyJWK(members).key
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise UnusableKeyError(f"unusable JWK: {type(exc).__name__}") from exc
    allowed = frozenset(allowed)
    declared = jwk.get("alg")
    if declared is not None:
        # A key that names its algorithm verifies that algorithm only.
        allowed = allowed & {declared}
    source = tuple(sorted((name, str(value)) for name, value in members.items()))
    return bind_public_key(public_key, allowed, kid, source)


def bind_hmac_secret(
    secret: bytes, allowed: Iterable[str], kid: str | None
) -> BoundKey:
    """Bind an HMAC secret; it must be at least as long as each hash output."""
    allowed = frozenset(allowed)
    usable = allowed & HMAC_ALGORITHMS.keys()
    if not usable:
        raise UnusableKeyError(
            "an HMAC secret needs an HS256, HS384 or HS512 algorithm"
        )
    shortest = max(HMAC_ALGORITHMS[name] for name in usable)
    if len(secret) < shortest:
        raise UnusableKeyError(
            f"HMAC secret of {len(secret)} bytes, expected >= {shortest}"
        )
    return BoundKey(
        algorithm("HS256").prepare_key(secret), frozenset(usable), kid, None
    )


class StaticKeySet:
    """Keys fixed at start-up, looked up by ``kid``."""

    #: Never refreshed, never stale.
    generation = 0
    refresh_at = float("inf")

    def __init__(self, keys: Iterable[BoundKey]) -> None:
        self.keys = tuple(keys)
        self.by_kid: dict[str, BoundKey] = {}
        for key in self.keys:
            if key.kid is not None:
                self.by_kid[key.kid] = key

    def find(self, kid: str | None, alg: str) -> BoundKey | None:
        """Return the key for ``kid`` and ``alg``, or ``None``.

        A key configured without a ``kid`` serves tokens with any ``kid``.
        Without a match by ``kid``, exactly one such key must fit, so a token
        never makes the verifier try every key in turn.
        """
        if kid is not None:
            key = self.by_kid.get(kid)
            if key is not None:
                return key if alg in key.algorithms else None
        candidates = [
            key for key in self.keys if key.kid is None and alg in key.algorithms
        ]
        return candidates[0] if len(candidates) == 1 else None

    def maintain(self, now: float) -> None:
        """Nothing to refresh."""

    def contains(self, key: BoundKey) -> bool:
        return True
