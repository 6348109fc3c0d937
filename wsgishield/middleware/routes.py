"""Route middleware: find the policy rule for a request, once.

The matched :class:`~wsgishield.routes.Route` (or ``None``) goes under
``wsgishield.route`` for the layers below it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import context
from ._chain import WrappingLayer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["RouteMiddleware"]

# What the route memo returns for a (method, path) it has not seen.
_NOT_CACHED: Any = object()


class RouteMiddleware(WrappingLayer):
    """Match method and path against a :class:`~wsgishield.routes.RouteTable`."""

    def __init__(self, app: WSGIApplication, *, routes: RouteTable) -> None:
        self.app = app
        self.routes = routes
        self._cached = routes.cached

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> RouteMiddleware | None:
        if not routes.routes:
            return None
        return cls(app, routes=routes)

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        key = (environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))
        route = self._cached(key, _NOT_CACHED)
        if route is _NOT_CACHED:
            route = self.routes.match(*key)
        environ[context.ROUTE] = route

        trace: list[tuple[str, str, Any]] | None = environ.get(context.TRACE)
        if trace is not None:
            trace.append(("route", route.id if route else "(none)", route))

        return self._call_app(environ, start_response)
