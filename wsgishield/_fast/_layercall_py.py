"""Pure-Python twin of the layer call kernel (``_layercall_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.

Each class runs the request path of one middleware, which builds it and
calls it from its own ``__call__``; the layer in front calls it directly
(see ``wsgishield.middleware._chain``). ``app`` is the next layer's
callable, which the middleware updates when its ``app`` changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..context import CLIENT, CLIENT_IP, ROUTE, SCHEME, TRACE

__all__ = ["COMPILED", "ClientAddressCall", "RouteCall"]

COMPILED = False

# What the route memo returns for a (method, path) it has not seen.
_NOT_CACHED: Any = object()


class ClientAddressCall:
    """Resolve the client address and scheme, store them, and call ``app``."""

    __slots__ = ("app", "fallbacks", "key_names", "memo", "resolver", "set_remote_addr")

    def __init__(self, layer: Any) -> None:
        self.app = layer._call_app
        self.resolver = layer.resolver
        self.memo = layer.resolver.cached
        self.key_names = tuple(layer.resolver.memo_key_names)
        self.fallbacks = layer._fallbacks
        self.set_remote_addr = bool(layer.set_remote_addr)

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        client, scheme = self.resolver.resolve(environ)
        environ[CLIENT] = client
        environ[CLIENT_IP] = client.ip
        environ[SCHEME] = scheme
        if client.reason is not None and self.fallbacks is not None:
            self.fallbacks.inc(client.reason)

        if self.set_remote_addr:
            environ["REMOTE_ADDR"] = client.ip
            environ["wsgi.url_scheme"] = scheme

        trace: list[tuple[str, str, Any]] | None = environ.get(TRACE)
        if trace is not None:
            trace.append(("client", client.ip, client))

        result: Iterable[bytes] = self.app(environ, start_response)
        return result


class RouteCall:
    """Find the route rule of a request, store it, and call ``app``."""

    __slots__ = ("app", "memo", "routes")

    def __init__(self, layer: Any) -> None:
        self.app = layer._call_app
        self.routes = layer.routes
        # The route table's memo lookup, a bound dict.get: a hit costs no call
        # to match().
        self.memo = layer.routes.cached

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        key = (environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))
        route = self.memo(key, _NOT_CACHED)
        if route is _NOT_CACHED:
            route = self.routes.match(*key)
        environ[ROUTE] = route

        trace: list[tuple[str, str, Any]] | None = environ.get(TRACE)
        if trace is not None:
            trace.append(("route", route.id if route else "(none)", route))

        result: Iterable[bytes] = self.app(environ, start_response)
        return result
