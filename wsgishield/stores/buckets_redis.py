"""Rate-limit buckets in Redis: one Lua script call per request.

Every policy of a request is checked and consumed by ``lua/gcra.lua`` in
one ``EVALSHA``: one round trip, atomic, with the time taken from the Redis
server so that app servers with skewed clocks agree. The keys of one request
share a hash tag, so Redis Cluster runs the script on one node without a
CROSSSLOT error. Every key expires when its bucket is full again.

The script is loaded once and called by its SHA1; a ``NOSCRIPT`` reply
(after a restart, a failover or ``SCRIPT FLUSH``) loads it again and repeats
the call, which is safe because the script did not run. A timeout is never
repeated, because the script may have run. A ``READONLY`` reply (a replica
promoted away under us) drops the pooled connections so that the next call
reconnects to the new master.

A request that Redis denied is remembered locally until its retry time: the
same request (same keys, same or higher cost) is denied again without a
Redis call, since no other request can make those buckets fuller sooner.

Failures raise :class:`~wsgishield.errors.StoreError` and feed a
:class:`~wsgishield.stores.breaker.CircuitBreaker`; while it is open, calls
fail at once and the middleware applies each policy's failure mode.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from ..errors import StoreError
from ..ratelimit import BucketResult, Limit, Outcome
from .breaker import CircuitBreaker
from .buckets_memory import monotonic_microseconds
from .redis import hash_tagged

__all__ = ["GCRA_SCRIPT", "RedisBucketStore"]

GCRA_SCRIPT = resources.files("wsgishield").joinpath("lua/gcra.lua").read_text("utf-8")

# Denied requests remembered per process; the oldest entry is dropped first.
DEFAULT_DENY_CACHE_SIZE = 10_000
# Script arguments remembered per list of policies. A configuration has one
# list per route and per missing key part, far fewer than this.
_MAX_POLICY_ARGUMENTS = 1024
# ARGV[1] asking the script to read the server's TIME.
_SERVER_TIME = b"0"
# A NamedTuple class builds its instances in Python code. ``tuple.__new__``
# builds them in C at about half the cost, which counts on every request.
_new = tuple.__new__


class RedisBucketStore:
    """Buckets shared by every worker and host through one Redis deployment."""

    name = "redis"

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "wsgishield",
        breaker: CircuitBreaker | None = None,
        deny_cache_size: int = DEFAULT_DENY_CACHE_SIZE,
        server_time: Callable[[], int] | None = None,
        local_clock: Callable[[], int] = monotonic_microseconds,
    ) -> None:
        import redis

        self.client = client
        self.prefix = prefix
        self.breaker = breaker or CircuitBreaker("ratelimit")
        self.deny_cache_size = deny_cache_size
        # Tests replace the server's TIME with a fake clock; None uses TIME.
        self.server_time = server_time
        self.local_clock = local_clock
        self._sha: str | None = None
        self._deny_cache: dict[tuple[Any, ...], tuple[int, int, Outcome]] = {}
        self._policy_arguments: dict[tuple[Limit, ...], tuple[bytes, ...]] = {}
        self._lock = threading.Lock()
        self._no_script = redis.exceptions.NoScriptError
        self._read_only = redis.exceptions.ReadOnlyError
        # Cluster routing errors (slot not covered, ...) do not derive from
        # RedisError in redis-py.
        self._errors = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        )

    def redis_key(self, key: str, tag: str) -> str:
        """Return the Redis key of bucket ``key`` under hash tag ``tag``."""
        return hash_tagged(self.prefix, tag, "rl", key)

    def apply(
        self, limits: Sequence[Limit], keys: Sequence[str], cost: int, tag: str = "rl"
    ) -> Outcome:
        """Check and consume every bucket of one request in one script call."""
        cache_key = (tag, cost, *keys)
        if self._deny_cache:
            cached = self._cached_denial(cache_key)
            if cached is not None:
                return cached

        if not self.breaker.allow():
            raise StoreError("Redis circuit breaker is open", kind="breaker-open")

        # The keys, then ARGV: the time, the cost and three per policy.
        head = hash_tagged(self.prefix, tag, "rl", "")
        arguments: list[Any] = list(map(head.__add__, keys))
        arguments.append(self.server_time() if self.server_time else _SERVER_TIME)
        arguments.append(cost)
        policies = tuple(limits)
        arguments += self._policy_arguments.get(policies) or self._encode(policies)

        try:
            reply = self._call(len(keys), arguments)
        except self._read_only as exc:
            # After a failover this connection talks to a replica: reconnect.
            self._disconnect()
            self.breaker.failure()
            raise StoreError(
                "Redis replied READONLY; reconnecting", kind="readonly"
            ) from exc
        except self._errors as exc:
            self.breaker.failure()
            raise StoreError(f"Redis rate-limit call failed: {exc}") from exc
        self.breaker.success()

        outcome = self._outcome(reply, len(limits))
        if not outcome.allowed and self.deny_cache_size:
            retry_after = max(
                result.retry_after
                for limit, result in zip(limits, outcome.results, strict=True)
                if not result.allowed and not limit.shadow
            )
            self._remember_denial(cache_key, retry_after, outcome)
        return outcome

    def _encode(self, limits: tuple[Limit, ...]) -> tuple[bytes, ...]:
        """Return the script arguments of ``limits``, encoded once per list."""
        encoded: list[bytes] = []
        for limit in limits:
            shadow = b"1" if limit.shadow else b"0"
            encoded += (b"%d" % limit.interval, b"%d" % limit.tolerance, shadow)
        arguments = tuple(encoded)
        if len(self._policy_arguments) < _MAX_POLICY_ARGUMENTS:
            self._policy_arguments[limits] = arguments
        return arguments

    def _call(self, key_count: int, keys_and_arguments: list[Any]) -> Any:
        sha = self._sha or self._load()
        try:
            return self.client.evalsha(sha, key_count, *keys_and_arguments)
        except self._no_script:
            # The script did not run, so calling it again is safe.
            return self.client.evalsha(self._load(), key_count, *keys_and_arguments)

    def _load(self) -> str:
        sha: str = self.client.script_load(GCRA_SCRIPT)
        if isinstance(sha, bytes):
            sha = sha.decode("ascii")
        self._sha = sha
        return sha

    def _disconnect(self) -> None:
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()

    @staticmethod
    def _outcome(reply: Sequence[int], count: int) -> Outcome:
        if len(reply) != 1 + 3 * count:
            raise StoreError(
                f"unexpected rate-limit script reply of {len(reply)} items",
                kind="reply",
            )
        # Per policy: remaining, retry_after, reset_after. A policy allowed
        # the request exactly when its retry_after is 0.
        results = []
        for i in range(1, len(reply), 3):
            retry_after = reply[i + 1]
            result = (not retry_after, 0, reply[i], retry_after, reply[i + 2])
            results.append(_new(BucketResult, result))
        return _new(Outcome, (reply[0] == 1, results))

    def _cached_denial(self, cache_key: tuple[Any, ...]) -> Outcome | None:
        entry = self._deny_cache.get(cache_key)
        if entry is None:
            return None
        denied_at, retry_after, outcome = entry
        elapsed = self.local_clock() - denied_at
        if elapsed >= retry_after:
            self._deny_cache.pop(cache_key, None)
            return None
        # Shift the waits by the time since the Redis reply. Remaining counts
        # stay as they were, which errs low.
        results = [
            result._replace(
                retry_after=max(0, result.retry_after - elapsed),
                reset_after=max(0, result.reset_after - elapsed),
            )
            for result in outcome.results
        ]
        return Outcome(False, results)

    def _remember_denial(
        self, cache_key: tuple[Any, ...], retry_after: int, outcome: Outcome
    ) -> None:
        with self._lock:
            cache = self._deny_cache
            if cache_key not in cache and len(cache) >= self.deny_cache_size:
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del cache[next(iter(cache))]
            cache[cache_key] = (self.local_clock(), retry_after, outcome)
