"""A JSON Web Key Set (RFC 7517) fetched from an issuer, kept fresh in the background.

What it guarantees:

- The URI is ``https://``; plain ``http://`` is accepted only for a loopback
  host. Redirects are never followed, and the body size, the fetch time and
  the number of keys are capped, so a hostile or broken endpoint cannot
  point the verifier elsewhere or exhaust memory.
- Keys are refetched by a background thread before they expire (at three
  quarters of ``refresh_seconds`` or of the response's ``max-age``), so no
  request waits on a fetch while a usable key is cached. The thread starts
  on first use in the worker process, never at import or in a constructor,
  because threads do not survive Gunicorn's fork.
- A token naming an unknown ``kid`` causes one synchronous refetch, then no
  other for ``unknown_kid_cooldown`` seconds, so a flood of made-up ``kid``
  values costs one fetch.
- When the endpoint fails, the last keys stay in use for ``max_stale``
  seconds past their expiry. With no usable key left, lookups raise
  :class:`~wsgishield.auth.errors.KeysUnavailable` (a 503, not a 401).
- A refetch that changes the set bumps ``generation``, which drops every
  cached verification, so a removed key stops verifying at once.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import events
from ..errors import ConfigurationError
from .errors import KeysUnavailable
from .keys import BoundKey, UnusableKeyError, bind_jwk
from .tokens import decode_json_object

if TYPE_CHECKING:
    from ..metrics import MetricsRegistry
    from ..policy import JwksSettings

__all__ = ["JwksError", "JwksKeySet", "fetch_jwks", "parse_jwks"]

#: Shortest refresh period, whatever ``max-age`` the endpoint sends.
MIN_REFRESH_SECONDS = 10.0
#: Wait between attempts after a failed fetch, in seconds.
RETRY_SECONDS = 5.0

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,9})", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\b", re.IGNORECASE)


class JwksError(Exception):
    """A key set could not be fetched or parsed.

    ``result`` is the ``result`` label of ``wsgishield_jwks_fetches_total``:
    ``timeout``, ``invalid`` (a body that is too large or not a usable key
    set) or ``error`` (any other failure).
    """

    def __init__(self, message: str, *, result: str = "error") -> None:
        super().__init__(message)
        self.result = result


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_uri(uri: str, key: str = "jwks.uri") -> None:
    """Reject a URI that is not https (or http on a loopback host)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if not host:
        raise ConfigurationError(key, uri, "expected an absolute https:// URL")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    raise ConfigurationError(
        key, uri, "use https:// (http:// only for a loopback host)"
    )


def fetch_jwks(
    uri: str, *, timeout: float, max_body_bytes: int
) -> tuple[bytes, float | None]:
    """GET ``uri`` and return the body and the ``max-age`` in seconds, if any.

    Raises :class:`JwksError` on a status other than 200 (a redirect
    included), a body over ``max_body_bytes`` or a fetch slower than
    ``timeout`` in total.
    """
    parts = urlsplit(uri)
    host = parts.hostname or ""
    deadline = time.monotonic() + timeout
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "GET",
            target,
            headers={"Accept": "application/jwk-set+json, application/json"},
        )
        response = connection.getresponse()
        if response.status != 200:
            raise JwksError(f"HTTP status {response.status}")
        length = response.getheader("Content-Length")
        if length is not None and (
            not length.isdigit() or int(length) > max_body_bytes
        ):
            raise JwksError(
                f"Content-Length {length[:20]!r} over {max_body_bytes} bytes",
                result="invalid",
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise JwksError(f"fetch took longer than {timeout} s", result="timeout")
            chunk = response.read1(65_536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_body_bytes:
                raise JwksError(f"body over {max_body_bytes} bytes", result="invalid")
            chunks.append(chunk)
        cache_control = response.getheader("Cache-Control") or ""
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        result = "timeout" if isinstance(exc, TimeoutError) else "error"
        raise JwksError(f"{type(exc).__name__}: {exc}", result=result) from exc
    finally:
        connection.close()

    max_age: float | None = None
    if _NO_CACHE.search(cache_control):
        max_age = 0.0
    else:
        match = _MAX_AGE.search(cache_control)
        if match is not None:
            max_age = float(match.group(1))
    return b"".join(chunks), max_age


def parse_jwks(body: bytes, algorithms: Iterable[str], max_keys: int) -> list[BoundKey]:
    """Parse a JWK Set and bind its usable signing keys.

    Keys for encryption, symmetric keys and keys for algorithms outside the
    allowlist are skipped. Raises :class:`JwksError` when the document is
    invalid, holds over ``max_keys`` keys or no usable key.
    """
    try:
        document = decode_json_object(body)
    except ValueError as exc:
        raise JwksError(f"invalid JSON: {exc}", result="invalid") from exc
    entries = document.get("keys")
    if type(entries) is not list:
        raise JwksError("the keys member is missing or not a list", result="invalid")
    if len(entries) > max_keys:
        raise JwksError(
            f"{len(entries)} keys, over the limit of {max_keys}", result="invalid"
        )
    allowed = frozenset(algorithms)
    keys: list[BoundKey] = []
    for entry in entries:
        if type(entry) is not dict:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        operations = entry.get("key_ops")
        if operations is not None and (
            type(operations) is not list or "verify" not in operations
        ):
            continue
        try:
            keys.append(bind_jwk(entry, allowed))
        except UnusableKeyError:
            continue
    if not keys:
        raise JwksError("no usable signing key", result="invalid")
    return keys


class JwksKeySet:
    """An issuer's keys from its JWKS endpoint; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        algorithms: Iterable[str],
        refresh_seconds: float = 300,
        max_stale: float = 86_400,
        unknown_kid_cooldown: float = 30,
        timeout: float = 2.0,
        max_body_bytes: int = 262_144,
        max_keys: int = 50,
        clock: Callable[[], float] = time.time,
        key: str = "jwks.uri",
        registry: MetricsRegistry | None = None,
    ) -> None:
        check_uri(uri, key)
        self.uri = uri
        self.algorithms = frozenset(algorithms)
        self.refresh_seconds = max(refresh_seconds, MIN_REFRESH_SECONDS)
        self.max_stale = max_stale
        self.unknown_kid_cooldown = unknown_kid_cooldown
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.max_keys = max_keys
        self.clock = clock

        #: Bumped when a fetch changes the set; cached verifications of an
        #: older generation are dropped.
        self.generation = 0
        #: When the next refresh is due; the first use fetches.
        self.refresh_at = 0.0
        self.usable_until = 0.0
        self.fetches = 0
        self._by_kid: dict[str, tuple[BoundKey, ...]] = {}
        self._keys: tuple[BoundKey, ...] = ()
        self._next_attempt = 0.0
        self._next_unknown_kid_fetch = 0.0
        self._refreshing = False
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Fetches by result in wsgishield_jwks_fetches_total; a fetch is
        # rare, so the family is looked up per fetch.
        self.registry = registry

    @classmethod
    def from_policy(
        cls,
        settings: JwksSettings,
        algorithms: Iterable[str],
        *,
        key: str,
        registry: MetricsRegistry | None = None,
    ) -> JwksKeySet:
        return cls(
            settings.uri,
            algorithms=algorithms,
            refresh_seconds=settings.refresh_seconds,
            max_stale=settings.max_stale_seconds,
            unknown_kid_cooldown=settings.unknown_kid_cooldown_seconds,
            timeout=settings.timeout_ms / 1000,
            max_body_bytes=settings.max_body_bytes,
            max_keys=settings.max_keys,
            key=f"{key}.uri",
            registry=registry,
        )

    def find(self, kid: str | None, alg: str) -> BoundKey | None:
        """Return the key for ``kid`` and ``alg``, fetching only when none is usable."""
        now = self.clock()
        if now >= self.refresh_at or now >= self.usable_until:
            self.maintain(now)
        key = self._lookup(kid, alg)
        if key is None and kid is not None and now >= self._next_unknown_kid_fetch:
            # The issuer may have rotated: refetch once, then wait out the
            # cooldown whatever the next tokens claim.
            self._next_unknown_kid_fetch = now + self.unknown_kid_cooldown
            self._fetch_now()
            key = self._lookup(kid, alg)
        return key

    def maintain(self, now: float) -> None:
        """Start a background refresh when due; fetch now only if no key is usable.

        Raises :class:`KeysUnavailable` when no usable key can be had.
        """
        if now < self.usable_until:
            self._start_background_refresh(now)
            return
        if now >= self._next_attempt:
            self._fetch_now()
        now = self.clock()
        if now >= self.usable_until:
            retry_after = max(1, math.ceil(self._next_attempt - now))
            raise KeysUnavailable(self.uri, retry_after)

    def _lookup(self, kid: str | None, alg: str) -> BoundKey | None:
        if kid is not None:
            for key in self._by_kid.get(kid, ()):
                if alg in key.algorithms:
                    return key
            return None
        # Without a kid the token must match exactly one key, so it never
        # makes the verifier try every key in turn.
        candidates = [key for key in self._keys if alg in key.algorithms]
        return candidates[0] if len(candidates) == 1 else None

    def _start_background_refresh(self, now: float) -> None:
        if self._pid != os.getpid():
            # A forked child inherits the flag but not the thread.
            self._pid = os.getpid()
            self._refreshing = False
            self._lock = threading.Lock()
        if self._refreshing or now < self._next_attempt:
            return
        self._refreshing = True
        thread = threading.Thread(
            target=self._refresh_in_background, name="wsgishield-jwks", daemon=True
        )
        thread.start()

    def _refresh_in_background(self) -> None:
        try:
            self._fetch_now()
        finally:
            self._refreshing = False

    def _fetch_now(self) -> None:
        seen = self.fetches
        if not self._lock.acquire(timeout=self.timeout + 1):
            return
        try:
            if self.fetches != seen:
                return  # another thread fetched while this one waited
            self._fetch()
        finally:
            self._lock.release()

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            body, max_age = fetch_jwks(
                self.uri, timeout=self.timeout, max_body_bytes=self.max_body_bytes
            )
            keys = parse_jwks(body, self.algorithms, self.max_keys)
        except JwksError as exc:
            if self.registry is not None:
                self.registry.jwks_fetches.inc(exc.result)
            now = self.clock()
            self._next_attempt = now + RETRY_SECONDS
            # Cached verifications keep passing until the next attempt, but
            # not past the point where the keys stop being usable.
            self.refresh_at = min(
                max(self.refresh_at, self._next_attempt), self.usable_until
            )
            events.emit(
                "auth",
                "jwks-fetch-failed",
                {
                    "url.full": self.uri,
                    "error.message": str(exc),
                    "event.outcome": "failure",
                    "labels.keys_usable": now < self.usable_until,
                },
                level=logging.ERROR,
            )
            return
        if self.registry is not None:
            self.registry.jwks_fetches.inc("success")
        self._install(keys, max_age)

    def _install(self, keys: list[BoundKey], max_age: float | None) -> None:
        now = self.clock()
        old = {(key.kid, key.source) for key in self._keys}
        new = {(key.kid, key.source) for key in keys}
        by_kid: dict[str, list[BoundKey]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self._keys = tuple(keys)
        self._by_kid = {kid: tuple(group) for kid, group in by_kid.items()}
        if old != new:
            self.generation += 1

        lifetime = self.refresh_seconds
        if max_age is not None:
            lifetime = max(min(lifetime, max_age), MIN_REFRESH_SECONDS)
        self._next_attempt = now
        self.refresh_at = now + lifetime * 0.75
        self.usable_until = now + lifetime + self.max_stale
