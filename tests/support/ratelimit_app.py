"""A bare WSGI app behind the shield with embedded rate-limit defaults.

Gunicorn serves it in the rate-limit tests; ``RATELIMIT_RATE`` sets the one
policy's rate (``5/day`` by default).
"""

from __future__ import annotations

import os

from wsgishield import Shield


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


app = Shield(
    hello,
    {
        "limits": {
            "policies": {"daily": {"rate": os.environ.get("RATELIMIT_RATE", "5/day")}},
            "default": ["daily"],
        }
    },
)
