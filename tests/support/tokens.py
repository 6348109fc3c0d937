"""Build signed test tokens, including ones no honest library would produce."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt

ISSUER = "https://test.example.com/auth"
SECRET = "s" * 32 + "-test-secret-of-enough-length"
SECRET_VARIABLE = "WSGISHIELD_TEST_JWT_SECRET"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(now: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Valid claims for ``ISSUER``, with ``overrides`` applied (``None`` deletes)."""
    now = time.time() if now is None else now
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "iat": int(now),
        "exp": int(now) + 300,
        "jti": "token-1",
        "roles": ["reader"],
        "scope": "items:read",
    }
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def hs256(payload: dict[str, Any], secret: str = SECRET, **header: Any) -> str:
    """Sign ``payload`` with PyJWT."""
    return jwt.encode(payload, secret, algorithm="HS256", headers=header or None)


def raw_hs256(header_json: str, payload_json: str, secret: str = SECRET) -> str:
    """Sign exact JSON texts, so tests can send duplicates, strings and oddities."""
    signing_input = f"{b64url(header_json.encode())}.{b64url(payload_json.encode())}"
    signature = hmac.new(
        secret.encode(), signing_input.encode(), hashlib.sha256
    ).digest()
    return f"{signing_input}.{b64url(signature)}"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
