"""Access middleware: CIDR allow and deny lists, then automatic bans.

A request from a denied network, or from outside a scope's allow list, gets
a 403 problem response before any inner layer or the application runs.
Site-wide lists apply first, then the lists of the matched route; both must
let the client through. A banned client gets 403, or 429 with
``Retry-After`` when the ban policy sets ``status = 429``.

Strikes come from the layers inside this one and from the application: the
middleware watches the status each request ends with and counts the ones
the ban policy names, plus requests to trap paths.

Each deny, ban, strike and rejection of a banned client is one event on
``wsgishield.events.access`` (rate-limited per list entry or per client),
and the matching allow or deny rule is recorded for ``wsgishield explain``.

.. warning::

   Lists and bans key on the client address from the client-address layer.
   If that layer trusts a proxy that clients can reach directly, any client
   can pick the address it is judged by. For static deny lists of millions
   of networks, or bans at the network edge, prefer the firewall or the
   reverse proxy (nginx ``deny``, ``geo``); this layer is for lists that
   change at runtime, per-route rules and bans decided by the application's
   answers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import context, events, metrics
from .._fast.address import parse_address
from ..access import AccessList, Verdict
from ..bans import Bans
from ..client import ClientAddress
from ..problem import PROBLEM_TYPE_BASE, Problem

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import AccessPolicy, BanPolicy, Policy, RedisSettings, RouteAccess
    from ..routes import RouteTable

__all__ = ["AccessMiddleware"]

# Records per second of each of denied-cidr, strike and banned, across all
# clients: a flood from many addresses costs this many records per second
# plus a count of the suppressed ones (``labels.suppressed``).
FLOOD_EVENTS_PER_SECOND = 20

# A request without an address of its own (a Unix socket peer) is judged
# as loopback, as the client-address layer does.
_UNIX_SOCKET_PEER = ("127.0.0.1", 4, 0x7F000001, "")


class AccessMiddleware:
    """Reject denied networks and banned clients; count strikes for bans.

    ``access`` contains the site-wide lists, ``routes`` maps route ids to
    their own lists and ``bans`` turns automatic bans on; each may be left
    out. ``redis`` is needed when ``bans.store`` is ``redis``.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        access: AccessPolicy | None = None,
        routes: Mapping[str, RouteAccess] | None = None,
        bans: BanPolicy | Bans | None = None,
        redis: RedisSettings | None = None,
        problem_type_base: str = PROBLEM_TYPE_BASE,
        registry: metrics.MetricsRegistry | None = None,
    ) -> None:
        self.app = app
        self.lists: AccessList | None = None
        if access is not None:
            self.lists = AccessList(
                allow=access.allow,
                deny=access.deny,
                allow_files=access.allow_files,
                deny_files=access.deny_files,
                reload_interval=access.reload_interval,
                key="access",
            )
        reload_interval = access.reload_interval if access is not None else 1.0
        self.route_lists: dict[str, AccessList] = {
            route_id: AccessList(
                allow=rules.allow,
                deny=rules.deny,
                allow_files=rules.allow_files,
                deny_files=rules.deny_files,
                reload_interval=reload_interval,
                key=f"routes[{route_id}].access",
            )
            for route_id, rules in (routes or {}).items()
        }
        if bans is None or isinstance(bans, Bans):
            self.bans = bans
        else:
            self.bans = Bans.from_policy(bans, redis, registry=registry)
        self.ban_status = 403 if bans is None or isinstance(bans, Bans) else bans.status
        self.flood_limiter = events.EventLimiter(per_second=FLOOD_EVENTS_PER_SECOND)

        # Counting is on when a registry is given; from_policy gives one
        # when the policy has a [metrics] section.
        self._denials: metrics.Counts | None = None
        self._strikes: metrics.Counts | None = None
        self._bans_started: metrics.Counts | None = None
        if registry is not None:
            scopes = [lists.key for lists in self.route_lists.values()]
            if self.lists is not None:
                scopes.append(self.lists.key)
            self._denials = metrics.Counts(
                registry.access_denials,
                [
                    (scope, reason)
                    for scope in scopes
                    for reason in ("deny-list", "not-allowed")
                ],
                _denial_labels,
            )
        if registry is not None and self.bans is not None:
            self._strikes = metrics.Counts(
                registry.ban_strikes,
                [
                    "trap-path",
                    *(f"status-{code}" for code in self.bans.strike_statuses),
                ],
            )
            self._bans_started = metrics.Counts(registry.bans, [()])

        self.denied = Problem(
            403,
            "access-denied",
            "Access denied",
            "Requests from this network are not allowed here.",
            type_base=problem_type_base,
        )
        self.banned = Problem(
            self.ban_status,
            "banned",
            "Client banned",
            "Too many failed requests from this client; try again later.",
            type_base=problem_type_base,
        )

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> AccessMiddleware | None:
        route_rules = {
            route.id: route.rule.access
            for route in routes.routes
            if route.rule is not None
            and getattr(route.rule, "access", None) is not None
        }
        if policy.access is None and policy.bans is None and not route_rules:
            return None
        return cls(
            app,
            access=policy.access,
            routes=route_rules,
            bans=policy.bans,
            redis=policy.redis,
            problem_type_base=policy.problem_type_base,
            registry=metrics.REGISTRY if policy.metrics is not None else None,
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        client = environ.get(context.CLIENT) or _peer_client(environ)
        route = environ.get(context.ROUTE)

        verdict = self._check_lists(client, route)
        if verdict is not None and not verdict.allowed:
            return self._deny(environ, start_response, client, route, verdict)
        if verdict is not None and verdict.rule is not None:
            trace = environ.get(context.TRACE)
            if trace is not None:
                decision = context.Decision(
                    "access", "allowed", "allow-list", verdict.rule.id
                )
                trace.append(("access", "allowed", decision))

        bans = self.bans
        if bans is None or bans.is_exempt_network(client.version, client.value):
            return self.app(environ, start_response)

        left = bans.ban_left(client.version, client.value)
        if left is not None:
            return self._reject_banned(
                environ, start_response, bans, client, route, left
            )

        path = environ.get("PATH_INFO") or "/"
        if bans.is_exempt_path(path):
            return self.app(environ, start_response)
        if bans.is_trap(path):
            self._strike(
                environ, bans, client, route, "trap-path", None, bans.trap_strikes
            )

        watching = self._watching(environ, start_response, bans, client, route)
        return self.app(environ, watching)

    def _check_lists(self, client: ClientAddress, route: Any) -> Verdict | None:
        """Apply the site-wide lists, then the route's; return the deciding verdict."""
        verdict = None
        if self.lists is not None:
            verdict = self.lists.check(client.version, client.value)
            if not verdict.allowed:
                return verdict
        if route is not None and self.route_lists:
            route_list = self.route_lists.get(route.id)
            if route_list is not None:
                route_verdict = route_list.check(client.version, client.value)
                if not route_verdict.allowed or route_verdict.rule is not None:
                    return route_verdict
        return verdict

    def _deny(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        client: ClientAddress,
        route: Any,
        verdict: Verdict,
    ) -> Iterable[bytes]:
        rule = verdict.rule
        # Outside every allow network, the allow list as a whole decided.
        reason = "deny-list" if rule is not None else "not-allowed"
        rule_id = rule.id if rule is not None else f"{verdict.scope}.allow"
        context.record_decision(environ, "access", "denied-cidr", reason, rule_id)
        if self._denials is not None:
            self._denials.inc((verdict.scope, reason))
        fields = _fields(environ, client, route)
        fields["event.reason"] = reason
        fields["rule.id"] = rule_id
        if rule is not None:
            fields["rule.ruleset"] = rule.network
        events.emit("access", "denied-cidr", fields, limiter=self.flood_limiter)
        return self.denied(environ, start_response)

    def _reject_banned(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        bans: Bans,
        client: ClientAddress,
        route: Any,
        left: float,
    ) -> Iterable[bytes]:
        subject = bans.subject_text(bans.subject(client.version, client.value))
        context.record_decision(environ, "access", "banned", "strikes", subject)
        fields = _fields(environ, client, route)
        fields["event.reason"] = "banned"
        fields["rule.id"] = subject
        events.emit(
            "access", "banned", fields, level=logging.INFO, limiter=self.flood_limiter
        )
        if self.ban_status == 429:
            retry_after = str(max(1, math.ceil(left)))
            return self.banned(environ, start_response, [("Retry-After", retry_after)])
        return self.banned(environ, start_response)

    def _watching(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        bans: Bans,
        client: ClientAddress,
        route: Any,
    ) -> StartResponse:
        """Wrap ``start_response`` to count a strike for a failing status."""
        statuses = bans.strike_statuses
        counted = False

        def watching(status: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal counted
            if not counted:
                counted = True
                try:
                    code = int(status[:3])
                except (TypeError, ValueError):
                    code = 0  # a malformed status is the server's problem to report
                if code in statuses:
                    decision = environ.get(context.DECISION)
                    rule_id = decision.rule_id if decision is not None else None
                    reason = f"status-{code}"
                    self._strike(environ, bans, client, route, reason, rule_id, 1)
            return start_response(status, headers, exc_info)

        return watching

    def _strike(
        self,
        environ: WSGIEnvironment,
        bans: Bans,
        client: ClientAddress,
        route: Any,
        reason: str,
        rule_id: str | None,
        weight: int,
    ) -> None:
        subject, ban = bans.strike(client.version, client.value, weight)
        if self._strikes is not None:
            self._strikes.inc(reason, weight)
        fields = _fields(environ, client, route)
        fields["event.reason"] = reason
        fields["labels.subject"] = subject
        if rule_id is not None:
            fields["rule.id"] = rule_id
        events.emit(
            "access", "strike", fields, level=logging.INFO, limiter=self.flood_limiter
        )
        if ban is None:
            return
        if self._bans_started is not None:
            self._bans_started.inc(())
        fields["labels.ban_seconds"] = round(ban.seconds, 3)
        fields["labels.offence"] = ban.offence
        events.emit("access", "ban", fields, client=subject)


def _denial_labels(key: tuple[str, str]) -> tuple[str, str]:
    # The list label is the scope without brackets, which labels may not
    # hold: "access", or "routes.items.access" for routes[items].access.
    scope, reason = key
    return scope.replace("[", ".").replace("]", ""), reason


def _peer_client(environ: WSGIEnvironment) -> ClientAddress:
    """Use the peer as the client when no client-address layer ran."""
    parsed = parse_address(environ.get("REMOTE_ADDR") or "") or _UNIX_SOCKET_PEER
    ip, version, value, zone = parsed
    return ClientAddress(ip, version, value, zone, ip, "peer", None)


def _fields(
    environ: WSGIEnvironment, client: ClientAddress, route: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "client.ip": client.ip,
        "url.path": (environ.get("PATH_INFO") or "/")[:256],
        "http.request.method": (environ.get("REQUEST_METHOD") or "")[:16],
    }
    if route is not None:
        fields["labels.route"] = route.id
    return fields
