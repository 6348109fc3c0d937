"""The shared response store in Redis, with an optional in-process tier.

Entries are MessagePack-encoded :mod:`msgspec` structs under
``<prefix>:{<key>}:cache`` with a TTL that covers freshness plus the stale
windows. Each tag is a Redis set of entry keys whose TTL only grows
(``PEXPIRE ... GT``), so it outlives every entry it indexes. A fill lease is
``SET NX PX`` on ``<prefix>:{<key>}:cache-lease``, released by a Lua script
that checks the token.

The in-process tier keeps recent hits for at most ``local_ttl`` seconds so
that a hot key costs no round trip. A purge or invalidation clears the
tier of the process that runs it only; other processes may serve their
copy until it expires, which is why its lifetime is short (1 s by default).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from importlib import resources
from typing import Any

import msgspec

from ..errors import StoreError
from ..stores.redis import hash_tagged
from .entry import Entry, VaryMarker, decode, encode
from .memory import MemoryStore

__all__ = ["RedisStore"]

_RELEASE_LEASE = (
    resources.files("wsgishield").joinpath("lua", "cache_release_lease.lua").read_text()
)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


class RedisStore:
    """Entries in Redis, shared by every process and host of a deployment."""

    shared = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "wsgishield",
        local: MemoryStore | None = None,
        local_ttl: float = 1.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.local = local
        self.local_ttl = local_ttl
        self._errors = _redis_errors()
        self._release = client.register_script(_RELEASE_LEASE)

    def _entry_key(self, key: str) -> str:
        return hash_tagged(self.prefix, key, "cache")

    def _tag_key(self, tag: str) -> str:
        # Tags come from response headers: hash them so any text is a safe key.
        digest = hashlib.blake2b(tag.encode(), digest_size=12).hexdigest()
        return hash_tagged(self.prefix, "cache-tag:" + digest)

    def get(self, key: str) -> Entry | VaryMarker | None:
        if self.local is not None:
            value = self.local.get(key)
            if value is not None:
                return value
        try:
            data = self.client.get(self._entry_key(key))
        except self._errors as exc:
            raise StoreError(f"cache GET failed: {exc}") from exc
        if data is None:
            return None
        try:
            value = decode(data)
        except msgspec.DecodeError:
            # Written by an incompatible version: a miss, overwritten on fill.
            return None
        if self.local is not None:
            self.local.set(key, value, self.local_ttl)
        return value

    def set(
        self, key: str, value: Entry | VaryMarker, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        milliseconds = max(1, int(ttl * 1000))
        entry_key = self._entry_key(key)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(entry_key, encode(value), px=milliseconds)
            for tag in tags:
                tag_key = self._tag_key(tag)
                pipe.sadd(tag_key, entry_key)
                # NX gives the new set a TTL; GT then only ever lengthens it.
                pipe.pexpire(tag_key, milliseconds, nx=True)
                pipe.pexpire(tag_key, milliseconds, gt=True)
            pipe.execute()
        except self._errors as exc:
            raise StoreError(f"cache SET failed: {exc}") from exc
        if self.local is not None:
            self.local.set(key, value, min(ttl, self.local_ttl))

    def delete(self, key: str) -> None:
        if self.local is not None:
            self.local.delete(key)
        try:
            self.client.delete(self._entry_key(key))
        except self._errors as exc:
            raise StoreError(f"cache DEL failed: {exc}") from exc

    def purge_tags(self, tags: Iterable[str]) -> int:
        tags = list(tags)
        if self.local is not None:
            self.local.purge_tags(tags)
        removed = 0
        try:
            for tag in tags:
                tag_key = self._tag_key(tag)
                members = self.client.smembers(tag_key)
                # Entry keys sit in different cluster slots, so they are
                # deleted one by one in a non-transactional pipeline.
                pipe = self.client.pipeline(transaction=False)
                for member in members:
                    pipe.delete(member)
                pipe.delete(tag_key)
                results = pipe.execute()
                removed += sum(results[:-1])
        except self._errors as exc:
            raise StoreError(f"cache purge failed: {exc}") from exc
        return removed

    def acquire_lease(self, key: str, milliseconds: int) -> str | None:
        token = secrets.token_hex(8)
        try:
            taken = self.client.set(
                hash_tagged(self.prefix, key, "cache-lease"),
                token,
                nx=True,
                px=milliseconds,
            )
        except self._errors as exc:
            raise StoreError(f"cache lease failed: {exc}") from exc
        return token if taken else None

    def release_lease(self, key: str, token: str) -> None:
        try:
            self._release(
                keys=[hash_tagged(self.prefix, key, "cache-lease")], args=[token]
            )
        except self._errors as exc:
            raise StoreError(f"cache lease release failed: {exc}") from exc
