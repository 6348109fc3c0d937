"""``Shield``: every layer a policy enables, composed around one WSGI app.

::

    app.wsgi_app = Shield(app.wsgi_app, policy="shield.toml")

The layers run cheapest and most decisive first: client address, route
rule, then the layers the policy enables. Each is a middleware usable on its
own; ``Shield`` builds them from one policy and shares the compiled route
table between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._fast.layercall import Entry
from .errors import ConfigurationError
from .middleware import (
    AccessMiddleware,
    AuthMiddleware,
    CacheMiddleware,
    ClientAddressMiddleware,
    MetricsMiddleware,
    RateLimitMiddleware,
    RequestLimitsMiddleware,
    RouteMiddleware,
    SecurityHeadersMiddleware,
)
from .middleware._chain import direct_call
from .policy import Policy, PolicySource, load_policy
from .routes import Route, RouteTable

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["LAYERS", "Shield", "build_route_table"]


class _Layer(Protocol):
    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> WSGIApplication | None: ...


#: Layer classes, outermost first.
LAYERS: tuple[type[_Layer], ...] = (
    ClientAddressMiddleware,
    RouteMiddleware,
    MetricsMiddleware,
    SecurityHeadersMiddleware,
    AccessMiddleware,
    RequestLimitsMiddleware,
    AuthMiddleware,
    RateLimitMiddleware,
    CacheMiddleware,
)


def build_route_table(policy: Policy) -> RouteTable:
    """Compile the policy's route rules, naming the bad key on error."""
    routes = []
    for index, rule in enumerate(policy.routes):
        try:
            routes.append(Route(rule.id, rule.path, rule.methods, rule))
        except ValueError as exc:
            key = f"routes[{index}].path"
            raise ConfigurationError(key, rule.path, str(exc)) from exc
    return RouteTable(routes, cache_size=policy.route_cache_size)


class Shield(Entry):
    """The composed middleware stack for one policy.

    ``policy`` is a TOML file path, a mapping, a :class:`Policy` or ``None``
    for the empty policy. Everything is validated and compiled here; a bad
    policy raises :class:`~wsgishield.errors.ConfigurationError`.

    Calling the shield calls ``fast_call``, the outermost layer's fastest
    callable, with no Python frame of the shield's own in between.
    """

    def __init__(self, app: WSGIApplication, policy: PolicySource = None) -> None:
        self.app = app
        self.policy = load_policy(policy)
        self.routes = build_route_table(self.policy)
        self.layers: list[WSGIApplication] = []

        stack = app
        for layer in reversed(LAYERS):
            wrapped = layer.from_policy(stack, self.policy, self.routes)
            if wrapped is not None:
                stack = wrapped
                self.layers.insert(0, wrapped)
        self.fast_call = direct_call(stack)
