"""One WSGI middleware per concern; :class:`wsgishield.Shield` composes them.

Every middleware takes the wrapped application first and keyword-only
options after it, and also offers ``from_policy(app, policy, routes)``, which
returns the middleware configured from a :class:`~wsgishield.policy.Policy`,
or ``None`` when the policy leaves that layer off.
"""

from __future__ import annotations

from .access import AccessMiddleware
from .auth import AuthMiddleware
from .cache import CacheMiddleware
from .client import ClientAddressMiddleware
from .headers import SecurityHeadersMiddleware
from .metrics import MetricsMiddleware
from .ratelimit import RateLimitMiddleware
from .request import RequestLimitsMiddleware
from .routes import RouteMiddleware

__all__ = [
    "AccessMiddleware",
    "AuthMiddleware",
    "CacheMiddleware",
    "ClientAddressMiddleware",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "RequestLimitsMiddleware",
    "RouteMiddleware",
    "SecurityHeadersMiddleware",
]
