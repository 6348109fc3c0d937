"""Extract a bearer token from the request headers, strictly.

RFC 6750, section 2.1 fixes the grammar::

    credentials = "Bearer" 1*SP b64token
    b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="

The scheme is case-insensitive (RFC 9110, section 11.1). Anything after the
token, a second credential in the same header (``Basic x, Bearer t``, which
is also what two ``Authorization`` headers become once joined) or a scheme
with no token is a malformed request (400), so no token is guessed from a
header that a proxy or client garbled. A header with only another scheme
(``Basic``, ``Token``) carries no bearer credentials (401 without an error
code).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["BearerResult", "parse_authorization", "parse_cookie"]

BearerResult = tuple[Literal["token", "absent", "malformed"], str]

# The b64token characters other than the trailing "=" padding.
_TOKEN_CHARACTERS = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
)
# "bearer" as an auth-scheme: at the start of the value or after a comma.
_BEARER_SCHEME = re.compile(r"(?:^|,)[ \t]*bearer(?:[ \t]|,|$)", re.IGNORECASE)

_ABSENT: BearerResult = ("absent", "")


def parse_authorization(value: str) -> BearerResult:
    """Classify an ``Authorization`` header value.

    Returns ``("token", token)``, ``("absent", "")`` when the header holds
    another scheme only, or ``("malformed", reason)``.
    """
    if value[:7].lower() == "bearer ":
        token = value[7:].lstrip(" ")
        core = token.rstrip("=")
        # bytes.translate deletes every valid character in one C loop;
        # anything left over breaks the grammar.
        if (
            core
            and core.isascii()
            and not core.encode().translate(None, _TOKEN_CHARACTERS)
        ):
            return ("token", token)
    if _BEARER_SCHEME.search(value) is None:
        return _ABSENT
    if "," in value:
        return ("malformed", "multiple-credentials")
    return ("malformed", "malformed-bearer")


def parse_cookie(header: str, name: str) -> str | None:
    """Return the value of cookie ``name`` in a ``Cookie`` header, or ``None``.

    Two cookies with the same name make the result ambiguous, so they count
    as none: a sibling subdomain may set a cookie that shadows ours.
    """
    found: str | None = None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            if found is not None:
                return None
            found = value.strip().strip('"')
    return found
