"""A shielded WSGI app for Gunicorn tests of the auth layer.

Settings come from the environment: ``WSGISHIELD_REDIS_URL`` (revocations
in Redis) and the HMAC secret variable of ``tests.support.tokens``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support.tokens import ISSUER, SECRET_VARIABLE
from wsgishield import Shield, context


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    identity = environ.get(context.IDENTITY)
    body = json.dumps(
        {"subject": identity.subject if identity else None, "pid": os.getpid()}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


application = Shield(
    _app,
    {
        "redis": {"url": "redis://127.0.0.1:1/0", "key_prefix": "authtest"},
        "auth": {
            "issuers": {
                "main": {
                    "issuer": ISSUER,
                    "algorithms": ["HS256"],
                    "keys": [{"secret_env": SECRET_VARIABLE}],
                }
            },
            "revocation": {"store": "redis", "sync_interval_ms": 1000},
        },
        "routes": [{"id": "all", "path": "/**", "auth": {}}],
    },
)
