"""Security headers middleware: one precomputed profile on every response.

It sits outside every layer that can reject a request, so the shield's own
problem responses carry the same headers as the app's. When the app raises
before it starts a response, the middleware logs the traceback and sends a
500 problem with the profile's headers, in place of the server's bare page.

.. warning::

   ``Strict-Transport-Security`` follows ``wsgishield.scheme``, which the
   client address layer takes from ``X-Forwarded-Proto`` only when the peer
   is a trusted proxy. A server that rewrites ``wsgi.url_scheme`` itself can
   still make that scheme https. Gunicorn does so for peers in
   ``forwarded_allow_ips`` (127.0.0.1 by default) unless
   ``secure_scheme_headers`` is empty, as :mod:`wsgishield.gunicorn` sets it.

Nginx can add the same headers (``add_header ... always``), but it cannot
tell an authenticated response from an anonymous one, or follow per-route
profiles; use one of the two, not both, for each header.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .. import context
from .._fast.layercall import SecurityHeadersCall
from ..policy import HeadersPolicy
from ..problem import PROBLEM_TYPE_BASE, Problem
from ..security_headers import HeaderProfile, hsts_value
from ._chain import WrappingLayer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy, RouteHeaders
    from ..routes import RouteTable

__all__ = ["SecurityHeadersMiddleware"]

logger = logging.getLogger(__name__)

_ROUTE = context.ROUTE
_SCHEME = context.SCHEME
_IDENTITY = context.IDENTITY


class _RouteHeaders:
    """The profile of one route and whether it forces no-store when authenticated."""

    __slots__ = ("no_store_authenticated", "profile", "variants")

    def __init__(self, profile: HeaderProfile, no_store_authenticated: bool) -> None:
        self.profile = profile
        self.variants = profile.variants
        self.no_store_authenticated = no_store_authenticated


class SecurityHeadersMiddleware(WrappingLayer):
    """Add a security header profile to every response of the wrapped app.

    Calling the layer runs its request path, ``layercall.SecurityHeadersCall``
    in ``wsgishield._fast``, which sends the app's exceptions to
    :meth:`internal_error`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        profile: str = "api",
        hsts_max_age: int = 31_536_000,
        hsts_include_subdomains: bool = True,
        hsts_preload: bool = False,
        content_security_policy: str | None = None,
        extra: Mapping[str, str] | None = None,
        remove: Iterable[str] = ("Server", "X-Powered-By"),
        no_store_authenticated: bool = True,
        catch_errors: bool = True,
        routes: Mapping[str, RouteHeaders] | None = None,
        problem_type_base: str = PROBLEM_TYPE_BASE,
    ) -> None:
        self.app = app
        self.catch_errors = catch_errors
        hsts = (
            hsts_value(hsts_max_age, hsts_include_subdomains, hsts_preload)
            if hsts_max_age > 0
            else None
        )
        remove = tuple(remove)

        profiles: dict[str, HeaderProfile] = {}

        def build(name: str) -> HeaderProfile:
            if name not in profiles:
                profiles[name] = HeaderProfile(
                    name,
                    hsts=hsts,
                    content_security_policy=content_security_policy,
                    extra=extra,
                    remove=remove,
                )
            return profiles[name]

        self.default = _RouteHeaders(build(profile), no_store_authenticated)
        self.by_route: dict[str, _RouteHeaders] = {}
        for route_id, settings in (routes or {}).items():
            cache = settings.authenticated_cache
            self.by_route[route_id] = _RouteHeaders(
                build(settings.profile or profile),
                no_store_authenticated if cache is None else cache == "no-store",
            )

        self.internal_error_problem = Problem(
            500, "internal-error", "Internal Server Error", type_base=problem_type_base
        )
        self.fast_call = SecurityHeadersCall(self)

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> SecurityHeadersMiddleware | None:
        overrides = {
            rule.id: rule.headers for rule in policy.routes if rule.headers is not None
        }
        if policy.headers is None and not overrides:
            return None
        settings = policy.headers or HeadersPolicy()
        return cls(
            app,
            profile=settings.profile,
            hsts_max_age=settings.hsts_max_age,
            hsts_include_subdomains=settings.hsts_include_subdomains,
            hsts_preload=settings.hsts_preload,
            content_security_policy=settings.content_security_policy,
            extra=settings.extra,
            remove=settings.remove,
            no_store_authenticated=settings.no_store_authenticated,
            catch_errors=settings.catch_errors,
            routes=overrides,
            problem_type_base=policy.problem_type_base,
        )

    def internal_error(
        self, environ: WSGIEnvironment, add_headers: StartResponse
    ) -> Iterable[bytes]:
        """Log the app's exception and send a 500 problem with the profile's headers.

        Call it only while the exception is being handled: it reads
        ``sys.exc_info()``.
        """
        logger.error(
            "unhandled exception in the app for %s %s",
            environ.get("REQUEST_METHOD", "")[:20],
            environ.get("PATH_INFO", "")[:256],
            exc_info=True,
        )
        # With exc_info, a server that already sent the app's headers
        # re-raises instead (PEP 3333, "The start_response() Callable").
        add_headers(
            self.internal_error_problem.status_line,
            list(self.internal_error_problem.headers),
            sys.exc_info(),
        )
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [self.internal_error_problem.body]
