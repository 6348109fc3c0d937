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

Metrics and security events (see ``docs/observability.md``):

``PROMETHEUS_MULTIPROC_DIR``
    prometheus-client's multiprocess mode. The master empties the directory
    at start (``on_starting``) and merges the files of every worker that
    exits into one archive per metric type (``child_exit``), so the file
    count and the scrape time stay bounded however often workers recycle.
``WSGISHIELD_METRICS_PORT``, ``WSGISHIELD_METRICS_BIND``
    a scrape listener in the master on this port (address ``127.0.0.1`` by
    default), serving the merged values of every worker.
``WSGISHIELD_EVENTS_LOG``
    write the ``wsgishield.events`` loggers as ECS JSON lines to this file,
    or to stderr with ``-``.

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
- ``on_exit`` removes the shared-memory rate-limit table that the workers
  of this arbiter mapped (``/dev/shm/wsgishield-buckets-PID-*``), and
  ``on_starting`` removes one that a killed arbiter with the same pid left.
- The binding is loopback by default. Put Nginx in front
  (``deploy/nginx/wsgishield.conf``) rather than exposing Gunicorn: sync
  workers are held by slow clients, and Nginx buffers requests for them.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import sys
from typing import Any

from . import multiprocess

__all__ = [
    "bind",
    "child_exit",
    "control_socket_disable",
    "forwarder_headers",
    "graceful_timeout",
    "keepalive",
    "limit_request_field_size",
    "limit_request_fields",
    "limit_request_line",
    "max_requests",
    "max_requests_jitter",
    "on_exit",
    "on_starting",
    "secure_scheme_headers",
    "threads",
    "timeout",
    "when_ready",
    "worker_class",
    "worker_exit",
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
# through request headers. A client on loopback could then move PATH_INFO
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
    _start_metrics_listener(server)


# --- Metrics and security events -----------------------------------------

metrics_port = _integer("WSGISHIELD_METRICS_PORT", 0)
metrics_bind = os.environ.get("WSGISHIELD_METRICS_BIND", "127.0.0.1")
events_log = os.environ.get("WSGISHIELD_EVENTS_LOG", "")


def on_starting(server: Any) -> None:
    """Clear state a dead arbiter left, and attach the JSON event log if configured.

    Shared-memory rate-limit tables are named after the arbiter's pid. One
    left by a killed arbiter whose pid is reused would hand its buckets to
    the new workers, so this arbiter's names start empty.
    """
    from .stores.buckets_shm import remove_tables

    remove_tables(os.getpid())
    directory = os.environ.get(multiprocess.MULTIPROC_ENV)
    if directory:
        multiprocess.prepare_multiprocess_directory(directory)
    if events_log:
        _attach_events_log(events_log)


def worker_exit(server: Any, worker: Any) -> None:
    """Write the exiting worker's last metric values before it is archived."""
    from . import metrics

    metrics.REGISTRY.flush()


def child_exit(server: Any, worker: Any) -> None:
    """Merge the metrics files of an exited worker into the archive."""
    directory = os.environ.get(multiprocess.MULTIPROC_ENV)
    if not directory:
        return
    try:
        multiprocess.archive_dead_process(worker.pid, directory)
    except (OSError, ValueError):
        # A damaged file must not take the master down. The worker's files
        # stay in place, where scrapes still read them.
        server.log.exception("archiving the metrics of worker %s failed", worker.pid)


def _start_metrics_listener(server: Any) -> None:
    if not metrics_port:
        return
    if not os.environ.get(multiprocess.MULTIPROC_ENV):
        server.log.warning(
            "WSGISHIELD_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: "
            "the master has no worker values to serve, so no listener was started"
        )
        return
    from . import metrics

    metrics.start_exposition_server(metrics_port, metrics_bind)
    print(
        f"wsgishield: serving metrics on {metrics_bind}:{metrics_port}",
        file=sys.stderr,
        flush=True,
    )


def _attach_events_log(target: str) -> None:
    # Imported here: wsgishield.logging pulls in msgspec, which a plain
    # Gunicorn config import does not need.
    from .logging import EcsJsonFormatter

    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        # Reopens the file after logrotate moves it.
        handler = logging.handlers.WatchedFileHandler(target, encoding="utf-8")
    handler.setFormatter(EcsJsonFormatter())
    logger = logging.getLogger("wsgishield.events")
    logger.addHandler(handler)
    # Access records are logged at INFO, which the root logger's default
    # WARNING level would drop.
    logger.setLevel(logging.INFO)


def on_exit(server: Any) -> None:
    """Remove the shared-memory rate-limit tables of this arbiter's workers."""
    from .stores.buckets_shm import remove_tables

    remove_tables(os.getpid())
