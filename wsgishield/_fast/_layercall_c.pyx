# cython: language_level=3
"""Compiled layer calls: the same names and results as ``_layercall_py``.

The compiled request paths of the layers derive from ``Hop``. When a hop's
``app`` is another compiled hop, it passes the request on through a C method
call, with no argument tuple and no Python frame; any other app is called
as usual. ``Entry``, the base of ``Shield`` and of the layers with a compiled
request path, gives calling them a C slot that goes to the first hop.

The client address call looks up the resolver's memo dictionary itself,
with the key ``ClientAddressResolver.resolve`` uses, and calls ``resolve()``
only on a miss, which resolves and fills the memo as before. An environ that
is not a ``dict`` takes the twin's code.
"""

cimport cython
from cpython.object cimport PyTypeObject, Py_TYPE
from cpython.tuple cimport PyTuple_Check

from ..client import ClientAddress
from ..context import CLIENT, CLIENT_IP, IDENTITY, ROUTE, SCHEME, TRACE
from ._layercall_py import ClientAddressCall as _ClientAddressCallPy
from ._layercall_py import RouteCall as _RouteCallPy
from ._layercall_py import SecurityHeadersCall as _SecurityHeadersCallPy

__all__ = ["COMPILED", "ClientAddressCall", "Entry", "Hop", "RouteCall", "SecurityHeadersCall"]

COMPILED = True

cdef extern from "Python.h":
    unsigned long Py_TPFLAGS_HEAPTYPE
    unsigned long PyType_GetFlags(PyTypeObject* type)

cdef object _CLIENT = CLIENT
cdef object _CLIENT_IP = CLIENT_IP
cdef object _SCHEME = SCHEME
cdef object _ROUTE = ROUTE
cdef object _TRACE = TRACE
cdef object _IDENTITY = IDENTITY
cdef object _NOT_CACHED = object()
cdef Py_ssize_t _IP = ClientAddress._fields.index("ip")
cdef Py_ssize_t _REASON = ClientAddress._fields.index("reason")
cdef object _client_call_py = _ClientAddressCallPy.__call__
cdef object _route_call_py = _RouteCallPy.__call__
cdef object _headers_call_py = _SecurityHeadersCallPy.__call__


cdef Hop _as_hop(object app):
    """Return ``app`` when a C method call may stand for calling it, else None.

    That holds for an instance of a compiled hop type. A Python subclass
    could override ``__call__``, so its instances are called as usual.
    """
    if isinstance(app, Hop) and not (
        PyType_GetFlags(<PyTypeObject*>Py_TYPE(app)) & Py_TPFLAGS_HEAPTYPE
    ):
        return <Hop>app
    return None


cdef class Hop:
    """A compiled request path that passes the request on to ``app``.

    ``call`` is the request path for a ``dict`` environ; calling the object
    runs it, or the twin's code for any other environ.
    """

    @property
    def app(self):
        """The callable that the request goes to next."""
        return self._app

    @app.setter
    def app(self, app):
        cdef Hop next_hop = _as_hop(app)
        cdef Hop hop = next_hop
        # Hops call each other in C, which the interpreter's recursion limit
        # does not see, so a loop of hops would overflow the C stack. Any
        # new loop passes through this hop: its app is then called as a
        # Python object, which raises RecursionError as the twin does.
        while hop is not None:
            if hop is self:
                next_hop = None
                break
            hop = hop._next_hop
        self._app = app
        self._next_hop = next_hop

    cdef object call(self, dict environ, object start_response):
        raise NotImplementedError

    cdef object forward(self, dict environ, object start_response):
        """Pass the request on to ``app``."""
        # A local reference keeps the next hop alive while it runs: the app
        # may assign this hop's app, which drops _next_hop's reference.
        cdef Hop next_hop = self._next_hop
        if next_hop is not None:
            return next_hop.call(environ, start_response)
        return self._app(environ, start_response)


cdef class Entry:
    """Calling an instance calls its ``fast_call``.

    ``Shield`` and the layers with a compiled request path derive from it,
    so a call reaches the first compiled hop from a C slot, where a Python
    ``__call__`` would start an interpreter frame.
    """

    cdef object _fast_call
    cdef Hop _first_hop

    @property
    def fast_call(self):
        """The callable that calling this object runs."""
        return self._fast_call

    @fast_call.setter
    def fast_call(self, fast_call):
        self._fast_call = fast_call
        self._first_hop = _as_hop(fast_call)

    def __call__(self, environ, start_response):
        # A local reference, as in Hop.forward: the app may assign fast_call.
        cdef Hop first_hop = self._first_hop
        if first_hop is not None and type(environ) is dict:
            return first_hop.call(<dict>environ, start_response)
        return self._fast_call(environ, start_response)


cdef class ClientAddressCall(Hop):
    """Resolve the client address and scheme, store them, and call ``app``."""

    cdef readonly object resolver
    cdef readonly dict memo
    cdef readonly tuple key_names
    cdef readonly object fallbacks
    cdef readonly bint set_remote_addr
    # The key is (REMOTE_ADDR, wsgi.url_scheme): no trusted proxy.
    cdef bint peer_key

    def __init__(self, layer):
        self.app = layer._call_app
        self.resolver = layer.resolver
        self.memo = layer.resolver._memo
        self.key_names = tuple(layer.resolver.memo_key_names)
        self.peer_key = self.key_names == ("REMOTE_ADDR", "wsgi.url_scheme")
        self.fallbacks = layer._fallbacks
        self.set_remote_addr = layer.set_remote_addr

    def __call__(self, environ, start_response):
        if type(environ) is not dict:
            return _client_call_py(self, environ, start_response)
        return self.call(<dict>environ, start_response)

    cdef object call(self, dict environ, object start_response):
        resolved = self._memoised(environ)
        if resolved is None:
            resolved = self.resolver.resolve(environ)
        client, scheme = <tuple?>resolved
        if not PyTuple_Check(client):
            raise TypeError(f"the resolver returned {type(client).__name__}, not ClientAddress")
        # ClientAddress is a named tuple: index it, not its properties.
        ip = (<tuple>client)[_IP]
        environ[_CLIENT] = client
        environ[_CLIENT_IP] = ip
        environ[_SCHEME] = scheme
        reason = (<tuple>client)[_REASON]
        if reason is not None and self.fallbacks is not None:
            self.fallbacks.inc(reason)

        if self.set_remote_addr:
            environ["REMOTE_ADDR"] = ip
            environ["wsgi.url_scheme"] = scheme

        trace = environ.get(_TRACE)
        if trace is not None:
            trace.append(("client", ip, client))

        return self.forward(environ, start_response)

    cdef object _memoised(self, dict environ):
        """Return the resolver's memo entry for this request, or None."""
        cdef Py_ssize_t count
        cdef Py_ssize_t index
        cdef list values
        if self.peer_key:
            key = (environ.get("REMOTE_ADDR"), environ.get("wsgi.url_scheme"))
        else:
            count = len(self.key_names)
            values = [None] * count
            for index in range(count):
                values[index] = environ.get(self.key_names[index])
            key = tuple(values)
        try:
            return self.memo.get(key)
        except TypeError:
            # A value that cannot be hashed: resolve() resolves it unmemoised.
            return None


cdef class RouteCall(Hop):
    """Find the route rule of a request, store it, and call ``app``."""

    cdef readonly object routes
    cdef readonly dict memo

    def __init__(self, layer):
        self.app = layer._call_app
        self.routes = layer.routes
        self.memo = layer.routes._memo

    def __call__(self, environ, start_response):
        if type(environ) is not dict:
            return _route_call_py(self, environ, start_response)
        return self.call(<dict>environ, start_response)

    cdef object call(self, dict environ, object start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        route = self.memo.get((method, path), _NOT_CACHED)
        if route is _NOT_CACHED:
            route = self.routes.match(method, path)
        environ[_ROUTE] = route

        trace = environ.get(_TRACE)
        if trace is not None:
            trace.append(("route", route.id if route else "(none)", route))

        return self.forward(environ, start_response)


@cython.final
cdef class _Variant:
    """A ``HeaderVariant`` with the parts its usual path reads, for C access."""

    cdef object variant
    # None when the variant does not keep them as a set and a list.
    cdef set unwatched
    cdef list added

    def __init__(self, variant):
        unwatched = getattr(variant, "_unwatched", None)
        added = getattr(variant, "added", None)
        self.variant = variant
        if type(unwatched) is set and type(added) is list:
            self.unwatched = unwatched
            self.added = added

    cpdef object apply(self, object headers):
        """Return ``variant.apply(headers)``, taking its usual path in C.

        That path is a list whose names are all known to be unwatched: the
        result is the list plus the added headers. Any other response goes
        to ``apply()``, which also remembers the new names.
        """
        if self.unwatched is None or type(headers) is not list:
            return self.variant.apply(headers)
        for item in <list>headers:
            if type(item) is not tuple or len(<tuple>item) != 2:
                return self.variant.apply(headers)
            if (<tuple>item)[0] not in self.unwatched:
                return self.variant.apply(headers)
        return <list>headers + self.added


cdef tuple _variants(object headers):
    """Wrap the four variants of a route's headers for C access."""
    return tuple(_Variant(variant) for variant in headers.variants)


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
        variant = <_Variant>self.variants[index]
        return self.start_response(status, variant.apply(headers), exc_info)


cdef class SecurityHeadersCall(Hop):
    """Call ``app`` with a ``start_response`` that adds the route's headers.

    The profile is chosen per route when the request arrives. Which of its
    four variants applies is decided when the app starts its response,
    because a layer inside this one sets the identity. An exception from the
    app goes to the middleware's ``internal_error()``, unless ``catch_errors``
    is off.
    """

    cdef readonly object layer
    cdef readonly bint catch_errors
    # (the four variants wrapped for C, no-store when authenticated).
    cdef readonly tuple default
    cdef readonly dict by_route

    def __init__(self, layer):
        self.app = layer._call_app
        self.layer = layer
        self.catch_errors = layer.catch_errors
        self.default = (_variants(layer.default), layer.default.no_store_authenticated)
        self.by_route = {
            route_id: (_variants(headers), headers.no_store_authenticated)
            for route_id, headers in layer.by_route.items()
        }

    def __call__(self, environ, start_response):
        if type(environ) is not dict:
            return _headers_call_py(self, environ, start_response)
        return self.call(<dict>environ, start_response)

    cdef object call(self, dict environ, object start_response):
        cdef tuple chosen = self.default
        cdef _AddHeaders add_headers
        if self.by_route:
            route = environ.get(_ROUTE)
            if route is not None:
                chosen = self.by_route.get(route.id, chosen)

        add_headers = _AddHeaders.__new__(_AddHeaders)
        add_headers.environ = environ
        add_headers.start_response = start_response
        add_headers.variants = chosen[0]
        add_headers.no_store_authenticated = chosen[1]

        if not self.catch_errors:
            return self.forward(environ, add_headers)
        try:
            return self.forward(environ, add_headers)
        except Exception:
            return self.layer.internal_error(environ, add_headers)
