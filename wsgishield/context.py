"""Names of the environ keys that the layers share within one request.

Each layer writes its result once under one of these keys, and later layers
and the application read it from there instead of computing it again.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, NamedTuple

__all__ = [
    "BODY",
    "CACHE",
    "CLIENT",
    "CLIENT_IP",
    "DECISION",
    "IDENTITY",
    "ROUTE",
    "SCHEME",
    "TRACE",
    "Decision",
    "record_decision",
]

#: Canonical text of the resolved client address (``str``).
CLIENT_IP = "wsgishield.client_ip"

#: The full resolution (:class:`wsgishield.client.ClientAddress`).
CLIENT = "wsgishield.client"

#: Effective request scheme, ``"http"`` or ``"https"``, after trusted proxies.
SCHEME = "wsgishield.scheme"

#: The matched route rule (:class:`wsgishield.routes.Route`), or ``None``.
ROUTE = "wsgishield.route"

#: The verified identity, set by the authentication layer.
IDENTITY = "wsgishield.identity"

#: The response cache middleware, for the app to purge tags with
#: ``environ[CACHE].purge("tag", ...)``; set on requests the cache handles.
CACHE = "wsgishield.cache"
#: The request body decoded into the route's schema by the request limits layer.
BODY = "wsgishield.body"

#: A list that layers append ``(layer, decision, detail)`` tuples to when it
#: is present; ``wsgishield explain`` sets it, normal requests do not.
TRACE = "wsgishield.trace"

#: The :class:`Decision` of the layer that ended the request early, if any.
DECISION = "wsgishield.decision"


class Decision(NamedTuple):
    """Why a layer answered a request itself instead of passing it on."""

    #: The layer: ``access``, ``request``, ``auth``, ``ratelimit``, ``cache``.
    layer: str
    #: One of a fixed set: ``denied-cidr``, ``banned``, ``invalid``,
    #: ``auth-failed``, ``rate-limited``, ``cached``, ``unavailable``.
    action: str
    #: A short machine-readable reason from a fixed set per layer.
    reason: str
    #: The id of the policy rule or list entry behind the decision.
    rule_id: str | None = None


def record_decision(
    environ: MutableMapping[str, Any],
    layer: str,
    action: str,
    reason: str,
    rule_id: str | None = None,
) -> Decision:
    """Store a layer's decision in the environ and in the trace, if any."""
    decision = Decision(layer, action, reason, rule_id)
    environ[DECISION] = decision
    trace = environ.get(TRACE)
    if trace is not None:
        trace.append((layer, action, decision))
    return decision
