"""The interface every response-cache store offers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .entry import Entry, VaryMarker

__all__ = ["CacheStore"]


class CacheStore(Protocol):
    """Where entries live. Every method may raise ``StoreError``."""

    #: True when several processes share the store, so filling a key needs a
    #: lease that other processes see.
    shared: bool

    def get(self, key: str) -> Entry | VaryMarker | None: ...

    def set(
        self, key: str, value: Entry | VaryMarker, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` for ``ttl`` seconds and index it under ``tags``."""

    def delete(self, key: str) -> None: ...

    def purge_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry indexed under one of ``tags``; return how many."""

    def acquire_lease(self, key: str, milliseconds: int) -> str | None:
        """Take the fill lease of ``key``; return its token, or ``None`` when
        another process holds it."""

    def release_lease(self, key: str, token: str) -> None: ...
