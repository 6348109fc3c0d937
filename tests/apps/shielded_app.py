"""A bare WSGI app behind a shield, for tests that run it under Gunicorn.

``/login`` always fails with 401; every other path returns 200. The policy
file is named by ``WSGISHIELD_TEST_POLICY``; the Redis URL comes from
``WSGISHIELD_REDIS_URL`` as usual.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from wsgishield import Shield


def bare_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/login":
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"wrong password\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


# The deployment decides where wsgishield's records go; here, to stderr,
# which the tests read from Gunicorn's log.
logging.basicConfig(level=logging.WARNING)

app = Shield(bare_app, os.environ["WSGISHIELD_TEST_POLICY"])
