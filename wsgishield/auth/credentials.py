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

_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*)\Z")
# "bearer" as an auth-scheme: at the start of the value or after a comma.
_BEARER_SCHEME = re.compile(r"(?:^|,)[ \t]*bearer(?:[ \t]|,|$)", re.IGNORECASE)

_ABSENT: BearerResult = ("absent", "")


def parse_authorization(value: str) -> BearerResult:
    """Classify an ``Authorization`` header value.

    Returns ``("token", token)``, ``("absent", "")`` when the header holds
    another scheme only, or ``("malformed", reason)``.
    """
    match = _BEARER.match(value)
    if match is not None:
        return ("token", match.group(1))
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
