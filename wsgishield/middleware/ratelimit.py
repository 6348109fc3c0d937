"""Rate-limit middleware: token buckets (GCRA) checked in one step per request.

Each route names its policies (``10/second`` per client address, ``1000/day``
per identity, ...); ``limits.default`` covers routes that name none and
``limits.global`` applies to every request. All the policies of one request
are checked and consumed together, in one store call: the request is
admitted only if every policy admits it, and a denied request consumes
nothing. A denied request gets a 429 ``application/problem+json`` response
with ``Retry-After`` (whole seconds, rounded up, at least 1). Every limited
response carries the ``RateLimit-Policy`` and ``RateLimit`` fields of
draft-ietf-httpapi-ratelimit-headers-10, or the older ``X-RateLimit-*``
fields.

Stores: ``memory`` (per process), ``shm`` (one table in shared memory for
every Gunicorn worker on a host) and ``redis`` (shared by every host, one
Lua script call per request). When Redis fails, each policy's failure mode
applies: ``open`` (skip the policy), ``local`` (enforce it on a per-process
memory store) or ``closed`` (503 with ``Retry-After``).

.. warning::

   A limit keyed by ``ip`` is only as good as the client address: configure
   ``client.trusted_proxies`` to exactly your proxies, or every client may
   pick its own address and with it a fresh bucket. A limit keyed by
   ``identity`` applies only when the authentication layer has verified the
   request (it reads ``wsgishield.identity``), and a limit keyed by
   ``api-key`` trusts whatever key the client sends: pair it with an ``ip``
   limit unless the key is verified before this layer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .. import context, events, metrics
from .._fast._shm_common import state_item
from .._fast.gcra import MICROSECONDS, retry_seconds
from ..errors import STORE_ERROR_KINDS, ConfigurationError, StoreError
from ..networks import NetworkSet, expand_presets
from ..problem import PROBLEM_TYPE_BASE, Problem
from ..ratelimit import BucketResult, KeyBuilder, Limit, Outcome
from ..routes import Route, RouteTable
from ..stores.buckets import build_bucket_store
from ..stores.buckets_memory import MemoryBucketStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import LimitsPolicy, Policy

__all__ = ["BucketStore", "RateLimitMiddleware", "build_limits"]

logger = logging.getLogger("wsgishield.ratelimit")

# Tags that a key part may lend to every key of a request (see _tag_part).
_TAG_PARTS = ("ip", "api-key", "identity")
# The hash tag of every key when no key part is common to all policies.
SHARED_TAG = "rl"
_IP_ONLY = ("ip",)
_TRACE = context.TRACE
# Values of the result label of wsgishield_ratelimit_decisions_total.
_RESULTS = ("allowed", "limited", "shadow-limited")

# CORS response headers of the application that a 429 repeats.
_CORS_HEADERS = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "vary",
    }
)
_EXPOSED = "Retry-After, RateLimit, RateLimit-Policy"
# Each process logs store failures at most once per this many seconds.
_FAILURE_LOG_SECONDS = 10.0
# Origins whose CORS headers are remembered per route, oldest evicted first.
_MAX_CORS_MEMO = 1024
# Longer Origin values are not remembered (a real origin is scheme, host and
# port), which bounds the memo at about a megabyte.
_MAX_ORIGIN = 512


class BucketStore(Protocol):
    """Interface of a bucket store, as the middleware calls it.

    A store may also offer ``prepare(limits, cost, fields=...)`` and
    ``admit(prepared, client)``: a one-call path for routes whose policies
    are all keyed by the client address and none in shadow mode. ``admit``
    returns the response fields of an admitted request, or ``None`` to send
    the request through ``apply``. A store that checks a bounded number of
    policies per call names the bound in ``max_policies``; the layer then
    rejects a configuration that would exceed it.
    """

    name: str

    def apply(
        self, limits: Sequence[Limit], keys: Sequence[str], cost: int, tag: str
    ) -> Outcome: ...


class _Plan:
    """The policies of one route, resolved once."""

    __slots__ = (
        "admission",
        "cost",
        "has_shadow",
        "ip_key_prefixes",
        "limits",
        "too_costly",
    )

    def __init__(self, limits: Sequence[Limit], cost: int) -> None:
        self.limits = tuple(limits)
        self.cost = cost
        # The store's prepared form of these policies, when it has a one-call
        # path for them (see RateLimitMiddleware._prepare).
        self.admission: object | None = None
        self.has_shadow = any(limit.shadow for limit in self.limits)
        # Most routes have only policies keyed by the client address: their
        # keys are these prefixes followed by the address.
        self.ip_key_prefixes: tuple[str, ...] | None = None
        if all(limit.key == _IP_ONLY for limit in self.limits):
            self.ip_key_prefixes = tuple(limit.id + "|" for limit in self.limits)
        # Enforced policies whose full bucket contains fewer tokens than the
        # cost. A request that any of them applies to can never be admitted.
        self.too_costly = tuple(
            limit
            for limit in self.limits
            if not limit.shadow and cost * limit.interval > limit.tolerance
        )


def _start_adding(
    start_response: StartResponse, fields: list[tuple[str, str]]
) -> StartResponse:
    """Wrap ``start_response`` to append ``fields`` to the app's headers."""

    # A function of its own, so that only these two variables become cells.
    def start_with_fields(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        return start_response(status, [*headers, *fields], exc_info)

    return start_with_fields


def build_limits(settings: LimitsPolicy) -> dict[str, Limit]:
    """Compile the named policies of a ``[limits]`` section."""
    return {
        name: Limit(
            name,
            rule.rate,
            burst=rule.burst,
            key=rule.key,
            shadow=rule.shadow,
            failure_mode=rule.failure_mode or settings.failure_mode,
        )
        for name, rule in settings.policies.items()
    }


def _tag_part(limits: Iterable[Limit]) -> str | None:
    """Return the key part that every policy has, to serve as the hash tag.

    All the keys of one request go to one Redis Cluster slot, so one script
    can check them all. When every policy is keyed by (among others) the
    client address, the address is the tag and buckets spread over the
    cluster. Otherwise every bucket shares one tag. A global limit needs
    that anyway, because each request must update its one bucket.
    """
    limits = list(limits)
    for part in _TAG_PARTS:
        if limits and all(part in limit.key for limit in limits):
            return part
    return None


def _count(
    decisions: metrics.Counts,
    limits: Sequence[Limit],
    results: Sequence[BucketResult],
) -> None:
    """Count each policy's result for one request."""
    for limit, result in zip(limits, results, strict=True):
        if result.allowed:
            decisions.inc((limit.id, "allowed"))
        elif limit.shadow:
            decisions.inc((limit.id, "shadow-limited"))
        else:
            decisions.inc((limit.id, "limited"))


class RateLimitMiddleware:
    """Check and consume the rate-limit buckets of each request."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        limits: Iterable[Limit],
        route_limits: Mapping[str, Sequence[str] | tuple[Sequence[str], int]]
        | None = None,
        default: Sequence[str] = (),
        global_limits: Sequence[str] = (),
        store: BucketStore | None = None,
        local_store: BucketStore | None = None,
        headers: str = "ietf",
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        api_key_header: str = "X-API-Key",
        count_preflight: bool = False,
        exempt_paths: Iterable[str] = (),
        exempt_networks: Iterable[str] = (),
        cors_origins: Iterable[str] = (),
        breaker_reset_seconds: float = 2.0,
        problem_type_base: str = PROBLEM_TYPE_BASE,
        clock: Callable[[], float] = time.time,
        registry: metrics.MetricsRegistry | None = None,
    ) -> None:
        self.app = app
        self.limits = {limit.id: limit for limit in limits}
        if headers not in ("ietf", "x-ratelimit", "none"):
            raise ConfigurationError(
                "limits.headers", headers, "expected ietf, x-ratelimit or none"
            )

        self.store: BucketStore = store if store is not None else MemoryBucketStore()
        self.global_limits = self._resolve("limits.global", global_limits)
        self.default_plan = _Plan(
            self.global_limits + self._resolve("limits.default", default), 1
        )
        self._check_policy_count("limits.default", self.default_plan)
        self.plans: dict[str, _Plan] = {}
        for route_id, entry in (route_limits or {}).items():
            names, cost = (entry, 1) if not isinstance(entry, tuple) else entry
            where = f"routes[{route_id}].limits"
            # A cost of 0 would never spend a token and a negative one would
            # refill the buckets; the policy file already bounds it the same.
            if not 1 <= cost <= 1_000_000:
                raise ConfigurationError(
                    f"{where}.cost", cost, "expected 1 to 1000000 tokens"
                )
            own = self._resolve(where, names)
            self.plans[route_id] = _Plan(self.global_limits + own, cost)
            self._check_policy_count(where, self.plans[route_id])

        self.keys = KeyBuilder(
            ipv4_prefix=ipv4_prefix,
            ipv6_prefix=ipv6_prefix,
            api_key_header=api_key_header,
        )
        self.tag_part = _tag_part(self.limits.values())
        self.local_store: BucketStore = (
            local_store if local_store is not None else MemoryBucketStore()
        )
        self.headers = headers
        for plan in (self.default_plan, *self.plans.values()):
            plan.admission = self._prepare(plan)
        self.count_preflight = count_preflight
        exempt_routes = []
        for index, path in enumerate(exempt_paths):
            try:
                exempt_routes.append(Route(f"exempt-{index}", path))
            except ValueError as exc:
                key = f"limits.exempt_paths[{index}]"
                raise ConfigurationError(key, path, str(exc)) from exc
        self.exempt_paths = RouteTable(exempt_routes)
        try:
            self.exempt_networks = NetworkSet(expand_presets(exempt_networks))
        except ValueError as exc:
            raise ConfigurationError(
                "limits.exempt_networks", list(exempt_networks), str(exc)
            ) from exc
        self.has_exemptions = bool(self.exempt_paths.routes or self.exempt_networks)
        self.cors_origins = frozenset(cors_origins)
        self.breaker_reset_seconds = breaker_reset_seconds
        self.clock = clock
        self._cors_memo: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._last_failure_log = -_FAILURE_LOG_SECONDS

        # Counting is on when a registry is given; from_policy gives one
        # when the policy has a [metrics] section.
        self._decisions: metrics.Counts | None = None
        self._store_errors: metrics.Counts | None = None
        if registry is not None:
            self._decisions = metrics.Counts(
                registry.ratelimit_decisions,
                [(id, result) for id in self.limits for result in _RESULTS],
            )
            self._store_errors = metrics.Counts(
                registry.store_errors,
                [("ratelimit", kind) for kind in STORE_ERROR_KINDS],
            )

        self.rate_limited = Problem(
            429, "rate-limited", "Too Many Requests",
            "Too many requests for this client; retry after the given time.",
            type_base=problem_type_base,
        )  # fmt: skip
        self.too_costly = Problem(
            429, "cost-exceeds-burst", "Request Too Costly",
            "This request costs more tokens than the limit ever grants at once.",
            type_base=problem_type_base,
        )  # fmt: skip
        self.unavailable = Problem(
            503, "rate-limit-unavailable", "Service Unavailable",
            "The rate-limit store is unavailable; retry after the given time.",
            type_base=problem_type_base,
        )  # fmt: skip
        # The breaker lets a probe through after this long, rounded up.
        retry_after = max(1, math.ceil(breaker_reset_seconds))
        self._unavailable_headers = [("Retry-After", str(retry_after))]

    def _prepare(self, plan: _Plan) -> object | None:
        """Return the store's one-call form of ``plan``, when it has one.

        It covers plans whose policies are keyed by the client address alone,
        with none in shadow mode, none costlier than its burst, and the IETF
        fields or none. The X-RateLimit fields need the wall clock and stay
        on the general path, as do shadow policies, which log.
        """
        prepare = getattr(self.store, "prepare", None)
        if (
            prepare is None
            or not plan.limits
            or plan.ip_key_prefixes is None
            or plan.has_shadow
            or plan.too_costly
            or self.headers == "x-ratelimit"
        ):
            return None
        prepared: object = prepare(
            plan.limits, plan.cost, fields=self.headers == "ietf"
        )
        return prepared

    def _check_policy_count(self, where: str, plan: _Plan) -> None:
        """Reject a plan with more policies than the store checks in one call."""
        max_policies: int | None = getattr(self.store, "max_policies", None)
        if max_policies is not None and len(plan.limits) > max_policies:
            raise ConfigurationError(
                where,
                [limit.id for limit in plan.limits],
                f"the {self.store.name} store checks at most {max_policies} "
                "policies per request, limits.global included",
            )

    def _resolve(self, where: str, names: Sequence[str]) -> tuple[Limit, ...]:
        resolved = []
        for name in names:
            limit = self.limits.get(name)
            if limit is None:
                raise ConfigurationError(
                    where, name, "no such policy in limits.policies"
                )
            resolved.append(limit)
        return tuple(resolved)

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> RateLimitMiddleware | None:
        settings = policy.limits
        if settings is None or not settings.policies:
            return None
        limits = build_limits(settings)

        route_limits: dict[str, tuple[Sequence[str], int]] = {}
        for index, route in enumerate(routes.routes):
            entry = getattr(route.rule, "limits", None)
            if entry is None:
                continue
            names, cost = (
                (entry, 1) if isinstance(entry, list) else (entry.policies, entry.cost)
            )
            for name in names:
                if name not in limits:
                    key = f"routes[{index}].limits"
                    raise ConfigurationError(
                        key, name, "no such policy in limits.policies"
                    )
            route_limits[route.id] = (names, cost)

        registry = metrics.REGISTRY if policy.metrics is not None else None
        store = build_bucket_store(
            settings, policy.redis, limits.values(), registry=registry
        )
        return cls(
            app,
            limits=limits.values(),
            route_limits=route_limits,
            default=settings.default,
            global_limits=settings.global_,
            store=store,
            local_store=MemoryBucketStore(max_keys=settings.max_keys),
            headers=settings.headers,
            ipv4_prefix=settings.ipv4_prefix,
            ipv6_prefix=settings.ipv6_prefix,
            api_key_header=settings.api_key_header,
            count_preflight=settings.count_preflight,
            exempt_paths=settings.exempt_paths,
            exempt_networks=settings.exempt_networks,
            cors_origins=settings.cors_origins,
            breaker_reset_seconds=settings.breaker_reset_seconds,
            problem_type_base=policy.problem_type_base,
            registry=registry,
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        route = environ.get(context.ROUTE)
        route_id = route.id if route is not None else "-"
        plan = self.plans.get(route_id, self.default_plan)
        if not plan.limits:
            return self.app(environ, start_response)
        if (
            environ.get("REQUEST_METHOD") == "OPTIONS"
            and not self.count_preflight
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        ):
            return self.app(environ, start_response)
        if self.has_exemptions and self._exempt(environ):
            return self.app(environ, start_response)

        prefixes = plan.ip_key_prefixes
        if prefixes is not None:
            # Every policy is keyed by the address alone, and so is the tag
            # when there is one (see _tag_part).
            client = self.keys.client_part(environ)
            if plan.admission is not None and _TRACE not in environ:
                # One store call checks, consumes and formats the fields; a
                # denial (or a failing store) takes the general path below.
                admitted = self.store.admit(plan.admission, client)  # type: ignore[attr-defined]
                if admitted is not None:
                    if self._decisions is not None:
                        for limit in plan.limits:
                            self._decisions.inc((limit.id, "allowed"))
                    return self._forward(environ, start_response, admitted, route_id)
            limits: Sequence[Limit] = plan.limits
            keys = [prefix + client for prefix in prefixes]
            tag = client if self.tag_part is not None else SHARED_TAG
        else:
            limits, keys, tag = self._keys(plan, route_id, environ)
            if not limits:
                return self.app(environ, start_response)

        if plan.too_costly:
            # A policy whose key part the request lacks is not in limits.
            too_costly = next(
                (limit for limit in plan.too_costly if limit in limits), None
            )
            if too_costly is not None:
                if self._decisions is not None:
                    self._decisions.inc((too_costly.id, "limited"))
                return self._reject(
                    environ,
                    start_response,
                    self.too_costly,
                    too_costly,
                    "cost-exceeds-burst",
                    [],
                )

        try:
            outcome = self.store.apply(limits, keys, plan.cost, tag)
        except StoreError as exc:
            fallback = self._on_store_failure(limits, keys, plan.cost, tag, exc)
            if fallback is None:
                return self._reject_unavailable(environ, start_response, limits)
            limits, outcome = fallback

        if self._decisions is not None:
            _count(self._decisions, limits, outcome.results)
        if plan.has_shadow:
            self._log_shadow(environ, limits, outcome)
        fields = self._header_fields(limits, outcome.results)
        if not outcome.allowed:
            return self._deny(environ, start_response, plan, limits, outcome, fields)

        trace = environ.get(_TRACE)
        if trace is not None:
            trace.append(("ratelimit", "allowed", outcome))
        return self._forward(environ, start_response, fields, route_id)

    def _forward(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        fields: list[tuple[str, str]],
        route_id: str,
    ) -> Iterable[bytes]:
        """Call the app for an admitted request, adding ``fields`` to its response."""
        origin = environ.get("HTTP_ORIGIN")
        if origin:
            start = self._start_remembering_cors(
                start_response, fields, route_id, origin
            )
            return self.app(environ, start)
        if not fields:
            return self.app(environ, start_response)
        return self.app(environ, _start_adding(start_response, fields))

    def _start_remembering_cors(
        self,
        start_response: StartResponse,
        fields: list[tuple[str, str]],
        route_id: str,
        origin: str,
    ) -> StartResponse:
        def start_with_fields(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            self._remember_cors(route_id, origin, headers)
            return start_response(status, [*headers, *fields], exc_info)

        return start_with_fields

    def _exempt(self, environ: WSGIEnvironment) -> bool:
        if self.exempt_paths.routes and self.exempt_paths.match(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        ):
            return True
        if self.exempt_networks:
            client = environ.get(context.CLIENT)
            if client is not None and self.exempt_networks.contains(
                client.version, client.value
            ):
                return True
        return False

    def _keys(
        self, plan: _Plan, route_id: str, environ: WSGIEnvironment
    ) -> tuple[list[Limit], list[str], str]:
        limits = []
        keys = []
        tag = SHARED_TAG
        client = None
        for limit in plan.limits:
            # Most policies are keyed by the client alone: resolve it once.
            if limit.key == _IP_ONLY:
                if client is None:
                    client = self.keys.client_part(environ)
                parts: tuple[str, ...] | None = (client,)
            else:
                parts = self.keys.parts(limit, environ, route_id)
            if parts is None:
                continue
            if self.tag_part is not None:
                tag = parts[limit.key.index(self.tag_part)]
            limits.append(limit)
            keys.append(limit.id + "|" + "|".join(parts))
        return limits, keys, tag

    def _on_store_failure(
        self,
        limits: Sequence[Limit],
        keys: Sequence[str],
        cost: int,
        tag: str,
        exc: StoreError,
    ) -> tuple[list[Limit], Outcome] | None:
        """Apply each policy's failure mode; ``None`` means the request gets a 503."""
        if self._store_errors is not None:
            self._store_errors.inc(("ratelimit", exc.kind))
        # One record per period: during an outage every request fails alike.
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_SECONDS:
            self._last_failure_log = now
            logger.warning(
                "rate-limit store %s failed, applying failure modes: %s",
                self.store.name,
                exc,
            )
        if any(limit.failure_mode == "closed" for limit in limits):
            return None
        local = [
            index for index, limit in enumerate(limits) if limit.failure_mode == "local"
        ]
        local_limits = [limits[index] for index in local]
        if not local_limits:
            return [], Outcome(True, [])
        outcome = self.local_store.apply(
            local_limits, [keys[index] for index in local], cost, tag
        )
        return local_limits, outcome

    def _header_fields(
        self, limits: Sequence[Limit], results: Sequence[BucketResult]
    ) -> list[tuple[str, str]]:
        if self.headers != "ietf":
            if self.headers == "none":
                return []
            return self._x_ratelimit_fields(limits, results)

        # RateLimit-Policy lists the enforced policies with their quota (q)
        # and window in seconds (w); RateLimit gives each one's remaining
        # quota (r) and the seconds until it is full again (t).
        policy_items = []
        state_items = []
        for limit, result in zip(limits, results, strict=True):
            if limit.shadow:
                continue
            policy_items.append(limit.policy_item)
            state_items.append(
                state_item(limit.state_prefix, result.remaining, result.reset_after)
            )
        if not policy_items:
            return []
        return [
            ("RateLimit-Policy", ", ".join(policy_items)),
            ("RateLimit", ", ".join(state_items)),
        ]

    def _x_ratelimit_fields(
        self, limits: Sequence[Limit], results: Sequence[BucketResult]
    ) -> list[tuple[str, str]]:
        # The older dialect has room for one limit: the closest to denying.
        enforced = [
            (limit, result)
            for limit, result in zip(limits, results, strict=True)
            if not limit.shadow
        ]
        if not enforced:
            return []
        limit, result = min(enforced, key=lambda pair: pair[1].remaining)
        reset_at = int(self.clock()) + -(-result.reset_after // MICROSECONDS)
        return [
            ("X-RateLimit-Limit", str(limit.count)),
            ("X-RateLimit-Remaining", str(max(0, result.remaining))),
            ("X-RateLimit-Reset", str(reset_at)),
        ]

    def _deny(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        plan: _Plan,
        limits: Sequence[Limit],
        outcome: Outcome,
        fields: list[tuple[str, str]],
    ) -> Iterable[bytes]:
        # The policy that makes the client wait longest is the one to name.
        denying = [
            (result.retry_after, limit)
            for limit, result in zip(limits, outcome.results, strict=True)
            if not result.allowed and not limit.shadow
        ]
        retry_after, limit = max(denying, key=lambda pair: pair[0])
        headers = [("Retry-After", str(retry_seconds(retry_after))), *fields]
        return self._reject(
            environ, start_response, self.rate_limited, limit, "limit-exceeded", headers
        )

    def _reject(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        problem: Problem,
        limit: Limit,
        reason: str,
        headers: list[tuple[str, str]],
    ) -> Iterable[bytes]:
        context.record_decision(environ, "ratelimit", "rate-limited", reason, limit.id)
        client_ip = environ.get(context.CLIENT_IP) or environ.get("REMOTE_ADDR", "")
        events.emit(
            "ratelimit",
            "rate-limited",
            {
                "client.ip": client_ip,
                "rule.id": limit.id,
                "event.reason": reason,
                "url.path": environ.get("PATH_INFO", ""),
                "http.request.method": environ.get("REQUEST_METHOD", ""),
            },
            client=client_ip,
        )
        route_id = getattr(environ.get(context.ROUTE), "id", "-")
        return problem(
            environ, start_response, [*headers, *self._cors_for(environ, route_id)]
        )

    def _reject_unavailable(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        limits: Sequence[Limit],
    ) -> Iterable[bytes]:
        closed = next(limit for limit in limits if limit.failure_mode == "closed")
        context.record_decision(
            environ, "ratelimit", "unavailable", "store-unavailable", closed.id
        )
        client_ip = environ.get(context.CLIENT_IP) or environ.get("REMOTE_ADDR", "")
        events.emit(
            "ratelimit",
            "unavailable",
            {
                "client.ip": client_ip,
                "rule.id": closed.id,
                "event.reason": "store-unavailable",
            },
            client=client_ip,
            level=logging.ERROR,
        )
        route_id = getattr(environ.get(context.ROUTE), "id", "-")
        headers = [*self._unavailable_headers, *self._cors_for(environ, route_id)]
        return self.unavailable(environ, start_response, headers)

    def _log_shadow(
        self, environ: WSGIEnvironment, limits: Sequence[Limit], outcome: Outcome
    ) -> None:
        for limit, result in zip(limits, outcome.results, strict=True):
            if limit.shadow and not result.allowed:
                client_ip = environ.get(context.CLIENT_IP) or environ.get(
                    "REMOTE_ADDR", ""
                )
                events.emit(
                    "ratelimit",
                    "shadow-rate-limited",
                    {
                        "client.ip": client_ip,
                        "rule.id": limit.id,
                        "event.reason": "limit-exceeded",
                    },
                    client=client_ip,
                    level=logging.INFO,
                )

    def _remember_cors(
        self, route_id: str, origin: str, headers: Sequence[tuple[str, str]]
    ) -> None:
        if len(origin) > _MAX_ORIGIN:
            return
        cors = [
            (name, value) for name, value in headers if name.lower() in _CORS_HEADERS
        ]
        if not any(name.lower() == "access-control-allow-origin" for name, _ in cors):
            return
        memo = self._cors_memo
        key = (route_id, origin)
        if key not in memo and len(memo) >= _MAX_CORS_MEMO:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del memo[next(iter(memo))]
        memo[key] = cors

    def _cors_for(
        self, environ: WSGIEnvironment, route_id: str
    ) -> list[tuple[str, str]]:
        """Return the CORS headers the app sent this origin, or configured ones."""
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return []
        learned = self._cors_memo.get((route_id, origin))
        if learned is not None:
            # Merge the app's exposed headers with ours, in one field.
            headers = []
            exposed = [_EXPOSED]
            for name, value in learned:
                if name.lower() == "access-control-expose-headers":
                    exposed.insert(0, value)
                else:
                    headers.append((name, value))
            headers.append(("Access-Control-Expose-Headers", ", ".join(exposed)))
            return headers
        if "*" in self.cors_origins or origin in self.cors_origins:
            return [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Expose-Headers", _EXPOSED),
                ("Vary", "Origin"),
            ]
        return []
