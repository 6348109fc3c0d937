"""Request limits: methods, target and header sizes, body size and encoding.

The rules each limit follows:

- **Body size** applies to a ``Content-Length`` body before a byte is read,
  and to a chunked body while it is read: the byte after the limit raises
  :class:`BodyTooLarge` (413), so an oversize body is never cut to the limit
  and passed on. A body that ends before its ``Content-Length`` raises
  :class:`BodyIncomplete` (400) instead of reaching the app short. Memory
  stays within the limit plus one read of :data:`READ_SIZE` bytes.
- **Chunked bodies** are read only when the server sets
  ``wsgi.input_terminated``, which promises that ``wsgi.input`` ends at the
  end of the body (Gunicorn, uWSGI with ``--chunked-input``...). Without it a
  read until end of input may block or return the raw chunk framing, so the
  request gets 411 Length Required.
- **Compressed bodies** (``Content-Encoding: gzip`` or ``deflate``) are
  inflated only where enabled. The inflated size counts against the same
  body limit and against a maximum ratio, so a small bomb cannot expand
  into memory.

The middleware that applies these rules is
:class:`wsgishield.middleware.request.RequestLimitsMiddleware`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import NoReturn, Protocol

from ._fast._requestgate_common import (
    CONTENT_CODINGS,
    content_coding,
    is_json,
    media_type,
    parse_content_length,
    request_target_length,
)
from ._fast.headerscan import header_totals
from .errors import WsgiShieldError

__all__ = [
    "READ_SIZE",
    "BodyIncomplete",
    "BodyTooLarge",
    "InvalidBody",
    "LimitedInput",
    "RequestBodyError",
    "content_coding",
    "header_totals",
    "inflate",
    "is_json",
    "media_type",
    "parse_content_length",
    "read_body",
    "request_target_length",
]

# One read from the server's input stream. It bounds the memory used above
# the body limit, and reads a 1 MiB body in 16 calls.
READ_SIZE = 65536


class InputStream(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...


class RequestBodyError(WsgiShieldError, OSError):
    """Reading the request body failed a limit; ``status`` is the HTTP status to send.

    It is an ``OSError`` because apps handle a failed read of ``wsgi.input``
    as an I/O error, never as data.
    """

    status = 400
    reason = "invalid-body"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BodyTooLarge(RequestBodyError):
    """The body, on the wire or inflated, is larger than the limit."""

    status = 413
    reason = "body-too-large"


class BodyIncomplete(RequestBodyError):
    """The body ended before the ``Content-Length`` the client sent."""

    status = 400
    reason = "body-incomplete"


class InvalidBody(RequestBodyError):
    """The body is corrupt: a bad compressed stream, trailing data or framing."""

    status = 400
    reason = "invalid-encoding"


def unreadable_body(exc: Exception) -> InvalidBody:
    """Return the 400 error for an exception the server's input raised."""
    error = InvalidBody("The body could not be read: its framing is invalid.")
    error.__cause__ = exc
    return error


class LimitedInput:
    """A ``wsgi.input`` that enforces the body limit while the app reads.

    With a known ``length`` (from ``Content-Length``, already checked against
    the limit) it never reads past the body and raises
    :class:`BodyIncomplete` when the input ends early. Without one (a chunked
    body on a server that terminates the input) it raises
    :class:`BodyTooLarge` as soon as one byte past ``limit`` arrives. The
    first error is kept in ``error``, so the middleware can still send it when
    the app caught the exception.
    """

    __slots__ = ("_consumed", "_length", "_limit", "_stream", "error")

    def __init__(
        self, stream: InputStream, limit: int, length: int | None = None
    ) -> None:
        self._stream = stream
        self._limit = limit
        self._length = length
        self._consumed = 0
        self.error: RequestBodyError | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        """Read up to ``size`` bytes, or the whole remaining body when negative."""
        if size is None or size < 0:
            return self._read_all()
        allowed = self._allowed(size)
        if allowed == 0:
            return b""
        return self._account(self._read_input(self._stream.read, allowed), allowed)

    def readline(self, size: int | None = -1, /) -> bytes:
        """Read one line, or up to ``size`` bytes of it."""
        allowed = self._allowed(READ_SIZE if size is None or size < 0 else size)
        if allowed == 0:
            return b""
        return self._account(self._read_input(self._stream.readline, allowed), allowed)

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        """Read lines until the body ends, or ``hint`` bytes have been read."""
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def _allowed(self, size: int) -> int:
        """Clamp a read to the rest of a sized body, or to one byte past the limit."""
        if self._length is not None:
            return min(size, self._length - self._consumed)
        return min(size, self._limit + 1 - self._consumed)

    def _account(self, data: bytes, requested: int) -> bytes:
        if len(data) > requested:
            # PEP 3333 allows no longer read. Counting one would leave a
            # negative remainder that the loops here never reach zero from.
            data = data[:requested]
        self._consumed += len(data)
        if self._length is None:
            if self._consumed > self._limit:
                self._fail(
                    BodyTooLarge(f"The body is larger than {self._limit} bytes.")
                )
        elif not data and requested > 0:
            self._fail(
                BodyIncomplete(
                    f"The body ended after {self._consumed} of the "
                    f"{self._length} bytes in Content-Length."
                )
            )
        return data

    def _read_all(self) -> bytes:
        chunks = []
        while True:
            allowed = self._allowed(READ_SIZE)
            if allowed == 0:
                break
            chunk = self._account(self._read_input(self._stream.read, allowed), allowed)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_input(self, read: Callable[[int], bytes], size: int) -> bytes:
        """Read from the server's input, turning its errors into ``InvalidBody``.

        A server raises its own exception types on a malformed body: Gunicorn
        27, for one, raises ``InvalidChunkSize``, which is no ``OSError``, on a
        bad chunk size line. That is the client's fault, so it gets a 400.
        """
        try:
            return read(size)
        except RequestBodyError:
            raise
        except Exception as exc:
            self._fail(unreadable_body(exc))

    def _fail(self, error: RequestBodyError) -> NoReturn:
        if self.error is None:
            self.error = error
        raise self.error


def read_body(
    stream: InputStream,
    limit: int,
    length: int | None = None,
    start: bytes | None = None,
) -> bytes:
    """Read a whole body within ``limit``; see :class:`LimitedInput` for the errors.

    ``start`` is what a first ``read(length)`` of a sized body already
    returned, if the caller made that read.
    """
    if length is not None:
        # The usual case, one read of a sized body within the limit.
        data = stream.read(length) if start is None else start
        if len(data) >= length:
            # An input that returns more than requested breaks PEP 3333, and
            # the bytes past Content-Length are not this request's body.
            return data[:length]
        rest = LimitedInput(stream, limit, length - len(data))
        try:
            return data + rest.read()
        except BodyIncomplete:
            raise BodyIncomplete(
                f"The body ended after {len(data) + rest._consumed} of the "
                f"{length} bytes in Content-Length."
            ) from None
    return LimitedInput(stream, limit, length).read()


def inflate(body: bytes, coding: str, limit: int, max_ratio: int) -> bytes:
    """Inflate a ``gzip`` or ``deflate`` body, stopping one byte past the cap.

    The cap is ``limit`` or ``max_ratio`` times the compressed size,
    whichever is smaller; past it the result is :class:`BodyTooLarge` and no
    more is inflated. A corrupt stream, a truncated one or data after its end
    is :class:`InvalidBody`.
    """
    cap = min(limit, max_ratio * len(body))
    inflater = zlib.decompressobj(CONTENT_CODINGS[coding])
    try:
        data = inflater.decompress(body, cap + 1)
    except zlib.error as exc:
        raise InvalidBody(f"The {coding} body is corrupt.") from exc
    if len(data) > cap:
        if cap < limit:
            raise BodyTooLarge(
                f"The body inflates to more than {max_ratio} times its compressed size."
            )
        raise BodyTooLarge(f"The body inflates to more than {limit} bytes.")
    if not inflater.eof or inflater.unused_data:
        raise InvalidBody(f"The {coding} body is truncated or has trailing data.")
    return data
