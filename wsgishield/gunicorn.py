"""Gunicorn settings for an API behind wsgishield, importable from a config file.

``deploy/gunicorn.conf.py`` is one line::

    from wsgishield.gunicorn import *  # noqa: F403

Every setting reads an environment variable first, so one config file serves
development, CI and production:

==============================  ==================  ==========================
variable                        setting             default
==============================  ==================  ==========================
``WSGISHIELD_BIND``             ``bind``            ``127.0.0.1:8000``
``WEB_CONCURRENCY``             ``workers``         2 x cores + 1
``WSGISHIELD_THREADS``          ``threads``         1
``WSGISHIELD_APP``              ``wsgi_app``        ``app_example.wsgi:app``
``WSGISHIELD_TIMEOUT``          ``timeout``         30 (seconds)
``WSGISHIELD_MAX_REQUESTS``     ``max_requests``    10000 (0: never recycle)
==============================  ==================  ==========================

Choices that differ from Gunicorn's defaults, and why:

- ``secure_scheme_headers`` is empty: wsgishield resolves the scheme from
  trusted proxies only (``wsgishield.scheme``), so Gunicorn must not set
  ``wsgi.url_scheme`` from a header on its own terms.
- ``forwarder_headers`` is empty, so no request header can set
  ``SCRIPT_NAME`` or ``PATH_INFO``.
- ``max_requests`` with jitter recycles workers so a slow leak in the app
  cannot grow without bound, without restarting all workers at once.
- The control socket (Gunicorn 25.1+) is off: its one per-user path clashes
  when several instances share a host, and nothing here uses it.
- ``worker_tmp_dir`` is ``/dev/shm`` when it exists: the heartbeat file on a
  slow disk can make Gunicorn kill healthy workers.
- The binding is loopback by default. Put Nginx in front
  (``deploy/nginx/wsgishield.conf``) rather than exposing Gunicorn: sync
  workers are held by slow clients, and Nginx buffers requests for them.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

__all__ = [
    "bind",
    "control_socket_disable",
    "forwarder_headers",
    "graceful_timeout",
    "keepalive",
    "limit_request_field_size",
    "limit_request_fields",
    "limit_request_line",
    "max_requests",
    "max_requests_jitter",
    "secure_scheme_headers",
    "threads",
    "timeout",
    "when_ready",
    "worker_class",
    "worker_tmp_dir",
    "workers",
    "wsgi_app",
]


def _integer(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


bind = os.environ.get("WSGISHIELD_BIND", "127.0.0.1:8000")
workers = _integer("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1)
threads = _integer("WSGISHIELD_THREADS", 1)
worker_class = "gthread" if threads > 1 else "sync"
wsgi_app = os.environ.get("WSGISHIELD_APP", "app_example.wsgi:app")

timeout = _integer("WSGISHIELD_TIMEOUT", 30)
graceful_timeout = 30
# Longer than Nginx's upstream keepalive_timeout default (60 s) would be
# wasted; a few seconds keeps idle upstream connections reusable.
keepalive = 5

max_requests = _integer("WSGISHIELD_MAX_REQUESTS", 10000)
max_requests_jitter = max_requests // 10

# Gunicorn's own limits on the request head, kept at its defaults (which
# match Nginx's 8 KiB header buffers); wsgishield checks tighter per-route
# limits itself.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

secure_scheme_headers: dict[str, str] = {}
# Gunicorn lets a peer in forwarded_allow_ips set SCRIPT_NAME and PATH_INFO
# through request headers; a client on loopback could then move PATH_INFO
# outside the routes the policy names.
forwarder_headers = ""

worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Gunicorn 25.1+ opens a control socket at one fixed per-user path, so two
# instances on one host would contend for it; older versions ignore this.
control_socket_disable = True


def when_ready(server: Any) -> None:
    """Print where the server listens, once every worker can accept."""
    for listener in server.LISTENERS:
        print(
            f"wsgishield: serving {wsgi_app} on {listener}", file=sys.stderr, flush=True
        )
