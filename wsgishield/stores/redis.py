"""Redis connections built from :class:`~wsgishield.policy.RedisSettings`.

Connections are opened lazily on first use, in the worker that uses them:
redis-py's connection pools notice a fork and start afresh, so a client
built before Gunicorn forks is safe to use in every worker.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..policy import RedisSettings

__all__ = ["REDIS_URL_VARIABLE", "connect", "hash_tagged"]

#: Environment variable that overrides ``redis.url`` in the policy.
REDIS_URL_VARIABLE = "WSGISHIELD_REDIS_URL"


def connect(settings: RedisSettings) -> Any:
    """Build a redis-py client (``Redis`` or ``RedisCluster``) for ``settings``."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry
        from redis.sentinel import Sentinel
    except ImportError as exc:
        raise ConfigurationError(
            "redis",
            settings.mode,
            "redis-py is not installed: pip install 'wsgishield[redis]'",
        ) from exc

    url = os.environ.get(REDIS_URL_VARIABLE) or settings.url
    timeout = settings.timeout_ms / 1000
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # A command that timed out may have run; the layers decide whether
        # to retry, so redis-py must not replay it behind their back.
        "retry_on_timeout": False,
        # redis-py 6 and later retry timeouts and connection errors up to
        # ten times with backoff by default, which replays commands and
        # multiplies the timeout; every retry decision stays with the caller.
        "retry": Retry(NoBackoff(), 0),
    }

    if settings.mode == "cluster":
        return RedisCluster.from_url(url, **options)
    if settings.mode == "sentinel":
        if not settings.sentinels:
            raise ConfigurationError(
                "redis.sentinels", [], "sentinel mode needs at least one sentinel"
            )
        hosts = []
        for entry in settings.sentinels:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError("redis.sentinels", entry, "expected HOST:PORT")
            hosts.append((host.strip("[]"), int(port)))
        # redis-py's Sentinel API carries no type annotations.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, sentinel_kwargs={"socket_timeout": timeout}, **options
        )
        return sentinel.master_for(settings.service_name)  # type: ignore[no-untyped-call]
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        # The URL may carry a password: never put it in an error message.
        redacted_url = url.split("@", 1)[-1] if "@" in url else url
        raise ConfigurationError("redis.url", redacted_url, str(exc)) from exc


def hash_tagged(prefix: str, tag: str, *parts: str) -> str:
    """Build a key ``prefix:{tag}:parts...``.

    Keys that share a tag live in one Redis Cluster slot, so one Lua script
    may touch all of them without a CROSSSLOT error.
    """
    suffix = ":".join(parts)
    return f"{prefix}:{{{tag}}}:{suffix}" if suffix else f"{prefix}:{{{tag}}}"
