"""Response cache middleware: a shared cache in front of the app (RFC 9111).

It serves fresh hits, and ``304 Not Modified`` to matching
``If-None-Match``, without calling the app, and stores cacheable misses
after the app responds. Only routes whose policy rule has a ``cache``
section are cached, and only responses to ``GET`` and ``HEAD`` (a ``HEAD``
miss is sent to the app as ``GET`` so that the body can be stored).

What is never stored: a status outside the allowlist, a response with
``Set-Cookie``, ``Cache-Control: no-store``, ``no-cache`` or ``private``
(``private`` is allowed on per-identity routes), a ``Content-Security-Policy``
nonce, ``Vary: *``, a body larger than ``max_entry_bytes`` (streamed through
untouched), and a response whose app read a request header that is neither
in the key nor named by ``Vary`` (the unkeyed-input detector).

Requests carrying ``Authorization`` or ``Cookie`` bypass the cache unless
the route is declared ``public`` or ``per_identity``. A successful unsafe
request (``POST``, ``PUT``, ``PATCH``, ``DELETE``, ...) invalidates the
entries of its URI and of its ``Location`` and ``Content-Location`` on the
same host (RFC 9111, section 4.4).

Every response of a cached route carries ``Cache-Status`` (RFC 9211), and
hits carry ``Age``.

.. warning::

   The key uses the ``Host`` header, so the reverse proxy must only pass
   hosts it serves (nginx: a ``server_name`` per host and a default server
   that rejects the rest). Parameters in ``drop_params`` are removed from
   the query the app sees, because a parameter left out of the key must not
   change the response. Mark a route ``public`` only when its response does
   not depend on who asks.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from .. import context, events, metrics
from ..cache.entry import Entry, VaryMarker
from ..cache.freshness import Storability, assess, mark_private
from ..cache.keys import KeyBuilder, Target, environ_key
from ..cache.memory import MemoryStore
from ..cache.store import CacheStore
from ..cache.unkeyed import WatchedEnviron
from ..cache.validation import NOT_MODIFIED_HEADERS, etag_matches, not_modified_since
from ..errors import STORE_ERROR_KINDS, ConfigurationError, StoreError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy, RouteCache
    from ..routes import Route, RouteTable

__all__ = ["CacheMiddleware"]

logger = logging.getLogger("wsgishield.cache")

#: Methods that never change state (RFC 9110, 9.2.1); others invalidate.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

#: Statuses that stale-if-error may replace (RFC 5861, section 4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})

#: Request headers the app may read without them being in the key: ``Host``
#: is keyed, and the connection headers describe the hop, not the resource.
ALWAYS_KEYED = frozenset(
    {"HTTP_HOST", "HTTP_CONNECTION", "HTTP_UPGRADE", "HTTP_KEEP_ALIVE", "HTTP_TE"}
)

#: Validators removed from the app's environ on a miss, so that the app
#: returns a full response that can be stored. The cache evaluates them itself.
_CONDITIONAL = (
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_MATCH",
    "HTTP_IF_UNMODIFIED_SINCE",
)

# After a store error, the cache is bypassed for this long, in seconds, so a
# dead Redis costs one timeout per second and process, not one per request.
STORE_RETRY_AFTER = 1.0

# Maximum pause between two reads of the store while another process fills
# the key, in seconds.
_POLL_INTERVAL = 0.02

_UNSET: Any = object()

# (result, reason) of wsgishield_cache_lookups_total for an entry served
# with each Cache-Status detail.
_SERVED = {
    "": ("hit", "fresh"),
    "collapsed": ("hit", "collapsed"),
    "stale-while-revalidate": ("stale", "stale-while-revalidate"),
    "stale-if-error": ("stale", "stale-if-error"),
}
# The reasons the code gives for a bypass, and for a miss (the reason the
# response was not stored, or "stored"). Their series are made at start.
_BYPASS_REASONS = (
    "authorization",
    "cookie",
    "range",
    "no-identity",
    "invalid-host",
    "store-unavailable",
)
_MISS_REASONS = (
    "stored",
    "status",
    "set-cookie",
    "csp-nonce",
    "no-store",
    "private",
    "no-cache",
    "vary-star",
    "max-age=0",
    "too-large",
    "unkeyed-header",
    "fill-timeout",
    "store-unavailable",
    "explain",
)


class _RouteSettings(NamedTuple):
    """A route's cache rule, compiled once."""

    route_id: str
    ttl: float
    public: bool
    per_identity: bool
    #: Lower-case request header names always in the key.
    vary: tuple[str, ...]
    stale_while_revalidate: float
    stale_if_error: float
    tags: tuple[str, ...]
    #: Environ keys the app may read without refusal.
    keyed: frozenset[str]


class _Lookup(NamedTuple):
    """The keys of a request's entry and the entry found there, if any."""

    primary: str
    key: str
    entry: Entry | None


class _Response(NamedTuple):
    """An app response read as far as the cache needs it."""

    status: str
    headers: list[tuple[str, str]]
    #: Body chunks read so far.
    chunks: list[bytes]
    #: The rest of the body when it was not buffered, else ``None``.
    rest: Iterator[bytes] | None
    #: The app's iterable, to close once the body has been sent.
    result: Iterable[bytes]
    #: The verdict on status and headers, when they alone settled it.
    verdict: Storability | None = None


class _Passthrough:
    """The body of a response that is sent on as the app produced it."""

    __slots__ = ("chunks", "rest", "result")

    def __init__(
        self, chunks: list[bytes], rest: Iterator[bytes] | None, result: Iterable[bytes]
    ) -> None:
        self.chunks = chunks
        self.rest = rest
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.rest is not None:
            yield from self.rest

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class CacheMiddleware:
    """Serve and store responses of the routes whose rule enables caching."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        routes: RouteTable,
        store: CacheStore | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 1024 * 1024,
        statuses: Iterable[int] = (200, 203, 204, 300, 301, 404, 410),
        negative_ttl: float = 10,
        drop_params: Iterable[str] = (
            "utm_*",
            "gclid",
            "fbclid",
            "msclkid",
            "mc_cid",
            "mc_eid",
        ),
        version: str = "1",
        unkeyed_headers: str = "refuse",
        ignore_headers: Iterable[str] = (),
        tag_header: str = "Surrogate-Key",
        name: str = "wsgishield",
        etag: bool = True,
        lock_timeout_ms: int = 3000,
        lease_ms: int = 5000,
        max_refreshes: int = 4,
        clock: Callable[[], float] = time.time,
        registry: metrics.MetricsRegistry | None = None,
    ) -> None:
        if unkeyed_headers not in ("refuse", "log", "off"):
            raise ConfigurationError(
                "cache.unkeyed_headers", unkeyed_headers, "expected refuse, log or off"
            )
        if max_entry_bytes < 1:
            raise ConfigurationError(
                "cache.max_entry_bytes", max_entry_bytes, "must be positive"
            )

        self.app = app
        self.routes = routes
        self.store: CacheStore = store if store is not None else MemoryStore(max_bytes)
        self.max_entry_bytes = max_entry_bytes
        self.statuses = frozenset(statuses)
        self.negative_ttl = float(negative_ttl)
        self.keys = KeyBuilder(drop_params=drop_params, version=version)
        self.unkeyed_headers = unkeyed_headers
        self.tag_header = tag_header.lower()
        self.name = name
        self.compute_etag = etag
        self.lock_timeout = lock_timeout_ms / 1000
        self.lease_ms = lease_ms
        self.max_refreshes = max_refreshes
        self.clock = clock

        ignored = ALWAYS_KEYED | {environ_key(header) for header in ignore_headers}
        self._settings: dict[str, _RouteSettings] = {}
        for route in routes.routes:
            rule: RouteCache | None = getattr(route.rule, "cache", None)
            if rule is not None:
                self._settings[route.id] = self._compile(route.id, rule, ignored)

        self._status = {
            "bypass": f"{name}; fwd=bypass",
            "miss-stored": f"{name}; fwd=miss; stored",
            "miss": f"{name}; fwd=miss",
        }
        self._hit = f"{name}; hit; ttl="
        # Keys being filled by a thread of this process, and keys with a
        # background refresh running.
        self._filling: dict[str, threading.Event] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self._store_down_until = 0.0

        # Counting is on when a registry is given; from_policy gives one
        # when the policy has a [metrics] section.
        self._lookups: metrics.Counts | None = None
        self._store_errors: metrics.Counts | None = None
        if registry is not None:
            outcomes = [
                *_SERVED.values(),
                *(("bypass", reason) for reason in _BYPASS_REASONS),
                *(("miss", reason) for reason in _MISS_REASONS),
            ]
            self._lookups = metrics.Counts(
                registry.cache_lookups,
                [(route, *outcome) for route in self._settings for outcome in outcomes],
            )
            self._store_errors = metrics.Counts(
                registry.store_errors, [("cache", kind) for kind in STORE_ERROR_KINDS]
            )

    @staticmethod
    def _compile(
        route_id: str, rule: RouteCache, ignored: frozenset[str]
    ) -> _RouteSettings:
        vary = tuple(dict.fromkeys(name.lower() for name in rule.vary))
        keyed = set(ignored) | {environ_key(name) for name in vary}
        if rule.per_identity:
            # The subject verified from this header is part of the key.
            keyed.add("HTTP_AUTHORIZATION")
        if rule.public:
            # Removed from the app's environ, so reading them reads nothing.
            keyed.update(("HTTP_AUTHORIZATION", "HTTP_COOKIE"))
        return _RouteSettings(
            route_id,
            float(rule.ttl),
            rule.public,
            rule.per_identity,
            vary,
            float(rule.stale_while_revalidate),
            float(rule.stale_if_error),
            tuple(rule.tags),
            frozenset(keyed),
        )

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> CacheMiddleware | None:
        settings = policy.cache
        if settings is None:
            return None
        if not any(getattr(route.rule, "cache", None) for route in routes.routes):
            return None
        return cls(
            app,
            routes=routes,
            store=_build_store(policy),
            max_bytes=settings.max_bytes,
            max_entry_bytes=settings.max_entry_bytes,
            statuses=settings.statuses,
            negative_ttl=settings.negative_ttl,
            drop_params=settings.drop_params,
            version=settings.version,
            unkeyed_headers=settings.unkeyed_headers,
            ignore_headers=settings.ignore_headers,
            tag_header=settings.tag_header,
            name=settings.name,
            etag=settings.etag,
            lock_timeout_ms=settings.lock_timeout_ms,
            lease_ms=settings.lease_ms,
            max_refreshes=settings.max_refreshes,
            registry=metrics.REGISTRY if policy.metrics is not None else None,
        )

    # -- the request path -------------------------------------------------

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in SAFE_METHODS:
            return self._call_unsafe(environ, start_response)
        if method != "GET" and method != "HEAD":
            return self.app(environ, start_response)

        route: Route | None = environ.get(context.ROUTE, _UNSET)
        if route is _UNSET:
            route = self.routes.match(method, environ.get("PATH_INFO", "/"))
        settings = self._settings.get(route.id) if route is not None else None
        if settings is None:
            return self.app(environ, start_response)

        target, subject, reason = self._target(environ, settings)
        if target is None:
            return self._bypass(environ, start_response, settings, reason)

        try:
            lookup = self._lookup(environ, settings, target, subject)
        except StoreError as exc:
            self._store_failed(exc, environ)
            return self._bypass(environ, start_response, settings, "store-unavailable")

        now = self.clock()
        entry = lookup.entry
        if entry is not None:
            remaining = entry.remaining(now)
            if remaining > 0:
                return self._serve(environ, start_response, settings, entry, now, "")
            if -remaining <= entry.stale_while_revalidate:
                self._refresh_later(environ, settings, target, lookup)
                return self._serve(
                    environ,
                    start_response,
                    settings,
                    entry,
                    now,
                    "stale-while-revalidate",
                )

        return self._fill(environ, start_response, settings, target, lookup, entry, now)

    def _target(
        self, environ: WSGIEnvironment, settings: _RouteSettings
    ) -> tuple[Target | None, str | None, str]:
        """Return the request's target and subject, or ``None`` and the
        reason to bypass the cache."""
        reason = self._bypass_reason(environ, settings)
        if reason:
            return None, None, reason

        subject = None
        if settings.per_identity:
            subject = getattr(environ.get(context.IDENTITY), "subject", None)
            if not subject:
                return None, None, "no-identity"

        scheme = environ.get(context.SCHEME) or environ.get("wsgi.url_scheme", "http")
        target = self.keys.target(environ, scheme)
        if target is None:
            return None, None, "invalid-host"
        return target, subject, ""

    def _bypass_reason(self, environ: WSGIEnvironment, settings: _RouteSettings) -> str:
        if self._store_down_until and time.monotonic() < self._store_down_until:
            return "store-unavailable"
        if not settings.public and not settings.per_identity:
            if "HTTP_AUTHORIZATION" in environ:
                return "authorization"
            if "HTTP_COOKIE" in environ:
                return "cookie"
            # A credential the auth layer already consumed, such as a
            # query-string token it removed from QUERY_STRING, leaves no
            # header behind, but its identity may shape the response.
            if environ.get(context.IDENTITY) is not None:
                return "identity"
        if "HTTP_RANGE" in environ:
            return "range"
        return ""

    def _bypass(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        settings: _RouteSettings,
        reason: str,
    ) -> Iterable[bytes]:
        if self._lookups is not None:
            self._lookups.inc((settings.route_id, "bypass", reason))
        status = f"{self._status['bypass']}; detail={reason}"
        per_identity = settings.per_identity
        trace = environ.get(context.TRACE)
        if trace is not None:
            trace.append(("cache", "bypass", reason))

        def bypass_start_response(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            headers = self._downstream(headers, per_identity)
            headers.append(("Cache-Status", status))
            return start_response(status_line, headers, exc_info)

        return self.app(environ, bypass_start_response)

    def _lookup(
        self,
        environ: WSGIEnvironment,
        settings: _RouteSettings,
        target: Target,
        subject: str | None,
    ) -> _Lookup:
        primary = self.keys.primary(target, settings.vary, environ, subject)
        value = self.store.get(primary)
        if isinstance(value, VaryMarker):
            key = self.keys.variant(primary, value.vary, environ)
            value = self.store.get(key)
            return _Lookup(primary, key, value if isinstance(value, Entry) else None)
        return _Lookup(primary, primary, value)

    def _serve(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        settings: _RouteSettings,
        entry: Entry,
        now: float,
        detail: str,
    ) -> Iterable[bytes]:
        if self._lookups is not None:
            self._lookups.inc((settings.route_id, *_SERVED[detail]))
        age = now - entry.stored_at
        status = f"{self._hit}{int(entry.ttl - age)}"
        if detail:
            status = f"{status}; detail={detail}"
        cache_headers = [
            ("Age", str(int(age)) if age > 0 else "0"),
            ("Cache-Status", status),
        ]

        if (
            "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ
        ) and self._not_modified(environ, entry):
            context.record_decision(
                environ, "cache", "cached", "revalidated", settings.route_id
            )
            headers = [
                item
                for item in entry.headers
                if item[0].lower() in NOT_MODIFIED_HEADERS
            ]
            start_response("304 Not Modified", [*headers, *cache_headers])
            return [b""]

        context.record_decision(environ, "cache", "cached", "hit", settings.route_id)
        start_response(entry.status, [*entry.headers, *cache_headers])
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [entry.body]

    @staticmethod
    def _not_modified(environ: WSGIEnvironment, entry: Entry) -> bool:
        if not entry.status.startswith("200"):
            return False
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None:
            return bool(entry.etag) and etag_matches(if_none_match, entry.etag)
        if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
        if if_modified_since is not None and entry.last_modified:
            return not_modified_since(if_modified_since, entry.last_modified)
        return False

    # -- misses -------------------------------------------------------------

    def _fill(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        settings: _RouteSettings,
        target: Target,
        lookup: _Lookup,
        stale: Entry | None,
        now: float,
    ) -> Iterable[bytes]:
        """Call the app for a miss, letting one caller per key do it."""
        trace = environ.get(context.TRACE)
        if trace is not None:
            # ``wsgishield explain`` runs a stub app: its response must never
            # reach a store that real requests share.
            trace.append(("cache", "miss", "not stored while explaining"))
            return self._forward(
                environ, start_response, settings, target, lookup, stale, skip="explain"
            )

        key = lookup.key
        with self._lock:
            filling = self._filling.get(key)
            if filling is None:
                self._filling[key] = threading.Event()
        if filling is not None:
            filling.wait(self.lock_timeout)
            waited = self._lookup_quietly(environ, settings, target)
            return self._after_wait(
                environ, start_response, settings, target, lookup, stale, waited
            )

        token = None
        try:
            if self.store.shared:
                token = self._acquire_lease(key)
                if token is None:
                    waited = self._wait_for_fill(environ, settings, target)
                    return self._after_wait(
                        environ, start_response, settings, target, lookup, stale, waited
                    )
            return self._forward(
                environ, start_response, settings, target, lookup, stale
            )
        finally:
            if token is not None:
                self._release_lease(key, token)
            with self._lock:
                event = self._filling.pop(key, None)
            if event is not None:
                event.set()

    def _acquire_lease(self, key: str) -> str | None:
        try:
            return self.store.acquire_lease(key, self.lease_ms)
        except StoreError as exc:
            self._store_failed(exc, None)
            return "unavailable"

    def _release_lease(self, key: str, token: str) -> None:
        if token == "unavailable":
            return
        try:
            self.store.release_lease(key, token)
        except StoreError as exc:
            # The lease expires by itself after lease_ms.
            self._store_failed(exc, None)

    def _after_wait(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        settings: _RouteSettings,
        target: Target,
        lookup: _Lookup,
        stale: Entry | None,
        waited: Entry | None,
    ) -> Iterable[bytes]:
        """Serve what a concurrent fill stored, or respond without storing
        when the filler failed or is slow."""
        if waited is not None:
            return self._serve(
                environ, start_response, settings, waited, self.clock(), "collapsed"
            )
        return self._forward(
            environ,
            start_response,
            settings,
            target,
            lookup,
            stale,
            skip="fill-timeout",
        )

    def _lookup_quietly(
        self, environ: WSGIEnvironment, settings: _RouteSettings, target: Target
    ) -> Entry | None:
        """Look the key up again after a wait; only a fresh entry counts."""
        subject = (
            getattr(environ.get(context.IDENTITY), "subject", None)
            if settings.per_identity
            else None
        )
        try:
            entry = self._lookup(environ, settings, target, subject).entry
        except StoreError as exc:
            self._store_failed(exc, environ)
            return None
        if entry is not None and entry.remaining(self.clock()) > 0:
            return entry
        return None

    def _wait_for_fill(
        self, environ: WSGIEnvironment, settings: _RouteSettings, target: Target
    ) -> Entry | None:
        """Poll the store while another process holds the fill lease."""
        deadline = time.monotonic() + self.lock_timeout
        interval = _POLL_INTERVAL / 4
        while True:
            entry = self._lookup_quietly(environ, settings, target)
            if entry is not None:
                return entry
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(interval, left))
            interval = min(interval * 2, _POLL_INTERVAL)

    def _app_environ(
        self, environ: WSGIEnvironment, settings: _RouteSettings
    ) -> WatchedEnviron:
        """Build the environ the app gets on a miss: watched, unconditional,
        ``GET``, without dropped query parameters, and on ``public`` routes
        without credentials."""
        app_environ = WatchedEnviron(environ)
        for name in _CONDITIONAL:
            app_environ.pop(name, None)
        app_environ["REQUEST_METHOD"] = "GET"
        app_environ[context.CACHE] = self

        if settings.public:
            # The route is declared not to depend on them, and removing them
            # makes sure it cannot, even through a scan the detector misses.
            app_environ.pop("HTTP_AUTHORIZATION", None)
            app_environ.pop("HTTP_COOKIE", None)
            app_environ.pop(context.IDENTITY, None)

        query = environ.get("QUERY_STRING", "")
        if query and (self.keys.drop_exact or self.keys.drop_prefixes):
            stripped = self.keys.strip_query(query)
            if stripped != query:
                app_environ["QUERY_STRING"] = stripped
                # Gunicorn and uWSGI also pass the raw request line.
                for name in ("RAW_URI", "REQUEST_URI"):
                    raw = environ.get(name)
                    if isinstance(raw, str):
                        path = raw.partition("?")[0]
                        app_environ[name] = f"{path}?{stripped}" if stripped else path
        return app_environ

    def _forward(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        settings: _RouteSettings,
        target: Target,
        lookup: _Lookup,
        stale: Entry | None,
        *,
        skip: str = "",
    ) -> Iterable[bytes]:
        """Call the app, store what may be stored, and respond to the client.

        A non-empty ``skip`` is the reason not to store at all.
        """
        app_environ = self._app_environ(environ, settings)
        stale_usable = (
            stale is not None and -stale.remaining(self.clock()) <= stale.stale_if_error
        )
        try:
            response = self._read(app_environ, settings)
        except Exception:
            if stale_usable and stale is not None:
                logger.exception("app failed; serving a stale entry (stale-if-error)")
                return self._serve(
                    environ,
                    start_response,
                    settings,
                    stale,
                    self.clock(),
                    "stale-if-error",
                )
            raise

        code = int(response.status[:3])
        if stale_usable and stale is not None and code in ERROR_STATUSES:
            _close(response.result)
            return self._serve(
                environ, start_response, settings, stale, self.clock(), "stale-if-error"
            )

        verdict = (
            self._assess(response, settings, app_environ)
            if not skip
            else Storability(skip)
        )
        if not verdict.refusal:
            entry = self._store(response, verdict, settings, environ, target, lookup)
            if entry is not None:
                if self._lookups is not None:
                    self._lookups.inc((settings.route_id, "miss", "stored"))
                _close(response.result)
                headers = [
                    *entry.headers,
                    ("Cache-Status", self._status["miss-stored"]),
                ]
                if self._not_modified(environ, entry):
                    headers = [
                        item
                        for item in headers
                        if item[0].lower() in NOT_MODIFIED_HEADERS
                        or item[0] == "Cache-Status"
                    ]
                    start_response("304 Not Modified", headers)
                    return [b""]
                start_response(entry.status, headers)
                return (
                    [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [entry.body]
                )
            verdict = Storability("store-unavailable")

        if self._lookups is not None:
            self._lookups.inc((settings.route_id, "miss", verdict.refusal))
        headers = self._downstream(response.headers, settings.per_identity)
        headers.append(
            ("Cache-Status", f"{self._status['miss']}; detail={verdict.refusal}")
        )
        start_response(response.status, headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            _close(response.result)
            return [b""]
        return _Passthrough(response.chunks, response.rest, response.result)

    def _read(self, app_environ: WatchedEnviron, settings: _RouteSettings) -> _Response:
        """Run the app and read its body up to ``max_entry_bytes``.

        When the app calls ``start_response`` before returning, as most do,
        and its status or headers already rule storing out, nothing is
        buffered: the body streams through as the app produces it.
        """
        captured: list[Any] = []
        written: list[bytes] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None and captured:
                # Nothing has been sent yet, so the app may replace the
                # response (PEP 3333).
                captured.clear()
            captured.extend((status, headers))
            return written.append

        result = self.app(app_environ, capture)
        iterator = iter(result)
        if captured:
            verdict = self._assess_headers(captured[0], captured[1], settings)
            if verdict.refusal:
                return _Response(
                    captured[0], list(captured[1]), written, iterator, result, verdict
                )

        chunks = written
        size = sum(len(chunk) for chunk in written)
        rest = None
        try:
            for chunk in iterator:
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_entry_bytes:
                    rest = iterator
                    break
        except BaseException:
            _close(result)
            raise
        if not captured:
            _close(result)
            raise RuntimeError("the application did not call start_response")
        return _Response(captured[0], list(captured[1]), chunks, rest, result)

    def _assess_headers(
        self, status: str, headers: list[tuple[str, str]], settings: _RouteSettings
    ) -> Storability:
        for name, value in headers:
            if name.lower() == "content-length":
                if value.isdigit() and int(value) > self.max_entry_bytes:
                    return Storability("too-large")
                break
        return assess(
            int(status[:3]),
            headers,
            statuses=self.statuses,
            negative_ttl=self.negative_ttl,
            default_ttl=settings.ttl,
            stale_while_revalidate=settings.stale_while_revalidate,
            stale_if_error=settings.stale_if_error,
            route_tags=settings.tags,
            tag_header=self.tag_header,
            allow_private=settings.per_identity,
            now=self.clock(),
        )

    def _assess(
        self, response: _Response, settings: _RouteSettings, app_environ: WatchedEnviron
    ) -> Storability:
        if response.verdict is not None:
            return response.verdict
        if response.rest is not None:
            return Storability("too-large")
        verdict = self._assess_headers(response.status, response.headers, settings)
        if verdict.refusal or self.unkeyed_headers == "off":
            return verdict

        keyed = settings.keyed | {environ_key(name) for name in verdict.vary}
        unkeyed = app_environ.reads - keyed
        if not unkeyed:
            return verdict
        names = sorted(key[5:].replace("_", "-").lower() for key in unkeyed)
        events.emit(
            "cache",
            "unkeyed-input",
            {
                "rule.id": settings.route_id,
                "url.path": app_environ.get("PATH_INFO", ""),
                "http.request.method": "GET",
                "event.outcome": "failure"
                if self.unkeyed_headers == "refuse"
                else "success",
                "event.reason": "the app read request headers that are not in the key",
                "labels.headers": ",".join(names),
            },
            client=str(app_environ.get(context.CLIENT_IP, "")),
        )
        if self.unkeyed_headers == "refuse":
            return Storability("unkeyed-header")
        return verdict

    def _store(
        self,
        response: _Response,
        verdict: Storability,
        settings: _RouteSettings,
        environ: WSGIEnvironment,
        target: Target,
        lookup: _Lookup,
    ) -> Entry | None:
        body = b"".join(response.chunks)
        headers = list(verdict.headers)
        etag = verdict.etag
        if not etag and self.compute_etag and int(response.status[:3]) == 200:
            etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
            headers.append(("ETag", etag))
        if settings.per_identity:
            headers = mark_private(headers)

        entry = Entry(
            response.status,
            headers,
            body,
            self.clock(),
            verdict.ttl,
            verdict.stale_while_revalidate,
            verdict.stale_if_error,
            etag,
            verdict.last_modified,
            [*verdict.tags, self.keys.uri_tag(target)],
        )
        # Keep stale copies as long as a stale window may still use them.
        lifetime = verdict.ttl + max(
            verdict.stale_while_revalidate, verdict.stale_if_error
        )

        learned = [name for name in verdict.vary if name not in settings.vary]
        try:
            if learned:
                self.store.set(
                    lookup.primary, VaryMarker(learned), lifetime, entry.tags
                )
                key = self.keys.variant(lookup.primary, learned, environ)
            else:
                key = lookup.primary
            self.store.set(key, entry, lifetime, entry.tags)
        except StoreError as exc:
            self._store_failed(exc, environ)
            return None
        return entry

    def _downstream(
        self, headers: list[tuple[str, str]], per_identity: bool
    ) -> list[tuple[str, str]]:
        """Return the app's headers for the client, without the tag header."""
        tag_header = self.tag_header
        kept = [item for item in headers if item[0].lower() != tag_header]
        return mark_private(kept) if per_identity else kept

    # -- background refresh (stale-while-revalidate) --------------------------

    def _refresh_later(
        self,
        environ: WSGIEnvironment,
        settings: _RouteSettings,
        target: Target,
        lookup: _Lookup,
    ) -> None:
        """Start one background refresh of ``lookup.key`` unless one runs."""
        key = lookup.key
        with self._lock:
            if key in self._refreshing or len(self._refreshing) >= self.max_refreshes:
                return
            self._refreshing.add(key)

        token = self._acquire_lease(key) if self.store.shared else "local"
        if token is None:
            with self._lock:
                self._refreshing.discard(key)
            return

        snapshot = dict(environ)
        snapshot["wsgi.input"] = BytesIO(b"")
        snapshot["CONTENT_LENGTH"] = "0"
        # The refresh must not run from a thread started before a fork:
        # threads start here, on a request, inside the worker.
        thread = threading.Thread(
            target=self._refresh,
            args=(snapshot, settings, target, lookup, token),
            name="wsgishield-cache-refresh",
            daemon=True,
        )
        thread.start()

    def _refresh(
        self,
        environ: dict[str, Any],
        settings: _RouteSettings,
        target: Target,
        lookup: _Lookup,
        token: str,
    ) -> None:
        try:
            if self._refreshed_since(lookup):
                return
            app_environ = self._app_environ(environ, settings)
            response = self._read(app_environ, settings)
            _close(response.result)
            verdict = self._assess(response, settings, app_environ)
            if not verdict.refusal:
                self._store(response, verdict, settings, environ, target, lookup)
        except Exception:
            logger.exception("background refresh of a cached response failed")
        finally:
            if token != "local":
                self._release_lease(lookup.key, token)
            with self._lock:
                self._refreshing.discard(lookup.key)

    def _refreshed_since(self, lookup: _Lookup) -> bool:
        """Tell whether a fresh entry replaced the stale one after the lookup.

        The request that started this refresh read its entry before taking
        the refresh slot and the lease, so another refresh may have stored a
        fresh entry in between and released both. Refreshing again would
        call the app once more for nothing.
        """
        try:
            current = self.store.get(lookup.key)
        except StoreError:
            return False
        return isinstance(current, Entry) and current.remaining(self.clock()) > 0

    # -- invalidation -------------------------------------------------------

    def _call_unsafe(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Pass an unsafe request on and invalidate its URIs when it succeeds."""
        scheme = environ.get(context.SCHEME) or environ.get("wsgi.url_scheme", "http")
        target = self.keys.target(environ, scheme)
        if target is None:
            return self.app(environ, start_response)
        trace = environ.get(context.TRACE)
        if trace is not None:
            trace.append(("cache", "not invalidated while explaining", target))
            return self.app(environ, start_response)
        environ[context.CACHE] = self

        def invalidating_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if 200 <= int(status[:3]) < 400:
                self._invalidate(target, headers, environ)
            return start_response(status, headers, exc_info)

        return self.app(environ, invalidating_start_response)

    def _invalidate(
        self,
        target: Target,
        headers: Sequence[tuple[str, str]],
        environ: WSGIEnvironment,
    ) -> None:
        tags = [self.keys.uri_tag(target)]
        for name, value in headers:
            if name.lower() not in ("location", "content-location"):
                continue
            # RFC 9111, 4.4: only URIs of the same origin may be invalidated.
            parts = urlsplit(value)
            if parts.netloc and parts.netloc.lower() != target.host:
                continue
            if not parts.path.startswith("/"):
                continue
            query = self.keys.target(
                {
                    "HTTP_HOST": target.host,
                    "PATH_INFO": parts.path,
                    "QUERY_STRING": parts.query,
                },
                target.scheme,
            )
            if query is not None:
                tags.append(self.keys.uri_tag(query))
        try:
            self.store.purge_tags(tags)
        except StoreError as exc:
            self._store_failed(exc, environ)

    def purge(self, *tags: str) -> int:
        """Remove every entry tagged with one of ``tags``; return how many.

        Tags are those of the route rule and of the response's tag header
        (``Surrogate-Key`` by default). Raises ``StoreError`` when the store
        fails. The app reaches this method as ``environ["wsgishield.cache"]``.
        """
        return self.store.purge_tags(tags)

    def _store_failed(self, exc: StoreError, environ: WSGIEnvironment | None) -> None:
        if self._store_errors is not None:
            self._store_errors.inc(("cache", exc.kind))
        self._store_down_until = time.monotonic() + STORE_RETRY_AFTER
        events.emit(
            "cache",
            "store-unavailable",
            {"error.message": str(exc), "event.outcome": "failure"},
            client=str(environ.get(context.CLIENT_IP, "")) if environ else "",
        )


def _build_store(policy: Policy) -> CacheStore:
    settings = policy.cache
    if settings is None or settings.store == "memory":
        return MemoryStore(settings.max_bytes if settings else 64 * 1024 * 1024)
    from ..cache.redis import RedisStore
    from ..stores.redis import connect

    if policy.redis is None:
        raise ConfigurationError(
            "cache.store",
            "redis",
            'the redis store needs a [redis] section; add one or use store = "memory"',
        )
    local = MemoryStore(settings.local_bytes) if settings.local_bytes else None
    return RedisStore(
        connect(policy.redis),
        prefix=policy.redis.key_prefix,
        local=local,
        local_ttl=settings.local_ttl_ms / 1000,
    )
