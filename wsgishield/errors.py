"""Exceptions raised by wsgishield.

Configuration mistakes raise :class:`ConfigurationError` at start-up, never
an ``assert`` (which ``python -O`` removes). Failures of a shared store are
wrapped in :class:`StoreError` with ``raise ... from exc``, so a layer's
failure policy catches one type whatever the backend.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "STORE_ERROR_KINDS",
    "ConfigurationError",
    "StoreError",
    "WsgiShieldError",
    "redact_credentials",
]


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
        shown = redact_credentials(repr(value))
        super().__init__(
            f"invalid value for {key}: {shown}: {redact_credentials(reason)}"
        )


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")


def redact_credentials(text: str) -> str:
    """Replace the ``user:password@`` part of every URL in ``text`` by ``***@``."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


#: Values of :attr:`StoreError.kind`, the ``error`` label of
#: ``wsgishield_store_errors_total``.
STORE_ERROR_KINDS = (
    "breaker-open",
    "connection",
    "timeout",
    "readonly",
    "reply",
    "error",
)


class StoreError(WsgiShieldError):
    """A shared store (Redis) failed, timed out or returned garbage.

    ``kind`` is one of :data:`STORE_ERROR_KINDS`. Unless the raiser names
    it, it comes from the wrapped exception (``raise ... from exc``): a
    timeout or a connection failure, else ``error``.
    """

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self._kind = kind

    @property
    def kind(self) -> str:
        if self._kind is not None:
            return self._kind
        # By class name as well, because redis-py's TimeoutError and
        # ConnectionError do not derive from the built-in ones.
        for cause in type(self.__cause__).__mro__:
            if cause is TimeoutError or cause.__name__ == "TimeoutError":
                return "timeout"
            if cause is ConnectionError or cause.__name__ == "ConnectionError":
                return "connection"
        return "error"
