"""Access and refresh tokens for the example API: login and refresh.

Signing uses HS256 when ``EXAMPLE_JWT_SECRET`` is set (at least 32 bytes),
and otherwise EdDSA (Ed25519) with a key generated on first run and kept in
``EXAMPLE_JWT_KEY_FILE`` (default ``app_example/instance/jwt-ed25519.pem``,
mode 0600). Access tokens carry ``typ: at+jwt`` and refresh tokens
``typ: refresh+jwt``; the shield accepts only the first on resource routes,
and ``/auth/refresh`` accepts only the second.

Demo users ``alice`` (role ``editor``) and ``admin`` (roles ``admin`` and
``editor``) log in with the password in ``EXAMPLE_DEMO_PASSWORD``; with the
variable unset, login is disabled.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from wsgishield.auth import (
    MemoryRevocationStore,
    Profile,
    RevocationStore,
    StaticKeySet,
    TokenError,
    Verifier,
)
from wsgishield.auth.keys import bind_hmac_secret, bind_public_key

__all__ = ["ISSUER", "TokenService"]

ISSUER = "https://api.example.local/auth"
AUDIENCE = "example-api"
SECRET_VARIABLE = "EXAMPLE_JWT_SECRET"
KEY_FILE_VARIABLE = "EXAMPLE_JWT_KEY_FILE"
PASSWORD_VARIABLE = "EXAMPLE_DEMO_PASSWORD"
DEFAULT_KEY_FILE = Path(__file__).resolve().parent / "instance" / "jwt-ed25519.pem"

ACCESS_SECONDS = 15 * 60
REFRESH_SECONDS = 8 * 3600
KEY_ID = "example-1"

USERS: dict[str, dict[str, Any]] = {
    "alice": {"roles": ["editor"], "scope": "items:read items:write"},
    "admin": {"roles": ["admin", "editor"], "scope": "items:read items:write"},
}


def _load_or_create_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Read the Ed25519 key at ``path``, creating it atomically on first run.

    Several Gunicorn workers may start at once: each writes a candidate to a
    temporary file and links it into place, and the losers read the winner's.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = ed25519.Ed25519PrivateKey.generate()
        pem = candidate.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".jwt-")
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, pem)
            os.close(descriptor)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path} does not contain an Ed25519 private key")
    return key


class TokenService:
    """Issue token pairs and verify refresh tokens."""

    def __init__(
        self, environ: Any = os.environ, revocation: RevocationStore | None = None
    ) -> None:
        secret = environ.get(SECRET_VARIABLE)
        if secret:
            self.algorithm = "HS256"
            self.signing_key: Any = secret
            verification_key = bind_hmac_secret(secret.encode(), ["HS256"], KEY_ID)
        else:
            path = Path(environ.get(KEY_FILE_VARIABLE) or DEFAULT_KEY_FILE)
            private = _load_or_create_key(path)
            self.algorithm = "EdDSA"
            self.signing_key = private
            verification_key = bind_public_key(
                private.public_key(), ["EdDSA"], KEY_ID, None
            )
        self.public_pem = (
            None
            if self.algorithm == "HS256"
            else self.signing_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode()
        )
        self.password = environ.get(PASSWORD_VARIABLE) or None
        # Set by the app to a function that records a refresh token's jti
        # once and returns False for a second use. The revocation store
        # below also refuses reuse, but the memory store is per process.
        self.claim_once: Callable[[str, int], bool] | None = None
        # Refresh tokens are checked here, not by the shield. A used one is
        # revoked so it cannot be replayed: in the shield's store when it is
        # given (shared through Redis when configured), else in this process.
        self.used_refresh_tokens = revocation or MemoryRevocationStore()
        self.refresh_verifier = Verifier(
            [
                Profile(
                    "refresh",
                    ISSUER,
                    algorithms=[self.algorithm],
                    keys=StaticKeySet([verification_key]),
                    audiences=[AUDIENCE],
                    types=["refresh+jwt"],
                    typ_required=True,
                    max_lifetime=REFRESH_SECONDS,
                )
            ],
            cache_size=0,
            revocation=self.used_refresh_tokens,
        )

    def use_revocation_store(self, store: RevocationStore) -> None:
        """Record used refresh tokens in ``store`` from now on."""
        self.used_refresh_tokens = store
        self.refresh_verifier.revocation = store

    def policy_keys(self) -> dict[str, Any]:
        """Return the issuer profile settings the shield needs for these keys."""
        if self.algorithm == "HS256":
            return {
                "algorithms": ["HS256"],
                "keys": [{"kid": KEY_ID, "secret_env": SECRET_VARIABLE}],
            }
        return {
            "algorithms": ["EdDSA"],
            "keys": [{"kid": KEY_ID, "pem": self.public_pem}],
        }

    def check_password(self, username: str, password: str) -> bool:
        """Tell whether ``password`` is right for the demo user ``username``."""
        if self.password is None or username not in USERS:
            return False
        expected = hashlib.sha256(self.password.encode()).digest()
        # JSON escapes can carry lone surrogates, which UTF-8 cannot encode;
        # "surrogatepass" hashes them instead of raising.
        given = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(expected, given)

    def issue(self, username: str) -> dict[str, Any]:
        """Return a new access and refresh token for ``username``."""
        user = USERS[username]
        now = int(time.time())
        common = {"iss": ISSUER, "sub": username, "aud": AUDIENCE, "iat": now}
        access = self._sign(
            {**common, "exp": now + ACCESS_SECONDS, "jti": uuid.uuid4().hex,
             "roles": user["roles"], "scope": user["scope"]},
            "at+jwt",
        )  # fmt: skip
        refresh = self._sign(
            {**common, "exp": now + REFRESH_SECONDS, "jti": uuid.uuid4().hex},
            "refresh+jwt",
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_SECONDS,
            "refresh_token": refresh,
        }

    def refresh(self, token: str) -> dict[str, Any]:
        """Exchange a refresh token for a new pair; the old one is revoked.

        Raises :class:`wsgishield.auth.TokenError` for an invalid, expired,
        reused or non-refresh token.
        """
        identity = self.refresh_verifier.verify(token)
        if identity.subject not in USERS:
            raise TokenError("unknown-subject", "The token subject is unknown.")
        if identity.token_id is None or identity.expires_at is None:
            raise TokenError("missing-claims", "The token lacks jti or exp.")
        if self.claim_once is not None and not self.claim_once(
            identity.token_id, int(identity.expires_at)
        ):
            raise TokenError("token-reused", "The refresh token was already used.")
        self.used_refresh_tokens.revoke_token(identity.token_id, identity.expires_at)
        return self.issue(identity.subject)

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(
            claims,
            self.signing_key,
            algorithm=self.algorithm,
            headers={"typ": typ, "kid": KEY_ID},
        )
