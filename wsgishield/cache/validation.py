"""Validation: when a stored response satisfies a conditional request (RFC 9110).

A cache that stores a response with an ``ETag`` or ``Last-Modified`` sends
``304 Not Modified`` to a request whose ``If-None-Match`` or
``If-Modified-Since`` shows that the client already has it.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from .freshness import parse_list

__all__ = ["NOT_MODIFIED_HEADERS", "etag_matches", "not_modified_since"]

#: Headers a 304 carries over from the stored response (RFC 9110, 15.4.5).
NOT_MODIFIED_HEADERS = frozenset(
    {
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
        "last-modified",
    }
)


def etag_matches(header: str, etag: str) -> bool:
    """Compare ``If-None-Match`` weakly with ``etag`` (RFC 9110, 13.1.2)."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(item.removeprefix("W/") == opaque for item in parse_list(header))


def not_modified_since(header: str, last_modified: str) -> bool:
    """Tell whether ``Last-Modified`` is at or before ``If-Modified-Since``.

    An invalid date on either side means "modified", so the full response
    is sent.
    """
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
