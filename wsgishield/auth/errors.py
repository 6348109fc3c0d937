"""Why a token or a key lookup failed, as data the middleware maps to responses."""

from __future__ import annotations

from ..errors import WsgiShieldError

__all__ = ["KeysUnavailable", "TokenError"]


class TokenError(WsgiShieldError):
    """A token was rejected; ``reason`` is a short code from a fixed set.

    The message and ``reason`` never contain the token or its claims, so
    both are safe to log and to send to the client.
    """

    def __init__(self, reason: str, description: str) -> None:
        self.reason = reason
        self.description = description
        super().__init__(f"{reason}: {description}")


class KeysUnavailable(WsgiShieldError):
    """No usable verification key: the key set could not be fetched.

    The request is answered with 503 and ``Retry-After``, not 401, because
    the token may well be valid.
    """

    def __init__(self, issuer: str, retry_after: int) -> None:
        self.issuer = issuer
        self.retry_after = retry_after
        super().__init__(
            f"no usable key for issuer {issuer!r}; retry in {retry_after} s"
        )
