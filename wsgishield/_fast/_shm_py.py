"""Pure-Python twin of the shared-memory bucket table (``_shm_c.pyx``).

The twin reads and writes the same layout (see ``_shm_common``) but locks
with ``fcntl.lockf`` on the table file instead of the process-shared mutex,
so every process of one deployment must use the same twin.
"""

from __future__ import annotations

import fcntl
import mmap
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

from ._gcra_py import update
from ._shm_common import (
    FNV_OFFSET,
    FNV_PRIME,
    HEADER_BYTES,
    MAGIC,
    MAX_POLICIES,
    OVERFLOW_SALT,
    PROBE_WINDOW,
    SLOT_BYTES,
    state_item,
)

__all__ = ["COMPILED", "Admission", "SharedTable", "key_hash", "monotonic_microseconds"]

COMPILED = False

_MASK = (1 << 64) - 1
_SLOT = struct.Struct("<Qq")
_MAGIC = struct.Struct("<QQ")


def key_hash(text: str) -> int:
    """Return the 64-bit FNV-1a hash of ``text`` in UTF-8, never 0."""
    value = FNV_OFFSET
    for byte in text.encode("utf-8", "surrogatepass"):
        value = ((value ^ byte) * FNV_PRIME) & _MASK
    return value or 1


def monotonic_microseconds() -> int:
    """Return ``CLOCK_MONOTONIC`` in microseconds, shared by every process."""
    return time.monotonic_ns() // 1000


class Admission:
    """The policies of one route, prepared for :meth:`SharedTable.admit`.

    Every policy is keyed by the client address alone (its bucket key is
    ``id|address``) and none is in shadow mode. With ``fields`` true, an
    admitted request gets its ``RateLimit-Policy`` and ``RateLimit`` fields.
    """

    def __init__(
        self, limits: Sequence[Any], cost: int, *, fields: bool = True
    ) -> None:
        self.limits = tuple(limits)
        if not 0 < len(self.limits) <= MAX_POLICIES:
            raise ValueError(f"expected 1 to {MAX_POLICIES} policies")
        for limit in self.limits:
            if limit.shadow:
                raise ValueError(f"policy {limit.id!r} is in shadow mode")
        self.cost = cost
        self.key_prefixes = [limit.id + "|" for limit in self.limits]
        self.policy_field: tuple[str, str] | None = None
        if fields:
            items = ", ".join(limit.policy_item for limit in self.limits)
            self.policy_field = ("RateLimit-Policy", items)


class SharedTable:
    """Bucket times in a shared mapping, updated under an exclusive lock."""

    def __init__(
        self, mapping: mmap.mmap, fd: int, slots: int, *, result: type = tuple
    ) -> None:
        if slots < PROBE_WINDOW or slots & (slots - 1):
            raise ValueError("slots must be a power of two of at least 8")
        if not issubclass(result, tuple) or result.__itemsize__ != tuple.__itemsize__:
            raise TypeError("result must be tuple or a subclass with its layout")
        self.result = result
        if len(mapping) < HEADER_BYTES + slots * SLOT_BYTES:
            raise ValueError("the mapping is smaller than the table")
        self.mapping = mapping
        self.fd = fd
        self.slots = slots
        self._thread_lock = threading.Lock()

    def initialize(self) -> None:
        """Write the header of a new, zero-filled table."""
        _MAGIC.pack_into(self.mapping, 0, MAGIC, self.slots)

    def check(self) -> bool:
        """Tell whether the mapping contains an initialized table of this size."""
        magic, slots = _MAGIC.unpack_from(self.mapping, 0)
        return bool(magic == MAGIC and slots == self.slots)

    def apply(
        self, limits: Sequence[Any], keys: Sequence[str], cost: int, now: int
    ) -> tuple[bool, list[tuple[bool, int, int, int, int]]]:
        """Check and consume the buckets of one request, all or nothing.

        Returns ``(admitted, results)`` with one kernel result per policy,
        each of the ``result`` type; the TATs are stored only when the
        request is admitted.
        """
        if len(keys) > MAX_POLICIES:
            raise ValueError(f"at most {MAX_POLICIES} policies per request")
        hashes = [key_hash(key) for key in keys]
        overflow = [key_hash(limit.id) ^ OVERFLOW_SALT or 1 for limit in limits]

        with self._thread_lock:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                return self._apply_locked(limits, hashes, overflow, cost, now)
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def admit(
        self, plan: Admission, client: str, now: int | None = None
    ) -> list[tuple[str, str]] | None:
        """Check and consume the buckets of ``plan`` for ``client``, all or nothing.

        Returns the response fields of an admitted request (an empty list
        when the plan formats none), or ``None`` when a policy denied it and
        nothing was consumed. ``now`` defaults to ``CLOCK_MONOTONIC``.
        """
        keys = [prefix + client for prefix in plan.key_prefixes]
        if now is None:
            now = monotonic_microseconds()
        admitted, results = self.apply(plan.limits, keys, plan.cost, now)
        if not admitted:
            return None
        if plan.policy_field is None:
            return []
        state = ", ".join(
            state_item(limit.state_prefix, result[2], result[4])
            for limit, result in zip(plan.limits, results, strict=True)
        )
        return [plan.policy_field, ("RateLimit", state)]

    def _apply_locked(
        self,
        limits: Sequence[Any],
        hashes: list[int],
        overflow: list[int],
        cost: int,
        now: int,
    ) -> tuple[bool, list[tuple[bool, int, int, int, int]]]:
        slots: list[tuple[int, int]] = []
        for wanted, spare in zip(hashes, overflow, strict=True):
            slots.append(self._find(wanted, spare, now, [slot for slot, _ in slots]))
        admitted = True
        results = []
        for (slot, _), limit in zip(slots, limits, strict=True):
            tat = (
                _SLOT.unpack_from(self.mapping, self._offset(slot))[1]
                if slot >= 0
                else 0
            )
            result = update(tat, now, limit.interval, limit.tolerance, cost)
            if not result[0] and not limit.shadow:
                admitted = False
            results.append(result)
        if admitted:
            for (slot, stored_hash), result in zip(slots, results, strict=True):
                if slot >= 0 and result[0]:
                    _SLOT.pack_into(
                        self.mapping, self._offset(slot), stored_hash, result[1]
                    )
        if self.result is not tuple:
            results = [tuple.__new__(self.result, result) for result in results]
        return admitted, results

    def _offset(self, slot: int) -> int:
        return HEADER_BYTES + slot * SLOT_BYTES

    def _find(
        self, wanted: int, overflow: int, now: int, taken: list[int]
    ) -> tuple[int, int]:
        """Return (slot, hash to store): the key's slot, a free one, or overflow.

        The slot is -1 when even the overflow bucket has no room; that
        policy then starts from a full bucket and stores nothing.
        """
        slot = self._probe(wanted, now, taken)
        if slot >= 0:
            return slot, wanted
        return self._probe(overflow, now, taken), overflow

    def _probe(self, wanted: int, now: int, taken: list[int]) -> int:
        home = wanted & (self.slots - 1)
        free = -1
        for step in range(PROBE_WINDOW):
            slot = (home + step) & (self.slots - 1)
            stored, tat = _SLOT.unpack_from(self.mapping, self._offset(slot))
            if stored == wanted:
                return slot
            if free < 0 and (stored == 0 or tat <= now) and slot not in taken:
                free = slot
        return free
