"""RFC 9457 problem details: the body of every rejection the shield sends.

Each problem has a stable ``type`` URI made of a base and a slug
(``urn:wsgishield:problem:rate-limited``), a ``title`` that does not change
between occurrences, the ``status`` and an optional ``detail`` for this
occurrence. The default base is a URN because a ``type`` that looks like a
web address invites clients to fetch it (RFC 9457, section 3.1.1). A detail
never echoes large or secret client input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPE_BASE",
    "Problem",
    "status_line",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:wsgishield:problem:"

Headers = Sequence[tuple[str, str]]


class _Body(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str | None = None


_encode = msgspec.json.Encoder().encode


def status_line(status: int) -> str:
    """Return the WSGI status line for ``status``, like ``"429 Too Many Requests"``."""
    return f"{status} {HTTPStatus(status).phrase}"


class Problem:
    """A problem response whose body and headers are encoded once.

    Build one per kind of rejection in a layer's constructor and call it on
    the request path, which then only concatenates header lists.
    """

    __slots__ = ("body", "headers", "slug", "status", "status_line", "title", "type")

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        headers: Headers = (),
        type_base: str = PROBLEM_TYPE_BASE,
    ) -> None:
        self.status = status
        self.slug = slug
        self.title = title
        self.type = type_base + slug
        self.status_line = status_line(status)
        self.body = _encode(_Body(self.type, title, status, detail))
        self.headers: list[tuple[str, str]] = [
            ("Content-Type", PROBLEM_CONTENT_TYPE),
            ("Content-Length", str(len(self.body))),
            # A rejection is about this request only, so no cache may keep it.
            ("Cache-Control", "no-store"),
            *headers,
        ]

    def with_detail(self, detail: str, headers: Headers = ()) -> Problem:
        """Return a copy of this problem with ``detail`` and extra headers."""
        extra = self.headers[3:]
        return Problem(
            self.status,
            self.slug,
            self.title,
            detail,
            [*extra, *headers],
            self.type[: len(self.type) - len(self.slug)],
        )

    def __call__(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        headers: Headers = (),
    ) -> Iterable[bytes]:
        """Send this problem as the WSGI response, adding ``headers``."""
        start_response(self.status_line, [*self.headers, *headers])
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [self.body]
