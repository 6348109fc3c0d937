"""Authentication middleware: verify the caller's JWT and enforce route rules.

For every route whose rule has an ``auth`` section, the middleware finds the
token (``Authorization: Bearer``, a cookie with a CSRF double-submit check
when enabled, or the query string where the route opts in), verifies it with
:class:`~wsgishield.auth.verifier.Verifier`, checks the route's roles, scopes
and claim predicates, and stores the
:class:`~wsgishield.auth.verifier.Identity` under ``wsgishield.identity``.

Rejections follow RFC 6750, section 3, as ``application/problem+json``:

======================================  ======  ==============================
case                                    status  ``WWW-Authenticate``
======================================  ======  ==============================
no bearer credentials                   401     ``Bearer realm="api"``
malformed credentials                   400     ``error="invalid_request"``
bad, expired, revoked or foreign token  401     ``error="invalid_token"``
missing role, scope or claim            403     ``error="insufficient_scope"``
no usable key (JWKS outage)             503     none; ``Retry-After``
======================================  ======  ==============================

A challenge never echoes the token or its claims, and a log event carries a
short one-way fingerprint of the token, never the token.

A CORS preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) passes to the app unauthenticated, because
browsers never send credentials on it; a plain ``OPTIONS`` does not.

.. warning::

   Query-string tokens end up in proxy and server access logs. The parameter
   is removed from ``QUERY_STRING`` before the app runs, but Gunicorn and
   Nginx log the raw request line: enable ``allow_query_token`` only on the
   routes that need it, and drop the query from those access logs.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus

from .. import context, events, metrics
from ..auth.authorization import Requirement
from ..auth.credentials import parse_authorization, parse_cookie
from ..auth.errors import KeysUnavailable, TokenError
from ..auth.revocation import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
)
from ..auth.verifier import Identity, Profile, Verifier, claim_at, fingerprint
from ..errors import ConfigurationError
from ..problem import PROBLEM_TYPE_BASE, Problem

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["AuthMiddleware", "EndpointRules"]

#: Methods a browser may send cross-site without a CSRF check (RFC 9110,
#: section 9.2.1).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_MALFORMED_DETAILS: Mapping[str, str] = {
    "malformed-bearer": "The Authorization header is not Bearer followed by one token.",
    "multiple-credentials": "The Authorization header has more than one credential.",
    "multiple-tokens": "The request carries more than one token, or an empty one.",
    "too-large": "The token is too large.",
}


# Reasons a token is rejected for (TokenError.reason), whose series in
# wsgishield_jwt_failures_total are made at start; the malformed-credential
# reasons above and csrf-failed are counted there too.
_TOKEN_REASONS = (
    "algorithm-not-allowed",
    "bad-signature",
    "expired",
    "iat",
    "invalid-claim",
    "issued-in-future",
    "lifetime-too-long",
    "malformed",
    "missing-claim",
    "nbf",
    "not-yet-valid",
    "revoked",
    "too-large",
    "too-old",
    "unknown-key",
    "unsupported-crit",
    "wrong-audience",
    "wrong-issuer",
    "wrong-type",
)


class EndpointRules(Protocol):
    """Resolve the app's own endpoint for a request to its requirement."""

    def __call__(self, environ: WSGIEnvironment) -> Requirement | None: ...


class AuthMiddleware:
    """Verify bearer tokens and enforce per-route requirements."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        verifier: Verifier,
        requirements: Mapping[str, Requirement] = {},
        routes: RouteTable | None = None,
        realm: str = "api",
        header: bool = True,
        cookie: str | None = None,
        csrf: bool = True,
        csrf_cookie: str = "csrf_token",
        csrf_header: str = "X-CSRF-Token",
        query_parameter: str = "access_token",
        deny_uncovered: bool = False,
        identity_headers: Mapping[str, str] = {},
        endpoint_rules: EndpointRules | None = None,
        problem_type_base: str = PROBLEM_TYPE_BASE,
        registry: metrics.MetricsRegistry | None = None,
    ) -> None:
        if '"' in realm or "\\" in realm:
            raise ConfigurationError(
                "auth.realm", realm, "quotes and backslashes are not allowed"
            )
        self.app = app
        self.verifier = verifier
        self._verified = verifier.cache
        self.revocation: RevocationStore | None = verifier.revocation
        self.requirements = dict(requirements)
        self._route_rules = {
            rule_id: _Rules((requirement,))
            for rule_id, requirement in requirements.items()
        }
        self._combinations: dict[tuple[str, str], _Rules] = {}
        # "Bearer " and a little whitespace around a maximum-size token.
        self.max_header_length = verifier.max_token_bytes + 64
        self.routes = routes
        self.header = header
        self.cookie = cookie
        self.csrf = csrf
        self.csrf_cookie = csrf_cookie
        self.csrf_environ_key = "HTTP_" + csrf_header.upper().replace("-", "_")
        self.query_parameter = query_parameter
        self.deny_uncovered = deny_uncovered
        self.endpoint_rules = endpoint_rules
        self.identity_headers = {
            "HTTP_" + name.upper().replace("-", "_"): tuple(path.split("."))
            for name, path in identity_headers.items()
        }

        self.realm = realm
        self.problem_type_base = problem_type_base
        challenge = f'Bearer realm="{realm}"'
        self._challenge = challenge
        self._unauthorized = Problem(
            401,
            "unauthorized",
            "Authentication required",
            "The request carries no bearer token.",
            [("WWW-Authenticate", challenge)],
            problem_type_base,
        )
        self._uncovered = Problem(
            403,
            "forbidden",
            "Forbidden",
            "No rule allows this route.",
            (),
            problem_type_base,
        )
        self._csrf_failed = Problem(
            403,
            "csrf-failed",
            "CSRF check failed",
            "The CSRF header does not match the CSRF cookie.",
            (),
            problem_type_base,
        )
        self._malformed = {
            reason: self._challenge_problem(
                400,
                "invalid-request",
                "Malformed credentials",
                "invalid_request",
                detail,
            )
            for reason, detail in _MALFORMED_DETAILS.items()
        }
        # Built on first use per reason or per (rule, reason): both sets are
        # fixed by the code and the policy, not by clients.
        self._invalid_token: dict[tuple[str, str], Problem] = {}
        self._forbidden: dict[tuple[str, str], Problem] = {}
        self._unavailable: dict[int, Problem] = {}
        # Counting is on when a registry is given; from_policy gives one
        # when the policy has a [metrics] section.
        self._failures: metrics.Counts | None = None
        if registry is not None:
            self._failures = metrics.Counts(
                registry.jwt_failures,
                [*_TOKEN_REASONS, *_MALFORMED_DETAILS, "csrf-failed"],
            )

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> AuthMiddleware | None:
        settings = policy.auth
        if settings is None:
            for index, rule in enumerate(policy.routes):
                if rule.auth is not None:
                    raise ConfigurationError(
                        f"routes[{index}].auth",
                        rule.id,
                        "route auth needs an auth section",
                    )
            return None
        if not settings.issuers:
            raise ConfigurationError(
                "auth.issuers", {}, "at least one issuer is required"
            )

        registry = metrics.REGISTRY if policy.metrics is not None else None
        profiles = [
            Profile.from_policy(name, issuer, registry=registry)
            for name, issuer in settings.issuers.items()
        ]
        requirements: dict[str, Requirement] = {}
        for index, rule in enumerate(policy.routes):
            if rule.auth is None:
                continue
            for name in rule.auth.issuers:
                if name not in settings.issuers:
                    raise ConfigurationError(
                        f"routes[{index}].auth.issuers",
                        name,
                        "no issuer profile has this name",
                    )
            requirements[rule.id] = Requirement.from_policy(rule.id, rule.auth)

        verifier = Verifier(
            profiles,
            max_token_bytes=settings.max_token_bytes,
            cache_size=settings.cache_size,
            revocation=_revocation_store(policy, profiles),
        )
        tokens = settings.tokens
        return cls(
            app,
            verifier=verifier,
            requirements=requirements,
            routes=routes,
            realm=settings.realm,
            header=tokens.header,
            cookie=tokens.cookie,
            csrf=tokens.csrf,
            csrf_cookie=tokens.csrf_cookie,
            csrf_header=tokens.csrf_header,
            query_parameter=tokens.query_parameter,
            deny_uncovered=settings.deny_uncovered,
            identity_headers=settings.identity_headers,
            problem_type_base=policy.problem_type_base,
            registry=registry,
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if self.identity_headers:
            for key in self.identity_headers:
                environ.pop(key, None)
        environ[_IDENTITY] = None

        route = environ.get(_ROUTE, _UNMATCHED)
        if route is _UNMATCHED or self.endpoint_rules is not None:
            rules = self._rules_for(environ, route)
        else:
            rules = self._route_rules.get(route.id) if route is not None else None
        if rules is None:
            if self.deny_uncovered:
                return self._reject(
                    environ, start_response, self._uncovered, "uncovered-route", None
                )
            return self.app(environ, start_response)
        rule = rules.first
        if rule is None:
            return self.app(environ, start_response)

        if (
            environ.get("REQUEST_METHOD") == "OPTIONS"
            and "HTTP_ORIGIN" in environ
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        ):
            # A CORS preflight never carries credentials (Fetch standard,
            # CORS-preflight request), so the app's CORS handler must
            # respond to it.
            return self.app(environ, start_response)

        # A header token already in the verified cache passed the strict
        # grammar, so the common case skips parsing.
        header = environ.get("HTTP_AUTHORIZATION", "")
        # The length guard keeps a huge header from being copied and hashed.
        token = header[7:] if len(header) <= self.max_header_length else ""
        if (
            not header.startswith("Bearer ")
            or token not in self._verified
            or rules.allow_query_token
            or not self.header
        ):
            kind, token = self._find_token(environ, rules.allow_query_token)
            if kind != "token":
                return self._reject_credentials(
                    environ, start_response, kind, token, rules
                )

        try:
            identity = self.verifier.verify(token)
        except TokenError as exc:
            if self._failures is not None:
                self._failures.inc(exc.reason)
            problem = self._invalid_token_problem(exc.reason, exc.description)
            return self._reject(
                environ, start_response, problem, exc.reason, rule, token
            )
        except KeysUnavailable as exc:
            return self._unavailable_response(environ, start_response, exc, rule, token)

        for requirement in rules.requirements:
            reason = requirement.check(identity)
            if reason is not None:
                problem = self._authorization_problem(requirement, reason)
                return self._reject(
                    environ,
                    start_response,
                    problem,
                    reason,
                    requirement,
                    token,
                    identity,
                )

        environ[_IDENTITY] = identity
        if self.identity_headers:
            self._set_identity_headers(environ, identity)
        return self.app(environ, start_response)

    # -- finding the rules and the token ------------------------------------

    def _rules_for(self, environ: WSGIEnvironment, route: Any) -> _Rules | None:
        """Return the rules that apply, or ``None`` when no rule covers the request.

        ``route`` is the route layer's match, or ``_UNMATCHED`` when this
        middleware runs without it and matches the path itself.
        """
        if route is _UNMATCHED:
            route = None
            if self.routes is not None:
                route = self.routes.match(
                    environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
                )
        rules = self._route_rules.get(route.id) if route is not None else None
        if self.endpoint_rules is None:
            return rules
        endpoint = self.endpoint_rules(environ)
        if endpoint is None:
            return rules
        return self._combined(rules, endpoint)

    def _combined(self, rules: _Rules | None, endpoint: Requirement) -> _Rules:
        key = (rules.key if rules is not None else "", endpoint.rule_id)
        found = self._combinations.get(key)
        if found is None:
            found = _Rules((*(rules.all if rules is not None else ()), endpoint))
            # Keys come from policy and view rule ids, so the table stays small.
            self._combinations[key] = found
        return found

    def _reject_credentials(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        kind: str,
        detail: str,
        rules: _Rules,
    ) -> Iterable[bytes]:
        rule = rules.first
        if kind == "absent":
            if rules.optional:
                return self.app(environ, start_response)
            return self._reject(
                environ, start_response, self._unauthorized, "missing-token", rule
            )
        if self._failures is not None:
            self._failures.inc("csrf-failed" if kind == "csrf" else detail)
        if kind == "csrf":
            return self._reject(
                environ, start_response, self._csrf_failed, "csrf-failed", rule
            )
        problem = self._malformed[detail]
        return self._reject(environ, start_response, problem, detail, rule)

    def _find_token(
        self, environ: WSGIEnvironment, allow_query_token: bool
    ) -> tuple[str, str]:
        """Return ``(kind, value)``: a token, ``absent``, ``malformed`` with the
        reason, or ``csrf`` for a cookie token that failed the CSRF check."""
        kind, token = "absent", ""
        if self.header:
            value = environ.get("HTTP_AUTHORIZATION")
            if value is not None:
                if len(value) > self.max_header_length:
                    return ("malformed", "too-large")
                kind, token = parse_authorization(value)
                if kind == "malformed":
                    return (kind, token)

        if allow_query_token:
            found = self._take_query_token(environ)
            if found is not None:
                if kind == "token" or found == "":
                    # RFC 6750, section 2: a client must not use more than
                    # one method to send the token.
                    return ("malformed", "multiple-tokens")
                return ("token", found)

        if kind == "absent" and self.cookie is not None:
            header = environ.get("HTTP_COOKIE")
            value = parse_cookie(header, self.cookie) if header else None
            if value:
                # Browsers attach cookies to cross-site requests, so an
                # unsafe method must prove it can read the CSRF cookie.
                unsafe = environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS
                if (
                    self.csrf
                    and unsafe
                    and not self._csrf_matches(environ, header or "")
                ):
                    return ("csrf", "")
                return ("token", value)
        return (kind, token)

    def _take_query_token(self, environ: WSGIEnvironment) -> str | None:
        """Remove the token parameter from the query string and return it.

        Returns ``""`` when the parameter occurs more than once.
        """
        query = environ.get("QUERY_STRING", "")
        if not query:
            return None
        # Names are compared decoded, so access%5Ftoken is caught too; the
        # other parameters stay byte for byte as the client sent them.
        kept: list[str] = []
        tokens: list[str] = []
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if unquote_plus(name) == self.query_parameter:
                tokens.append(unquote_plus(value))
            else:
                kept.append(part)
        if not tokens:
            return None
        remaining = "&".join(kept)
        environ["QUERY_STRING"] = remaining
        for key in ("RAW_URI", "REQUEST_URI"):
            if key in environ:
                path = environ[key].split("?", 1)[0]
                environ[key] = f"{path}?{remaining}" if remaining else path
        return tokens[0] if len(tokens) == 1 else ""

    def _csrf_matches(self, environ: WSGIEnvironment, cookie_header: str) -> bool:
        expected = parse_cookie(cookie_header, self.csrf_cookie)
        sent = environ.get(self.csrf_environ_key)
        if not expected or not sent:
            return False
        return hmac.compare_digest(expected.encode(), sent.encode())

    def _set_identity_headers(
        self, environ: WSGIEnvironment, identity: Identity
    ) -> None:
        for key, path in self.identity_headers.items():
            value = claim_at(identity.claims, path)
            if type(value) is list:
                value = ",".join(str(item) for item in value)
            if value is None or type(value) in (dict, bool):
                continue
            text = str(value)
            # A claim must not smuggle a second header into the environ.
            if text.isprintable():
                environ[key] = text

    # -- responses ------------------------------------------------------------

    def _challenge_problem(
        self,
        status: int,
        slug: str,
        title: str,
        error: str,
        detail: str,
        scope: str = "",
    ) -> Problem:
        challenge = f'{self._challenge}, error="{error}", error_description="{detail}"'
        if scope:
            challenge += f', scope="{scope}"'
        return Problem(
            status,
            slug,
            title,
            detail,
            [("WWW-Authenticate", challenge)],
            self.problem_type_base,
        )

    def _invalid_token_problem(self, reason: str, description: str) -> Problem:
        # Descriptions come from a fixed set per reason (claim names from
        # the policy), so this table stays small.
        key = (reason, description)
        problem = self._invalid_token.get(key)
        if problem is None:
            problem = self._challenge_problem(
                401, "invalid-token", "Invalid token", "invalid_token", description
            )
            self._invalid_token[key] = problem
        return problem

    def _authorization_problem(self, requirement: Requirement, reason: str) -> Problem:
        key = (requirement.rule_id, reason)
        problem = self._forbidden.get(key)
        if problem is None:
            if reason == "issuer-not-accepted":
                problem = self._challenge_problem(
                    401,
                    "invalid-token",
                    "Invalid token",
                    "invalid_token",
                    "The token issuer is not accepted on this route.",
                )
            else:
                problem = self._challenge_problem(
                    403,
                    "insufficient-scope",
                    "Insufficient scope",
                    "insufficient_scope",
                    "The token lacks a role, scope or claim this route requires.",
                    requirement.required_scope(reason),
                )
            self._forbidden[key] = problem
        return problem

    def _unavailable_response(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        error: KeysUnavailable,
        rule: Requirement,
        token: str,
    ) -> Iterable[bytes]:
        problem = self._unavailable.get(error.retry_after)
        if problem is None:
            problem = Problem(
                503,
                "auth-unavailable",
                "Authentication unavailable",
                "The token signing keys cannot be fetched right now.",
                [("Retry-After", str(error.retry_after))],
                self.problem_type_base,
            )
            if len(self._unavailable) < 64:
                self._unavailable[error.retry_after] = problem
        context.record_decision(
            environ, "auth", "unavailable", "keys-unavailable", rule.rule_id
        )
        self._emit(
            environ,
            "auth-unavailable",
            "keys-unavailable",
            rule,
            token,
            None,
            logging.ERROR,
        )
        return problem(environ, start_response)

    def _reject(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        problem: Problem,
        reason: str,
        rule: Requirement | None,
        token: str = "",
        identity: Identity | None = None,
    ) -> Iterable[bytes]:
        rule_id = rule.rule_id if rule is not None else None
        context.record_decision(environ, "auth", "auth-failed", reason, rule_id)
        self._emit(
            environ, "auth-failed", reason, rule, token, identity, logging.WARNING
        )
        return problem(environ, start_response)

    @staticmethod
    def _emit(
        environ: WSGIEnvironment,
        action: str,
        reason: str,
        rule: Requirement | None,
        token: str,
        identity: Identity | None,
        level: int,
    ) -> None:
        client = environ.get(context.CLIENT_IP) or environ.get("REMOTE_ADDR", "")
        fields: dict[str, Any] = {
            "event.outcome": "failure",
            "event.reason": reason,
            "client.ip": client,
            "http.request.method": environ.get("REQUEST_METHOD", ""),
            # The path only: a query string may hold a token.
            "url.path": environ.get("PATH_INFO", ""),
            "rule.id": rule.rule_id if rule is not None else None,
        }
        if token:
            fields["labels.token_fingerprint"] = fingerprint(token)
        if identity is not None:
            fields["user.id"] = identity.subject
        events.emit("auth", action, fields, client=client, level=level)


_UNMATCHED = object()
# Module constants: the request path reads them without an attribute lookup.
_IDENTITY = context.IDENTITY
_ROUTE = context.ROUTE


class _Rules:
    """The requirements that apply to one request, with their shared flags."""

    __slots__ = ("all", "allow_query_token", "first", "key", "optional", "requirements")

    def __init__(self, requirements: tuple[Requirement, ...]) -> None:
        self.all = requirements
        #: The requirements to check; public ones demand nothing.
        self.requirements = tuple(item for item in requirements if not item.public)
        self.first = self.requirements[0] if self.requirements else None
        self.key = "+".join(item.rule_id for item in requirements)
        self.optional = all(item.optional for item in self.requirements)
        self.allow_query_token = bool(self.requirements) and all(
            item.allow_query_token for item in self.requirements
        )


def _revocation_store(policy: Policy, profiles: list[Profile]) -> RevocationStore:
    settings = policy.auth.revocation  # type: ignore[union-attr]
    # A subject cut-off matters as long as a token issued before it lives.
    retention = max(profile.max_lifetime + profile.leeway for profile in profiles)
    if settings.store == "redis":
        if policy.redis is None:
            raise ConfigurationError(
                "auth.revocation.store", "redis", "needs a redis section in the policy"
            )
        return RedisRevocationStore(
            policy.redis,
            sync_interval=settings.sync_interval_ms / 1000,
            max_entries=settings.max_entries,
            retention=retention,
        )
    return MemoryRevocationStore(max_entries=settings.max_entries, retention=retention)
