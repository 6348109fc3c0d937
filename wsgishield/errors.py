"""Exceptions raised by wsgishield.

Configuration mistakes raise :class:`ConfigurationError` at start-up, never
an ``assert`` (which ``python -O`` removes). Failures of a shared store are
wrapped in :class:`StoreError` with ``raise ... from exc``, so a layer's
failure policy catches one type whatever the backend.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigurationError", "StoreError", "WsgiShieldError"]


class WsgiShieldError(Exception):
    """Base class of every exception that wsgishield raises."""


class ConfigurationError(WsgiShieldError, ValueError):
    """An invalid policy or option, found before the first request.

    ``key`` is the dotted path of the offending setting (``client.hops``,
    ``routes[2].path``) and ``value`` the value that was rejected.
    """

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"invalid value for {key}: {value!r}: {reason}")


class StoreError(WsgiShieldError):
    """A shared store (Redis) failed, timed out or returned garbage."""
