"""JWT verification, key sets, revocation and route authorization.

Nothing here imports WSGI or a web framework; the middleware in
:mod:`wsgishield.middleware.auth` puts these parts on the request path.
"""

from __future__ import annotations

from .authorization import Requirement
from .errors import KeysUnavailable, TokenError
from .jwks import JwksKeySet
from .keys import BoundKey, StaticKeySet
from .revocation import MemoryRevocationStore, RedisRevocationStore, RevocationStore
from .verifier import Identity, Profile, Verifier

__all__ = [
    "BoundKey",
    "Identity",
    "JwksKeySet",
    "KeysUnavailable",
    "MemoryRevocationStore",
    "Profile",
    "RedisRevocationStore",
    "Requirement",
    "RevocationStore",
    "StaticKeySet",
    "TokenError",
    "Verifier",
]
