# cython: language_level=3
"""Compiled layer calls: the same names and results as ``_layercall_py``.

The layer in front calls these objects through the C call slot, so the
client address and route layers run with no Python frame of their own.
The client address call looks up the resolver's memo itself, with the key
``ClientAddressResolver.resolve`` uses, and calls ``resolve()`` only on a
miss, which resolves and fills the memo as before. An environ that is not a
``dict`` takes the twin's code.
"""

from ..context import CLIENT, CLIENT_IP, ROUTE, SCHEME, TRACE
from ._layercall_py import ClientAddressCall as _ClientAddressCallPy
from ._layercall_py import RouteCall as _RouteCallPy

__all__ = ["COMPILED", "ClientAddressCall", "RouteCall"]

COMPILED = True

cdef object _CLIENT = CLIENT
cdef object _CLIENT_IP = CLIENT_IP
cdef object _SCHEME = SCHEME
cdef object _ROUTE = ROUTE
cdef object _TRACE = TRACE
cdef object _NOT_CACHED = object()
cdef object _client_call_py = _ClientAddressCallPy.__call__
cdef object _route_call_py = _RouteCallPy.__call__


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
