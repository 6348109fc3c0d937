"""Layer-to-layer calls with as little interpreter work as possible.

CPython 3.11 calls an instance of a class with a Python ``__call__`` through
a C slot that looks the method up and starts a new interpreter loop. A bound
method's frame is pushed inline instead, and a compiled callable needs no
frame at all. So each layer keeps the fastest callable of the app it wraps
(:func:`direct_call`): a layer's compiled request path, else a bound
``__call__``. Four nested trivial layers, timed with ``timeit`` on the
machine of ``docs/benchmarks/hardening.md``, took 1.46 µs per call through
bound methods against 2.23 µs through instances.

Compiled request paths that follow each other go further: each passes the
request to the next with a C method call (``Hop`` in the layer call kernel).
"""

from __future__ import annotations

import inspect
import types
from typing import TYPE_CHECKING, cast

from .._fast.layercall import Entry

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["WrappingLayer", "direct_call"]


def direct_call(app: WSGIApplication) -> WSGIApplication:
    """Return the fastest callable that behaves as ``app`` does.

    A layer that runs its request path in a separate callable (its
    ``fast_call``) is replaced by that callable. Then an instance of a class
    with a Python ``__call__`` gives its bound ``__call__``. Any other app (a
    function, a bound method, a callable written in C) is returned as it is.
    """
    if isinstance(app, WrappingLayer):
        app = app.fast_call
    # The type's own __call__, as the interpreter finds it for app(...).
    call = inspect.getattr_static(type(app), "__call__", None)
    if isinstance(call, types.FunctionType):
        return cast("WSGIApplication", types.MethodType(call, app))
    return app


class WrappingLayer(Entry):
    """A middleware whose request path runs in a separate callable.

    The layer builds ``fast_call`` from a kernel (compiled, or its twin),
    and calling the layer calls it (see ``Entry``). ``fast_call`` keeps the
    next layer's callable in its own ``app`` attribute, which assigning the
    layer's ``app`` updates.
    """

    _app: WSGIApplication
    _call_app: WSGIApplication

    @property
    def app(self) -> WSGIApplication:
        """The wrapped WSGI application."""
        return self._app

    @app.setter
    def app(self, app: WSGIApplication) -> None:
        self._app = app
        self._call_app = direct_call(app)
        if self.fast_call is not None:
            self.fast_call.app = self._call_app
