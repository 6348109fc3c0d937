# cython: language_level=3
"""Compiled layer calls: the same names and results as ``_layercall_py``.

The layer in front calls these objects through the C call slot, so the
client address, route and security headers layers run with no Python frame
of their own, and the headers layer's ``start_response`` wrapper is a small
C object in place of a closure.
The client address call looks up the resolver's memo itself, with the key
``ClientAddressResolver.resolve`` uses, and calls ``resolve()`` only on a
miss, which resolves and fills the memo as before. An environ that is not a
``dict`` takes the twin's code.
"""

cimport cython

from ..context import CLIENT, CLIENT_IP, IDENTITY, ROUTE, SCHEME, TRACE
from ._layercall_py import ClientAddressCall as _ClientAddressCallPy
from ._layercall_py import RouteCall as _RouteCallPy
from ._layercall_py import SecurityHeadersCall as _SecurityHeadersCallPy

__all__ = ["COMPILED", "ClientAddressCall", "RouteCall", "SecurityHeadersCall"]

COMPILED = True

cdef object _CLIENT = CLIENT
cdef object _CLIENT_IP = CLIENT_IP
cdef object _SCHEME = SCHEME
cdef object _ROUTE = ROUTE
cdef object _TRACE = TRACE
cdef object _IDENTITY = IDENTITY
cdef object _NOT_CACHED = object()
cdef object _client_call_py = _ClientAddressCallPy.__call__
cdef object _route_call_py = _RouteCallPy.__call__
cdef object _headers_call_py = _SecurityHeadersCallPy.__call__


cdef class ClientAddressCall:
    """Resolve the client address and scheme, store them, and call ``app``."""

    cdef public object app
    cdef readonly object resolver
    cdef readonly object memo
    cdef readonly tuple key_names
    cdef readonly object fallbacks
    cdef readonly bint set_remote_addr

    def __init__(self, layer):
        self.app = layer._call_app
        self.resolver = layer.resolver
        self.memo = layer.resolver.cached
        self.key_names = tuple(layer.resolver.memo_key_names)
        self.fallbacks = layer._fallbacks
        self.set_remote_addr = layer.set_remote_addr

    def __call__(self, environ, start_response):
        if type(environ) is not dict:
            return _client_call_py(self, environ, start_response)
        resolved = self._memoised(<dict>environ)
        if resolved is None:
            resolved = self.resolver.resolve(environ)
        client, scheme = resolved
        ip = client.ip
        environ[_CLIENT] = client
        environ[_CLIENT_IP] = ip
        environ[_SCHEME] = scheme
        reason = client.reason
        if reason is not None and self.fallbacks is not None:
            self.fallbacks.inc(reason)

        if self.set_remote_addr:
            environ["REMOTE_ADDR"] = ip
            environ["wsgi.url_scheme"] = scheme

        trace = (<dict>environ).get(_TRACE)
        if trace is not None:
            trace.append(("client", ip, client))

        return self.app(environ, start_response)

    cdef object _memoised(self, dict environ):
        """Return the resolver's memo entry for this request, or None."""
        cdef Py_ssize_t count = len(self.key_names)
        cdef Py_ssize_t index
        cdef list values = [None] * count
        for index in range(count):
            values[index] = environ.get(self.key_names[index])
        try:
            return self.memo(tuple(values))
        except TypeError:
            # A value that cannot be hashed: resolve() resolves it unmemoised.
            return None


cdef class RouteCall:
    """Find the route rule of a request, store it, and call ``app``."""

    cdef public object app
    cdef readonly object routes
    cdef readonly object memo

    def __init__(self, layer):
        self.app = layer._call_app
        self.routes = layer.routes
        self.memo = layer.routes.cached

    def __call__(self, environ, start_response):
        if type(environ) is not dict:
            return _route_call_py(self, environ, start_response)
        method = (<dict>environ).get("REQUEST_METHOD", "GET")
        path = (<dict>environ).get("PATH_INFO", "/")
        route = self.memo((method, path), _NOT_CACHED)
        if route is _NOT_CACHED:
            route = self.routes.match(method, path)
        environ[_ROUTE] = route

        trace = (<dict>environ).get(_TRACE)
        if trace is not None:
            trace.append(("route", route.id if route else "(none)", route))

        return self.app(environ, start_response)


@cython.freelist(16)
cdef class _AddHeaders:
    """The ``start_response`` that ``SecurityHeadersCall`` gives the app."""

    cdef dict environ
    cdef object start_response
    cdef tuple variants
    cdef bint no_store_authenticated

    def __call__(self, status, headers, exc_info=None):
        cdef Py_ssize_t index = 2 if self.environ.get(_SCHEME) == "https" else 0
        if self.no_store_authenticated and (
            "HTTP_AUTHORIZATION" in self.environ
            or self.environ.get(_IDENTITY) is not None
        ):
            index += 1
        # The same index as HeaderProfile.variant(https, no_store).
        variant = self.variants[index]
        return self.start_response(status, variant.apply(headers), exc_info)


cdef class SecurityHeadersCall:
    """Call ``app`` with a ``start_response`` that adds the route's headers.

    The profile is chosen per route when the request arrives. Which of its
    four variants applies is decided when the app starts its response,
    because a layer inside this one sets the identity. An exception from the
    app goes to the middleware's ``internal_error()``, unless ``catch_errors``
    is off.
    """

    cdef public object app
    cdef readonly object layer
    cdef readonly bint catch_errors
    cdef readonly tuple default
    cdef readonly dict by_route

    def __init__(self, layer):
        self.app = layer._call_app
        self.layer = layer
        self.catch_errors = layer.catch_errors
        self.default = (tuple(layer.default.variants), layer.default.no_store_authenticated)
        self.by_route = {
            route_id: (tuple(headers.variants), headers.no_store_authenticated)
            for route_id, headers in layer.by_route.items()
        }

    def __call__(self, environ, start_response):
        cdef tuple chosen = self.default
        cdef _AddHeaders add_headers
        if type(environ) is not dict:
            return _headers_call_py(self, environ, start_response)
        if self.by_route:
            route = (<dict>environ).get(_ROUTE)
            if route is not None:
                chosen = self.by_route.get(route.id, chosen)

        add_headers = _AddHeaders.__new__(_AddHeaders)
        add_headers.environ = <dict>environ
        add_headers.start_response = start_response
        add_headers.variants = chosen[0]
        add_headers.no_store_authenticated = chosen[1]

        if not self.catch_errors:
            return self.app(environ, add_headers)
        try:
            return self.app(environ, add_headers)
        except Exception:
            return self.layer.internal_error(environ, add_headers)
