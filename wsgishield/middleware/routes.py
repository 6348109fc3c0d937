"""Route middleware: find the policy rule for a request, once.

The matched :class:`~wsgishield.routes.Route` (or ``None``) goes under
``wsgishield.route`` for the layers below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._fast.layercall import RouteCall
from ._chain import WrappingLayer

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["RouteMiddleware"]


class RouteMiddleware(WrappingLayer):
    """Match method and path against a :class:`~wsgishield.routes.RouteTable`.

    Calling the layer runs its request path, ``layercall.RouteCall`` in
    ``wsgishield._fast``, which matches through the table's memo.
    """

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
