"""Token revocation: by ``jti``, or every token of a subject issued before T.

Two stores share one interface. :class:`MemoryRevocationStore` serves one
process. :class:`RedisRevocationStore` writes to Redis and keeps a snapshot in
each worker that it rereads when a version counter changes, checked at most
once per ``sync_interval`` on the request path (no thread). A revocation is
therefore seen by every worker within about one interval (1 s by default),
and a check costs two dict lookups.

When Redis cannot be read, the last snapshot stays in force and the failure
is logged; revocations made during the outage apply once Redis answers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from .. import events
from ..errors import StoreError
from ..stores.redis import connect, hash_tagged

if TYPE_CHECKING:
    from ..policy import RedisSettings

__all__ = ["MemoryRevocationStore", "RedisRevocationStore", "RevocationStore"]


class RevocationStore:
    """Revoked token ids and subject cut-offs, with a fast membership check."""

    def __init__(
        self, *, max_entries: int = 1_000_000, retention: float = 86_400
    ) -> None:
        #: token id -> token expiry (unix seconds)
        self.token_ids: dict[str, float] = {}
        #: subject -> cut-off: tokens issued before it are revoked
        self.cutoffs: dict[str, float] = {}
        self.max_entries = max_entries
        #: How long a subject cut-off matters: the longest token lifetime.
        self.retention = retention
        #: Wall-clock time of the next :meth:`sync`; never for a local store.
        self.next_sync = math.inf

    def sync(self, now: float) -> None:
        """Bring the lists up to date with a shared store; nothing to do here."""

    def is_revoked(
        self, token_id: str | None, subject: str, issued_at: float | None, now: float
    ) -> bool:
        """Tell whether the token is revoked. A token without ``iat`` counts
        as issued before any cut-off of its subject."""
        if token_id is not None and token_id in self.token_ids:
            return True
        cutoff = self.cutoffs.get(subject)
        if cutoff is None:
            return False
        return issued_at is None or issued_at < cutoff

    def revoke_token(self, token_id: str, expires_at: float) -> None:
        raise NotImplementedError

    def revoke_subject(self, subject: str, before: float | None = None) -> None:
        raise NotImplementedError

    def _prune(self, now: float) -> None:
        self.token_ids = {tid: exp for tid, exp in self.token_ids.items() if exp >= now}
        horizon = now - self.retention
        self.cutoffs = {sub: cut for sub, cut in self.cutoffs.items() if cut >= horizon}


class MemoryRevocationStore(RevocationStore):
    """Revocations held by this process only (tests, single-process servers)."""

    def revoke_token(self, token_id: str, expires_at: float) -> None:
        """Revoke one token until its expiry."""
        now = time.time()
        if expires_at < now:
            return
        if len(self.token_ids) >= self.max_entries:
            self._prune(now)
        self.token_ids[token_id] = max(expires_at, self.token_ids.get(token_id, 0.0))

    def revoke_subject(self, subject: str, before: float | None = None) -> None:
        """Revoke every token of ``subject`` issued before ``before`` (default: now)."""
        now = time.time()
        cutoff = now if before is None else before
        if len(self.cutoffs) >= self.max_entries:
            self._prune(now)
        self.cutoffs[subject] = max(cutoff, self.cutoffs.get(subject, 0.0))


class RedisRevocationStore(RevocationStore):
    """Revocations shared through Redis, mirrored in every worker."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        sync_interval: float = 1.0,
        max_entries: int = 1_000_000,
        retention: float = 86_400,
        client: Any = None,
    ) -> None:
        super().__init__(max_entries=max_entries, retention=retention)
        self.settings = settings
        self.sync_interval = sync_interval
        self._client = client
        prefix = settings.key_prefix
        self.keys = [
            hash_tagged(prefix, "revocation", "jti"),
            hash_tagged(prefix, "revocation", "subject"),
            hash_tagged(prefix, "revocation", "version"),
        ]
        self._script_text = (
            resources.files("wsgishield").joinpath("lua", "revoke.lua").read_text()
        )
        self._script_sha: str | None = None
        self._version: bytes | None = None
        self.next_sync = 0.0
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def is_revoked(
        self, token_id: str | None, subject: str, issued_at: float | None, now: float
    ) -> bool:
        if now >= self.next_sync:
            self.sync(now)
        return super().is_revoked(token_id, subject, issued_at, now)

    def sync(self, now: float) -> None:
        """Reread the shared lists if their version changed.

        On a Redis failure the previous lists stay in force until the next
        attempt, one interval later.
        """
        # One thread syncs; the others keep checking against the snapshot.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self.next_sync = now + self.sync_interval
            self._sync()
        except StoreError as exc:
            events.emit(
                "auth",
                "revocation-sync-failed",
                {
                    "error.message": str(exc.__cause__ or exc),
                    "event.outcome": "failure",
                },
                level=logging.ERROR,
            )
        finally:
            self._lock.release()

    def _sync(self) -> None:
        import redis

        try:
            version = self.client.get(self.keys[2])
            if version == self._version and version is not None:
                return
            pipe = self.client.pipeline(transaction=False)
            pipe.zrangebyscore(self.keys[0], time.time(), "+inf", withscores=True)
            pipe.zrangebyscore(
                self.keys[1], time.time() - self.retention, "+inf", withscores=True
            )
            token_ids, cutoffs = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError("reading revocations from Redis failed") from exc

        self.token_ids = {member.decode(): score for member, score in token_ids}
        self.cutoffs = {member.decode(): score for member, score in cutoffs}
        self._version = version

    def _run(self, *args: Any) -> int:
        import redis

        try:
            if self._script_sha is None:
                self._script_sha = self.client.script_load(self._script_text)
            try:
                return int(self.client.evalsha(self._script_sha, 3, *self.keys, *args))
            except redis.exceptions.NoScriptError:
                self._script_sha = self.client.script_load(self._script_text)
                return int(self.client.evalsha(self._script_sha, 3, *self.keys, *args))
        except redis.RedisError as exc:
            raise StoreError("writing a revocation to Redis failed") from exc

    def revoke_token(self, token_id: str, expires_at: float) -> None:
        """Revoke one token until its expiry, for every worker.

        Raises :class:`~wsgishield.errors.StoreError` when Redis fails, so
        the caller knows the revocation did not happen.
        """
        self._run("jti", token_id, repr(float(expires_at)), "0")
        self.token_ids[token_id] = expires_at

    def revoke_subject(self, subject: str, before: float | None = None) -> None:
        """Revoke every token of ``subject`` issued before ``before`` (default: now)."""
        cutoff = time.time() if before is None else before
        self._run("subject", subject, repr(float(cutoff)), str(int(self.retention)))
        self.cutoffs[subject] = max(cutoff, self.cutoffs.get(subject, 0.0))
