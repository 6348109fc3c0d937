"""Choose the rate-limit bucket store that a ``[limits]`` section names."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .buckets_memory import MemoryBucketStore

if TYPE_CHECKING:
    from ..metrics import MetricsRegistry
    from ..policy import LimitsPolicy, RedisSettings
    from ..ratelimit import Limit

__all__ = ["build_bucket_store", "under_gunicorn"]


def under_gunicorn() -> bool:
    """Tell whether this process was started by a Gunicorn arbiter.

    The arbiter sets ``SERVER_SOFTWARE`` in its own environment before it
    forks, so the workers (and a preloaded app) see it.
    """
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")


def build_bucket_store(
    settings: LimitsPolicy,
    redis: RedisSettings | None,
    limits: Iterable[Limit],
    *,
    registry: MetricsRegistry | None = None,
) -> Any:
    """Build the store for ``limits.store``; ``auto`` picks ``shm`` under Gunicorn.

    The Redis store's circuit breaker counts its state changes in
    ``registry`` when one is given.
    """
    kind = settings.store
    if kind == "auto":
        kind = "shm" if under_gunicorn() else "memory"

    if kind == "memory":
        return MemoryBucketStore(max_keys=settings.max_keys)
    if kind == "shm":
        from .buckets_shm import SharedMemoryBucketStore

        return SharedMemoryBucketStore(slots=settings.shm_slots)
    if redis is None:
        raise ConfigurationError(
            "limits.store", "redis", "the redis store needs a [redis] section"
        )
    from . import redis as redis_connections
    from .breaker import CircuitBreaker
    from .buckets_redis import RedisBucketStore

    return RedisBucketStore(
        redis_connections.connect(redis),
        prefix=redis.key_prefix,
        breaker=CircuitBreaker(
            "ratelimit",
            failure_threshold=settings.breaker_failures,
            reset_seconds=settings.breaker_reset_seconds,
            registry=registry,
        ),
    )
