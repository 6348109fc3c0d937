"""Route middleware: find the policy rule for a request, once.

The matched :class:`~wsgishield.routes.Route` (or ``None``) goes under
``wsgishield.route`` for the layers below it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._fast.layercall import RouteCall
from ._chain import WrappingLayer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["RouteMiddleware"]


class RouteMiddleware(WrappingLayer):
    """Match method and path against a :class:`~wsgishield.routes.RouteTable`."""

    def __init__(self, app: WSGIApplication, *, routes: RouteTable) -> None:
        self.app = app
        self.routes = routes
        self.fast_call = RouteCall(self)

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
        # The request path is in the layercall kernel: match (through the
        # memo), store the route under wsgishield.route, trace, call app.
        result: Iterable[bytes] = self.fast_call(environ, start_response)
        return result
