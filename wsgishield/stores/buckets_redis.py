"""Rate-limit buckets in Redis: one Lua script call per request.

Every policy of a request is checked and consumed by ``lua/gcra.lua`` in
one ``EVALSHA``: one round trip, atomic, with the time taken from the Redis
server so that app servers with skewed clocks agree. The keys of one request
share a hash tag, so Redis Cluster runs the script on one node without a
CROSSSLOT error. Every key expires when its bucket is full again.

The store calls the script by its SHA1. A ``NOSCRIPT`` reply (on first
use, or after a restart, a failover or ``SCRIPT FLUSH``) loads it and
repeats the call, which is safe because the script did not run. A timeout
is never repeated, because the script may have run. A ``READONLY`` reply (a
replica promoted away under us) drops the pooled connections so that the
next call reconnects to the new master.

With a plain ``redis.Redis`` client (one node, or Sentinel's
``master_for``), the store bypasses redis-py's ``execute_command`` and its
retry wrapper, observability hooks and per-argument packing, which made up
most of the store's cost over a ``PING`` (docs/benchmarks/ratelimit.md).
It packs the ``EVALSHA`` command in RESP, with the parts that a list of
policies fixes packed once, sends it on a connection from the client's
pool and reads the reply, so redis-py's command metrics do not count these
calls. The pool still provides fork safety and reconnects. A connection
that timed out or broke is disconnected, because its unread reply would be
read as the reply to the next command. A connection that got an error
reply is still in step and goes back to the pool. ``RedisCluster``, which
routes by slot, and the other clients that :func:`_lean_pool` names go
through ``client.evalsha``.

A request that Redis denied is remembered locally until its retry time: the
same request (same keys, same cost) is denied again without a
Redis call, since no other request can make those buckets fuller sooner.

Failures raise :class:`~wsgishield.errors.StoreError` and feed a
:class:`~wsgishield.stores.breaker.CircuitBreaker`; while it is open, calls
fail at once and the middleware applies each policy's failure mode.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import inspect
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
# Redis names a script by the SHA1 of its text.
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()


def _bulk(value: bytes) -> bytes:
    """Return ``value`` as a RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


# Denied requests remembered per process; the oldest entry is dropped first.
DEFAULT_DENY_CACHE_SIZE = 10_000
# Script arguments remembered per list of policies. A configuration has one
# list per route and per missing key part, far fewer than this.
_MAX_POLICY_ARGUMENTS = 1024
# ARGV[1] asking the script to read the server's TIME.
_SERVER_TIME = b"0"
# Pieces of packed commands (RESP bulk strings), made once: the header of a
# short bulk string by its length, ARGV[1] for the server's TIME, small costs.
_BULK_HEADERS = tuple(b"$%d\r\n" % size for size in range(512))
_PACKED_SERVER_TIME = b"$1\r\n0\r\n"
_PACKED_COSTS = {cost: _bulk(b"%d" % cost) for cost in range(100)}
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
        self._deny_cache: dict[tuple[Any, ...], tuple[int, int, Outcome]] = {}
        self._policy_arguments: dict[tuple[Limit, ...], tuple[bytes, ...]] = {}
        # Per list of policies: the packed command up to the first key, and
        # the packed policy arguments that follow the cost.
        self._packed: dict[tuple[Limit, ...], tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()
        self._no_script = redis.exceptions.NoScriptError
        self._read_only = redis.exceptions.ReadOnlyError
        self._error_reply = redis.exceptions.ResponseError
        self._pool = _lean_pool(client, redis)
        if self._pool is not None:
            self._get_connection = _connection_getter(self._pool)
        # hash_tagged(prefix, tag, "rl", key), built in the packed path as
        # _key_start + tag + "}:rl:" + key.
        self._key_start = f"{prefix}:{{"
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

        policies = tuple(limits)
        try:
            if self._pool is not None and len(keys) == len(policies):
                reply = self._call_packed(self._pack(tag, keys, cost, policies))
            else:
                reply = self._call(tag, keys, cost, policies)
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

    def _call(
        self, tag: str, keys: Sequence[str], cost: int, policies: tuple[Limit, ...]
    ) -> Any:
        """Call the script through ``client.evalsha``, which routes by slot."""
        # The keys, then ARGV: the time, the cost and three per policy.
        head = hash_tagged(self.prefix, tag, "rl", "")
        arguments: list[Any] = list(map(head.__add__, keys))
        arguments.append(self.server_time() if self.server_time else _SERVER_TIME)
        arguments.append(cost)
        arguments += self._policy_arguments.get(policies) or self._encode(policies)
        try:
            return self.client.evalsha(GCRA_SHA, len(keys), *arguments)
        except self._no_script:
            # The script did not run, so calling it again is safe.
            self._load()
            return self.client.evalsha(GCRA_SHA, len(keys), *arguments)

    def _pack(
        self, tag: str, keys: Sequence[str], cost: int, policies: tuple[Limit, ...]
    ) -> bytes:
        """Pack the ``EVALSHA`` command of one request in RESP."""
        start, policy_arguments = self._packed.get(policies) or self._pack_policies(
            policies
        )
        head = self._key_start + tag + "}:rl:"
        parts = [start]
        # Appending piece by piece and joining once beats formatting bytes.
        for key in keys:
            name = (head + key).encode()
            size = len(name)
            parts.append(_BULK_HEADERS[size] if size < 512 else b"$%d\r\n" % size)
            parts.append(name)
            parts.append(b"\r\n")
        if self.server_time is None:
            parts.append(_PACKED_SERVER_TIME)
        else:
            parts.append(_bulk(b"%d" % self.server_time()))
        parts.append(_PACKED_COSTS.get(cost) or _bulk(b"%d" % cost))
        parts.append(policy_arguments)
        return b"".join(parts)

    def _pack_policies(self, policies: tuple[Limit, ...]) -> tuple[bytes, bytes]:
        """Pack what ``policies`` fix in a command, once per list."""
        arguments = self._policy_arguments.get(policies) or self._encode(policies)
        # EVALSHA, the SHA, the key count, the keys, the time, the cost and
        # the policy arguments.
        items = 3 + len(policies) + 2 + len(arguments)
        start = b"*%d\r\n" % items + b"".join(
            map(_bulk, (b"EVALSHA", GCRA_SHA.encode("ascii"), b"%d" % len(policies)))
        )
        packed = (start, b"".join(map(_bulk, arguments)))
        if len(self._packed) < _MAX_POLICY_ARGUMENTS:
            self._packed[policies] = packed
        return packed

    def _call_packed(self, command: bytes) -> Any:
        """Send a packed ``EVALSHA``, and load the script if Redis lacks it."""
        try:
            return self._round_trip(command)
        except self._no_script:
            # The script did not run, so calling it again is safe.
            self._load()
            return self._round_trip(command)

    def _round_trip(self, command: bytes) -> Any:
        pool = self._pool
        connection = self._get_connection()
        try:
            # An iterable of byte strings: each one is written as it is.
            connection.send_packed_command((command,))
            return connection.read_response()
        except self._error_reply:
            # Redis replied with an error: the connection is still in step.
            raise
        except BaseException:
            # A timeout or a broken connection leaves a reply unread or half
            # read, so this connection must not carry another command.
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _load(self) -> None:
        # Redis names the script by its SHA1, which is GCRA_SHA.
        self.client.script_load(GCRA_SCRIPT)

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
        if count == 1:
            admitted, remaining, retry_after, reset_after = reply
            result = (not retry_after, 0, remaining, retry_after, reset_after)
            return _new(Outcome, (admitted == 1, [_new(BucketResult, result)]))
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


def _lean_pool(client: Any, redis: Any) -> Any:
    """Return the connection pool to send packed commands on, or None.

    Only a plain ``redis.Redis`` client qualifies: one node, or the master
    that Sentinel names. ``RedisCluster`` routes each command by slot. A
    single-connection client owns its connection, and a pool with a
    client-side cache wraps its connections. A subclass that overrides
    ``execute_command`` expects to see every command. Keys are packed as
    UTF-8, redis-py's default encoding.
    """
    if not isinstance(client, redis.Redis):
        return None
    if type(client).execute_command is not redis.Redis.execute_command:
        return None
    if getattr(client, "connection", None) is not None:
        return None
    pool = client.connection_pool
    if getattr(pool, "cache", None) is not None:
        return None
    options = pool.connection_kwargs
    if codecs.lookup(options.get("encoding", "utf-8")).name != "utf-8":
        return None
    if options.get("encoding_errors", "strict") != "strict":
        return None
    return pool


def _connection_getter(pool: Any) -> Callable[[], Any]:
    """Build a function that takes a connection from ``pool``.

    redis-py before 5.3 requires a command name, which later versions
    deprecate.
    """
    parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    if parameter is not None and parameter.default is inspect.Parameter.empty:
        get_connection = pool.get_connection
        return lambda: get_connection("EVALSHA")
    getter: Callable[[], Any] = pool.get_connection
    return getter
