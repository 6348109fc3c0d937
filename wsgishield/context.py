"""Names of the environ keys that the layers share within one request.

Each layer writes its result once under one of these keys, and later layers
and the application read it from there instead of computing it again.
"""

from __future__ import annotations

__all__ = [
    "CLIENT",
    "CLIENT_IP",
    "IDENTITY",
    "ROUTE",
    "SCHEME",
    "TRACE",
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

#: A list that layers append ``(layer, decision, detail)`` tuples to when it
#: is present; ``wsgishield explain`` sets it, normal requests do not.
TRACE = "wsgishield.trace"
