"""The in-process response store: bounded by bytes, least recently used out.

Each worker process has its own copy. Eviction pops the least recently used
entry from an ``OrderedDict`` in O(1); expired entries go lazily when they
are read or reach the old end. A lock guards every operation, so threaded
workers (``gthread``) share one store safely.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .entry import Entry, VaryMarker

__all__ = ["MemoryStore"]

# Bytes charged per entry on top of its body and headers: the key, the
# struct and the dictionary slots, measured roughly with sys.getsizeof.
ENTRY_OVERHEAD = 400


def _size(key: str, value: Entry | VaryMarker) -> int:
    if isinstance(value, VaryMarker):
        return ENTRY_OVERHEAD + len(key) + sum(len(name) for name in value.vary)
    headers = sum(len(name) + len(text) for name, text in value.headers)
    return ENTRY_OVERHEAD + len(key) + len(value.body) + headers


class MemoryStore:
    """A byte-bounded LRU of entries with per-tag indexes."""

    shared = False

    def __init__(
        self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        # key -> (expires_at, size, tags, value)
        self._items: OrderedDict[
            str, tuple[float, int, tuple[str, ...], Entry | VaryMarker]
        ] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Entry | VaryMarker | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= self.clock():
                self._remove(key)
                return None
            self._items.move_to_end(key)
            return item[3]

    def set(
        self, key: str, value: Entry | VaryMarker, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        size = _size(key, value)
        if size > self.max_bytes:
            return
        tag_tuple = tuple(tags)
        with self._lock:
            if key in self._items:
                self._remove(key)
            while self.size + size > self.max_bytes:
                self._remove(next(iter(self._items)))
            self._items[key] = (self.clock() + ttl, size, tag_tuple, value)
            self.size += size
            for tag in tag_tuple:
                self._tags.setdefault(tag, set()).add(key)

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._items:
                self._remove(key)

    def purge_tags(self, tags: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            for tag in tags:
                for key in self._tags.pop(tag, ()):
                    if key in self._items:
                        self._remove(key)
                        removed += 1
        return removed

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._tags.clear()
            self.size = 0

    def acquire_lease(self, key: str, milliseconds: int) -> str | None:
        # One process owns this store, and the middleware already lets one
        # thread per key fill it.
        return "local"

    def release_lease(self, key: str, token: str) -> None:
        return None

    def _remove(self, key: str) -> None:
        _, size, tags, _ = self._items.pop(key)
        self.size -= size
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]
