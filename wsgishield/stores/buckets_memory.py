"""Rate-limit buckets in the memory of one process.

One theoretical arrival time (TAT) per bucket key, in a dict bounded by
``max_keys``. A key whose TAT has passed has a full bucket again, so
forgetting it changes no decision; the store only ever evicts such keys, and
a client that is being limited is never reset by eviction.

When every key in the table still has a partly spent bucket, a new key
shares one overflow bucket per policy with the other new keys until space
frees up: new clients are then limited together instead of not at all. The
table is scanned for expired keys at most once per expiry of the earliest
TAT it saw, so the scan costs O(1) per request on average.

No thread is started: expiry is lazy. Use it per process, or as the local
fallback of the Redis store; under Gunicorn each worker has its own table,
so a limit is enforced once per worker (use the ``shm`` or ``redis`` store
to share it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from .._fast._shm_common import state_item
from .._fast.gcra import update
from ..ratelimit import Limit, Outcome, decide

__all__ = [
    "OVERFLOW_KEY",
    "MemoryAdmission",
    "MemoryBucketStore",
    "monotonic_microseconds",
]

#: Key suffix of the shared bucket that new keys use while the table is full.
#: Key parts are never empty, so no real key contains "||".
OVERFLOW_KEY = "||overflow"


def monotonic_microseconds() -> int:
    """Return ``CLOCK_MONOTONIC`` in microseconds, shared by every process."""
    return time.monotonic_ns() // 1000


class MemoryAdmission:
    """The policies of one route, prepared for :meth:`MemoryBucketStore.admit`."""

    __slots__ = ("cost", "key_prefixes", "limits", "policy_field")

    def __init__(self, limits: Sequence[Limit], cost: int, *, fields: bool) -> None:
        self.limits = tuple(limits)
        self.cost = cost
        self.key_prefixes = tuple(limit.id + "|" for limit in self.limits)
        self.policy_field: tuple[str, str] | None = None
        if fields:
            items = ", ".join(limit.policy_item for limit in self.limits)
            self.policy_field = ("RateLimit-Policy", items)


class MemoryBucketStore:
    """A bounded dict of bucket times, safe to share between threads."""

    name = "memory"

    def __init__(
        self,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], int] = monotonic_microseconds,
    ) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._tats: dict[str, int] = {}
        self._lock = threading.Lock()
        # No scan before this time can free a key (the earliest TAT seen).
        self._next_sweep = 0

    def __len__(self) -> int:
        return len(self._tats)

    def apply(
        self, limits: Sequence[Limit], keys: Sequence[str], cost: int, tag: str = ""
    ) -> Outcome:
        """Check and consume every bucket of one request, all or nothing."""
        with self._lock:
            now = self.clock()
            tats = self._tats
            keys = [
                self._room_for(key, limit, now)
                for key, limit in zip(keys, limits, strict=True)
            ]
            outcome = decide([tats.get(key, 0) for key in keys], now, limits, cost)
            if outcome.allowed:
                for key, result in zip(keys, outcome.results, strict=True):
                    if result.allowed:
                        tats[key] = result.tat
            return outcome

    def prepare(
        self, limits: Sequence[Limit], cost: int, *, fields: bool
    ) -> MemoryAdmission:
        """Prepare the policies of one route for :meth:`admit`.

        Every policy must be keyed by the client address alone.
        """
        return MemoryAdmission(limits, cost, fields=fields)

    def admit(self, plan: MemoryAdmission, client: str) -> list[tuple[str, str]] | None:
        """Admit one request of a prepared route, or return ``None`` if denied.

        A denied request consumes nothing; the caller then takes
        :meth:`apply`, which reports the denial in full.
        """
        cost = plan.cost
        admitted = []
        with self._lock:
            now = self.clock()
            tats = self._tats
            for prefix, limit in zip(plan.key_prefixes, plan.limits, strict=True):
                key = self._room_for(prefix + client, limit, now)
                result = update(
                    tats.get(key, 0), now, limit.interval, limit.tolerance, cost
                )
                if not result[0]:
                    return None
                admitted.append((key, result))
            for key, result in admitted:
                tats[key] = result[1]
        if plan.policy_field is None:
            return []
        state = ", ".join(
            state_item(limit.state_prefix, result[2], result[4])
            for limit, (_, result) in zip(plan.limits, admitted, strict=True)
        )
        return [plan.policy_field, ("RateLimit", state)]

    def _room_for(self, key: str, limit: Limit, now: int) -> str:
        """Return ``key``, or the overflow key when the table has no room."""
        tats = self._tats
        if key in tats or len(tats) < self.max_keys:
            return key
        if now >= self._next_sweep:
            self._sweep(now)
            if len(tats) < self.max_keys:
                return key
        return limit.id + OVERFLOW_KEY

    def _sweep(self, now: int) -> None:
        earliest = 0
        expired = []
        for key, tat in self._tats.items():
            if tat <= now:
                expired.append(key)
            elif earliest == 0 or tat < earliest:
                earliest = tat
        for key in expired:
            del self._tats[key]
        self._next_sweep = earliest
