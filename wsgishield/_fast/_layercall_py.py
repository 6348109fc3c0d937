"""Pure-Python twin of the layer call kernel (``_layercall_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.

Each class runs the request path of one middleware, which builds it. Calling
the middleware calls it, and so does the layer in front (see
``wsgishield.middleware._chain``). ``app`` is the next layer's
callable, which the middleware updates when its ``app`` changes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..context import CLIENT, CLIENT_IP, IDENTITY, ROUTE, SCHEME, TRACE

__all__ = [
    "COMPILED",
    "ClientAddressCall",
    "Entry",
    "Hop",
    "RouteCall",
    "SecurityHeadersCall",
]

COMPILED = False

# Default of the route memo lookup, returned for a (method, path) it has
# not seen.
_NOT_CACHED: Any = object()


class Hop:
    """A request path that passes the request on to ``app``.

    The compiled hops pass it to a compiled ``app`` with a C method call;
    here every ``app`` is simply called.
    """

    __slots__ = ("app",)

    app: Any


class Entry:
    """Calling an instance calls its ``fast_call``.

    ``Shield`` and the layers with a compiled request path derive from it.
    """

    fast_call: Any = None

    if TYPE_CHECKING:

        def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]: ...

    else:
        # obj(...) looks __call__ up on the type and calls what this property
        # returns, so no Python frame of the object's own runs first.
        __call__ = property(operator.attrgetter("fast_call"))


class ClientAddressCall(Hop):
    """Resolve the client address and scheme, store them, and call ``app``."""

    __slots__ = ("fallbacks", "key_names", "memo", "resolver", "set_remote_addr")

    def __init__(self, layer: Any) -> None:
        self.app = layer._call_app
        self.resolver = layer.resolver
        # The resolver's memo, which resolve() looks up.
        self.memo = layer.resolver._memo
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


class RouteCall(Hop):
    """Find the route rule of a request, store it, and call ``app``."""

    __slots__ = ("memo", "routes")

    def __init__(self, layer: Any) -> None:
        self.app = layer._call_app
        self.routes = layer.routes
        # The route table's memo: a hit costs no call to match().
        self.memo = layer.routes._memo

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        key = (environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))
        route = self.memo.get(key, _NOT_CACHED)
        if route is _NOT_CACHED:
            route = self.routes.match(*key)
        environ[ROUTE] = route

        trace: list[tuple[str, str, Any]] | None = environ.get(TRACE)
        if trace is not None:
            trace.append(("route", route.id if route else "(none)", route))

        result: Iterable[bytes] = self.app(environ, start_response)
        return result


class SecurityHeadersCall(Hop):
    """Call ``app`` with a ``start_response`` that adds the route's headers.

    The profile is chosen per route when the request arrives. Which of its
    four variants applies is decided when the app starts its response,
    because a layer inside this one sets the identity. An exception from the
    app goes to the middleware's ``internal_error()``, unless ``catch_errors``
    is off.
    """

    __slots__ = ("by_route", "catch_errors", "default", "layer")

    def __init__(self, layer: Any) -> None:
        self.app = layer._call_app
        self.layer = layer
        self.catch_errors = bool(layer.catch_errors)
        # Route id: (the profile's four variants, no-store when authenticated).
        self.default = (layer.default.variants, layer.default.no_store_authenticated)
        self.by_route = {
            route_id: (headers.variants, headers.no_store_authenticated)
            for route_id, headers in layer.by_route.items()
        }

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        chosen = self.default
        if self.by_route:
            route = environ.get(ROUTE)
            if route is not None:
                chosen = self.by_route.get(route.id, chosen)

        def add_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            variants, no_store_authenticated = chosen
            index = 2 if environ.get(SCHEME) == "https" else 0
            if no_store_authenticated and (
                "HTTP_AUTHORIZATION" in environ or environ.get(IDENTITY) is not None
            ):
                index += 1
            # The same index as HeaderProfile.variant(https, no_store).
            write: Callable[[bytes], object] = start_response(
                status, variants[index].apply(headers), exc_info
            )
            return write

        result: Iterable[bytes]
        if not self.catch_errors:
            result = self.app(environ, add_headers)
            return result
        try:
            result = self.app(environ, add_headers)
        except Exception:
            result = self.layer.internal_error(environ, add_headers)
        return result
