"""Flask helpers: authorization rules that follow the resolved endpoint.

Path rules in the policy match the normalized path. For a Flask app the
surest key is the endpoint Flask itself will dispatch to, so rules can also
be attached to views and resolved through ``app.url_map``::

    from wsgishield.flask import install, public, require

    @app.get("/admin/users")
    @require(roles_any=["admin"])
    def admin_users(): ...

    install(app, "shield.toml", endpoints={"admin.*": RouteAuth(roles_any=["admin"])})

A request is matched against the URL map after its path is normalized, so
``//admin/users`` or ``/x/../admin/users`` meets the rule of ``admin_users``.
Endpoint rules apply on top of the policy's path rules: both must pass.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from .auth.authorization import Requirement
from .errors import ConfigurationError
from .middleware.auth import AuthMiddleware
from .policy import ClaimRule, PolicySource, RouteAuth
from .routes import MAX_MEMOISED_PATH, normalize_path
from .shield import Shield

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from flask import Flask

__all__ = ["FlaskEndpointRules", "install", "public", "require"]

View = TypeVar("View", bound=Callable[..., Any])

#: Attribute that :func:`require` and :func:`public` set on a view.
VIEW_ATTRIBUTE = "__wsgishield_auth__"


def require(
    *,
    roles_any: Iterable[str] = (),
    roles_all: Iterable[str] = (),
    scopes: Iterable[str] = (),
    claims: Iterable[ClaimRule] = (),
    issuers: Iterable[str] = (),
    optional: bool = False,
    allow_query_token: bool = False,
) -> Callable[[View], View]:
    """Register what a view requires of the caller's token."""
    rule = RouteAuth(
        roles_any=list(roles_any),
        roles_all=list(roles_all),
        scopes=list(scopes),
        claims=list(claims),
        issuers=list(issuers),
        optional=optional,
        allow_query_token=allow_query_token,
    )

    def decorate(view: View) -> View:
        setattr(view, VIEW_ATTRIBUTE, rule)
        return view

    return decorate


def public(view: View) -> View:
    """Mark a view as open to anyone, which also covers it for ``deny_uncovered``."""
    setattr(view, VIEW_ATTRIBUTE, RouteAuth(public=True))
    return view


class FlaskEndpointRules:
    """Resolve a request to its Flask endpoint and that endpoint's requirement.

    ``endpoints`` maps endpoint names or ``fnmatch`` patterns (``admin.*``)
    to rules; a decorator on the view wins over a pattern.
    """

    def __init__(
        self,
        app: Flask,
        endpoints: Mapping[str, RouteAuth] = {},
        *,
        cache_size: int = 4096,
    ) -> None:
        self.app = app
        self.patterns = dict(endpoints)
        self.cache_size = cache_size
        self._by_endpoint: dict[str, Requirement | None] = {}
        self._view_count = -1
        self._memo: dict[tuple[str, str, str], Requirement | None] = {}

    def __call__(self, environ: WSGIEnvironment) -> Requirement | None:
        if len(self.app.view_functions) != self._view_count:
            # Views registered after install: compile again.
            self._compile()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        # With host or subdomain matching, the endpoint depends on the host.
        by_host = self.app.url_map.host_matching or self.app.subdomain_matching
        host = environ.get("HTTP_HOST", "") if by_host else ""
        key = (method, path, host)
        try:
            return self._memo[key]
        except KeyError:
            pass

        endpoint = self._endpoint(environ, method, normalize_path(path))
        found = self._by_endpoint.get(endpoint) if endpoint is not None else None
        if len(path) <= MAX_MEMOISED_PATH:
            if len(self._memo) >= self.cache_size:
                try:
                    del self._memo[next(iter(self._memo))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            self._memo[key] = found
        return found

    def _endpoint(self, environ: WSGIEnvironment, method: str, path: str) -> str | None:
        adapter = self.app.url_map.bind_to_environ(environ)
        for _ in range(2):
            try:
                endpoint, _arguments = adapter.match(path_info=path, method=method)
                return str(endpoint)
            except RequestRedirect as redirect:
                # Flask responds with a redirect (a missing trailing slash);
                # the rule of the target applies.
                path = normalize_path(urlsplit(redirect.new_url).path)
            except HTTPException:
                return None
        return None

    def _compile(self) -> None:
        compiled: dict[str, Requirement | None] = {}
        for endpoint, view in self.app.view_functions.items():
            rule = getattr(view, VIEW_ATTRIBUTE, None)
            if rule is None:
                for pattern, candidate in self.patterns.items():
                    if fnmatch.fnmatchcase(endpoint, pattern):
                        rule = candidate
                        break
            compiled[endpoint] = (
                Requirement.from_policy(f"endpoint:{endpoint}", rule)
                if rule is not None
                else None
            )
        self._by_endpoint = compiled
        self._memo = {}
        self._view_count = len(self.app.view_functions)


def install(
    app: Flask, policy: PolicySource = None, *, endpoints: Mapping[str, RouteAuth] = {}
) -> Shield:
    """Wrap ``app.wsgi_app`` in a :class:`Shield` whose auth layer follows endpoints.

    Raises :class:`ConfigurationError` when the policy has no ``auth``
    section, since endpoint rules would then never be enforced.
    """
    shield = Shield(app.wsgi_app, policy)
    layer = next(
        (item for item in shield.layers if isinstance(item, AuthMiddleware)), None
    )
    if layer is None:
        raise ConfigurationError("auth", None, "endpoint rules need an auth section")
    layer.endpoint_rules = FlaskEndpointRules(app, endpoints)
    app.wsgi_app = shield  # type: ignore[method-assign]
    return shield
