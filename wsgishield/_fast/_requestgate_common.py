"""Rules shared by the request gate kernel, its twin and ``request_limits``.

The functions here are the plain definitions of the request checks. The
twin calls them, the compiled kernel calls them where it has no faster path
of its own, and :mod:`wsgishield.request_limits` exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Outcomes of ``admit``. Below REJECTED the request goes on to the app:
# NO_BODY and BUFFERED as they are, STREAMED behind a limited wsgi.input, and
# READ_BODY once the middleware has read the body and ``check_body`` passed.
NO_BODY = 0
STREAMED = 1
BUFFERED = 2
READ_BODY = 3

REJECTED = 10
METHOD_NOT_ALLOWED = 10
URI_TOO_LONG = 11
HEADERS_TOO_LARGE = 12
CONFLICTING_FRAMING = 13
TRANSFER_CODING_NOT_CHUNKED = 14
LENGTH_REQUIRED = 15
INVALID_CONTENT_LENGTH = 16
BODY_TOO_LARGE = 17
UNSUPPORTED_MEDIA_TYPE = 18
UNSUPPORTED_CONTENT_CODING = 19
JSON_TOO_DEEP = 20
JSON_TOO_MANY_TOKENS = 21
DECODE_FAILED = 22
# The server's wsgi.input raised while the gate read a sized body.
INPUT_FAILED = 23

# Methods whose body a schema validates; a schema route's GET or DELETE
# carries no body to check.
SCHEMA_METHODS = frozenset({"POST", "PUT", "PATCH"})

# RFC 9112, section 6.3: Content-Length is 1*DIGIT. Longer than this is more
# than any limit the policy accepts, so it is rejected without int().
MAX_LENGTH_DIGITS = 15

# Content codings the inflater understands, with their zlib window bits:
# 16 + 15 reads the gzip wrapper, 15 the zlib wrapper of HTTP "deflate".
CONTENT_CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}

# Clients send a handful of distinct Content-Type values, so a memo saves
# parsing them. Longer or further values are parsed on every request.
MAX_MEMOISED_TYPES = 256
MAX_MEMOISED_TYPE = 128
_media_types: dict[str, str] = {}


def parse_content_length(text: str) -> int:
    """Parse a ``Content-Length`` value, raising ``ValueError`` unless it is 1*DIGIT.

    ``int()`` alone would accept ``+5``, `` 5``, ``5_0`` and ``-0``, and a
    list such as ``5, 5`` must be rejected too (RFC 9112, section 6.3).
    """
    # isdigit() is False for "", and True for non-ASCII digits such as "٣".
    if text.isdigit() and text.isascii() and len(text) <= MAX_LENGTH_DIGITS:
        return int(text)
    raise ValueError(f"invalid Content-Length {text[:32]!r}")


def media_type(content_type: str) -> str:
    """Return the lower-case ``type/subtype`` of a Content-Type value."""
    media = _media_types.get(content_type)
    if media is not None:
        return media
    media = content_type.partition(";")[0].strip().lower()
    if (
        len(content_type) <= MAX_MEMOISED_TYPE
        and len(_media_types) < MAX_MEMOISED_TYPES
    ):
        _media_types[content_type] = media
    return media


def is_json(media: str) -> bool:
    """Tell whether a media type is JSON: ``application/json`` or ``*/*+json``."""
    return media == "application/json" or media.endswith("+json")


def request_target_length(environ: Mapping[str, Any]) -> int:
    """Return the length of the request target as the client sent it.

    Gunicorn passes it as ``RAW_URI`` and uWSGI as ``REQUEST_URI``; other
    servers only give the decoded parts, which are never longer.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is not None:
        return len(raw)
    query = environ.get("QUERY_STRING", "")
    length = len(environ.get("SCRIPT_NAME", "")) + len(environ.get("PATH_INFO", ""))
    return length + len(query) + 1 if query else length


def content_coding(value: str) -> str | None:
    """Return the one supported coding named in ``Content-Encoding``, else ``None``.

    ``identity`` means no coding; a list of codings is not supported.
    """
    coding = value.strip().lower()
    if coding in CONTENT_CODINGS:
        return coding
    return None
