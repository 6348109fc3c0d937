"""Pure-Python twin of the request gate kernel (``_requestgate_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.

``admit`` runs every check that the request limits layer makes before the
app sees a request, in this order: the method, the length of the request
target, the number and size of the header fields, the body framing and
declared length, the media type and the content coding. A JSON body or a
schema route's body with a ``Content-Length`` and no content coding is then
read, pre-scanned and decoded here too. ``check_body`` does that last part
for a body the middleware read itself.
"""

from __future__ import annotations

import io
import operator
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import msgspec

from ..context import BODY, ROUTE, TRACE
from ._headerscan_py import header_totals
from ._jsonscan_common import OK, TOO_DEEP
from ._jsonscan_py import scan_json
from ._layercall_py import Hop
from ._requestgate_common import (
    BODY_TOO_LARGE,
    BUFFERED,
    CONFLICTING_FRAMING,
    DECODE_FAILED,
    HEADERS_TOO_LARGE,
    INPUT_FAILED,
    INVALID_CONTENT_LENGTH,
    JSON_TOO_DEEP,
    JSON_TOO_MANY_TOKENS,
    LENGTH_REQUIRED,
    MAX_MEMOISED_TYPE,
    MAX_MEMOISED_TYPES,
    METHOD_NOT_ALLOWED,
    NO_BODY,
    READ_BODY,
    SCHEMA_METHODS,
    STREAMED,
    TRANSFER_CODING_NOT_CHUNKED,
    UNSUPPORTED_CONTENT_CODING,
    UNSUPPORTED_MEDIA_TYPE,
    URI_TOO_LONG,
    content_coding,
    is_json,
    media_type,
    parse_content_length,
    request_target_length,
)

__all__ = [
    "COMPILED",
    "BufferedInput",
    "RequestGate",
    "RequestLimitsCall",
    "admit",
    "check_body",
]

COMPILED = False


class RequestGate:
    """The request limits of one route, precomputed for ``admit``.

    ``content_types`` lists the accepted media types, where ``type/*``
    accepts a whole type and an empty list accepts any. ``decode`` is the
    route schema's JSON decoder, which validates the bodies of POST, PUT and
    PATCH requests, or ``None``.
    """

    __slots__ = (
        "body_types",
        "content_types",
        "decode",
        "decompress",
        "json_max_depth",
        "json_max_tokens",
        "max_body",
        "max_header_bytes",
        "max_headers",
        "max_url_bytes",
        "methods",
        "type_prefixes",
        "validated_methods",
    )

    def __init__(
        self,
        *,
        methods: Iterable[str],
        max_url_bytes: int,
        max_headers: int,
        max_header_bytes: int,
        max_body: int,
        content_types: Iterable[str],
        decompress: bool,
        json_max_depth: int,
        json_max_tokens: int,
        decode: Callable[[bytes], Any] | None = None,
    ) -> None:
        types = list(content_types)
        self.methods = frozenset(methods)
        self.max_url_bytes = max_url_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_body = max_body
        self.content_types = frozenset(t for t in types if not t.endswith("/*"))
        self.type_prefixes = tuple(t[:-1] for t in types if t.endswith("/*"))
        self.decompress = decompress
        self.json_max_depth = json_max_depth
        self.json_max_tokens = json_max_tokens
        self.decode = decode
        self.validated_methods = SCHEMA_METHODS if decode is not None else frozenset()
        # Content-Type value: (is JSON, accepted on this route).
        self.body_types: dict[str, tuple[bool, bool]] = {}

    def accepts(self, media: str) -> bool:
        """Tell whether a lower-case media type is accepted on this route."""
        if not self.content_types and not self.type_prefixes:
            return True
        return media in self.content_types or media.startswith(self.type_prefixes)

    def body_type(self, content_type: str) -> tuple[bool, bool]:
        """Return whether a Content-Type value is JSON and accepted on this route."""
        verdict = self.body_types.get(content_type)
        if verdict is not None:
            return verdict
        media = media_type(content_type)
        verdict = (is_json(media), self.accepts(media))
        if (
            len(content_type) <= MAX_MEMOISED_TYPE
            and len(self.body_types) < MAX_MEMOISED_TYPES
        ):
            self.body_types[content_type] = verdict
        return verdict


def admit(environ: MutableMapping[str, Any], gate: RequestGate) -> tuple[int, Any]:
    """Check a request against a route's limits, returning ``(outcome, detail)``.

    The outcomes are in ``_requestgate_common``. ``detail`` depends on the
    outcome:

    - ``STREAMED``: the declared length, ``None`` when chunked.
    - ``JSON_TOO_DEEP``, ``JSON_TOO_MANY_TOKENS``: the pre-scan offset.
    - ``DECODE_FAILED``: ``(error, body)``.
    - ``INPUT_FAILED``: the exception that ``wsgi.input.read()`` raised.
    - ``READ_BODY``: ``(length, coding, start, json_body, validate)``, where
      ``start`` is what a first read of the body returned, or ``None``
      before any read.
    - any other: ``None``.
    """
    method = environ.get("REQUEST_METHOD", "")
    if method not in gate.methods:
        return METHOD_NOT_ALLOWED, None
    if request_target_length(environ) > gate.max_url_bytes:
        return URI_TOO_LONG, None
    count, size = header_totals(environ)
    if count > gate.max_headers or size > gate.max_header_bytes:
        return HEADERS_TOO_LARGE, None

    length_text = environ.get("CONTENT_LENGTH", "")
    transfer_coding = environ.get("HTTP_TRANSFER_ENCODING")
    length: int | None
    if transfer_coding is not None:
        # RFC 9112, section 6.1: a request with both may be an attempt at
        # request smuggling, and chunked must be the final coding.
        if length_text:
            return CONFLICTING_FRAMING, None
        if transfer_coding.strip().lower() != "chunked":
            return TRANSFER_CODING_NOT_CHUNKED, None
        if not environ.get("wsgi.input_terminated"):
            return LENGTH_REQUIRED, None
        length = None
    elif not length_text:
        length = 0
    else:
        try:
            length = parse_content_length(length_text)
        except ValueError:
            return INVALID_CONTENT_LENGTH, None
        if length > gate.max_body:
            return BODY_TOO_LARGE, None

    validate = method in gate.validated_methods
    if length == 0 and not validate:
        return NO_BODY, None

    json_body, accepted = gate.body_type(environ.get("CONTENT_TYPE", ""))
    if (length != 0 and not accepted) or (validate and not json_body):
        return UNSUPPORTED_MEDIA_TYPE, None
    content_encoding = environ.get("HTTP_CONTENT_ENCODING", "")
    coding = None
    if content_encoding and content_encoding.strip().lower() != "identity":
        coding = content_coding(content_encoding) if gate.decompress else None
        if coding is None:
            return UNSUPPORTED_CONTENT_CODING, None

    if not (json_body or validate or coding is not None):
        return STREAMED, length
    if length is None or coding is not None:
        return READ_BODY, (length, coding, None, json_body, validate)
    # The usual case: one read of a sized body, which the limit already bounds.
    try:
        body = environ["wsgi.input"].read(length)
    except Exception as exc:
        # The server's own error for a body it cannot read (a malformed
        # chunk, a dropped connection): the client's fault, so a 400.
        return INPUT_FAILED, exc
    if len(body) != length:
        return READ_BODY, (length, coding, body, json_body, validate)
    return check_body(environ, gate, body, json_body, validate)


def check_body(
    environ: MutableMapping[str, Any],
    gate: RequestGate,
    body: bytes,
    json_body: bool,
    validate: bool,
) -> tuple[int, Any]:
    """Pre-scan and decode a whole body, then give the app a fresh ``wsgi.input``.

    Returns ``(BUFFERED, None)``, or a rejection as ``admit`` does. The
    pre-scan rejects JSON nested or sized past the limits before any decoder
    runs, and the decoder gets the same bytes with no second read.
    """
    if json_body:
        verdict, offset = scan_json(body, gate.json_max_depth, gate.json_max_tokens)
        if verdict == TOO_DEEP:
            return JSON_TOO_DEEP, offset
        if verdict != OK:
            return JSON_TOO_MANY_TOKENS, offset
    if validate and gate.decode is not None:
        try:
            environ[BODY] = gate.decode(body)
        except msgspec.DecodeError as exc:
            return DECODE_FAILED, (exc, body)
    # A server's wsgi.input may return a bytearray, which BufferedInput
    # does not take as it is.
    environ["wsgi.input"] = BufferedInput(body if type(body) is bytes else bytes(body))
    environ["CONTENT_LENGTH"] = str(len(body))
    environ["wsgi.input_terminated"] = True
    return BUFFERED, None


_CLOSED = "I/O operation on closed file."
# The C types BytesIO converts positions and whence to: Py_ssize_t and int.
_SSIZE_MAX = sys.maxsize
_INT_MAX = (1 << 31) - 1


def _ssize(value: Any) -> int:
    """Return ``value`` as an index that fits a C ``Py_ssize_t``, as BytesIO needs."""
    index = operator.index(value)
    if not -_SSIZE_MAX - 1 <= index <= _SSIZE_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return index


class BufferedInput:
    """The ``wsgi.input`` an app gets once the layer has read the whole body.

    A read-only binary stream over the body's bytes that reads, seeks and
    iterates as ``io.BytesIO`` does: ``read``, ``read1``, ``readline``,
    ``readlines``, ``readinto``, ``readinto1``, iteration, ``seek``, ``tell`` and
    ``getvalue``. Writing raises ``io.UnsupportedOperation``.
    """

    __slots__ = ("_closed", "_data", "_position")

    def __init__(self, data: bytes) -> None:
        if type(data) is not bytes:
            raise TypeError(f"BufferedInput expected bytes, got {type(data).__name__}")
        self._data = data
        self._position = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(_CLOSED)

    def _remaining(self, size: Any) -> int:
        self._check_open()
        available = max(len(self._data) - self._position, 0)
        if size is None:
            return available
        size = _ssize(size)
        return available if size < 0 else min(size, available)

    def read(self, size: int | None = -1, /) -> bytes:
        count = self._remaining(size)
        start = self._position
        if start == 0 and count == len(self._data):
            self._position = count
            return self._data
        self._position = start + count
        return self._data[start : start + count]

    read1 = read

    def readline(self, size: int | None = -1, /) -> bytes:
        count = self._remaining(size)
        start = self._position
        end = self._data.find(b"\n", start, start + count)
        stop = start + count if end < 0 else end + 1
        self._position = stop
        return self._data[start:stop]

    def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        limit = -1 if hint is None else _ssize(hint)
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < limit <= total:
                break
        return lines

    def readinto(self, buffer: Any, /) -> int:
        with memoryview(buffer) as view, view.cast("B") as target:
            if view.readonly:
                # BytesIO checks the buffer before whether it is closed.
                raise TypeError(
                    "readinto() argument must be read-write bytes-like object, "
                    f"not {type(buffer).__name__}"
                )
            count = self._remaining(len(target))
            start = self._position
            target[:count] = self._data[start : start + count]
            self._position = start + count
            return count

    readinto1 = readinto

    def __iter__(self) -> BufferedInput:
        # BytesIO returns itself here even when closed: next() raises.
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def seek(self, offset: int, whence: int = 0, /) -> int:
        # BytesIO converts both arguments before it checks that it is open.
        offset = _ssize(offset)
        whence = operator.index(whence)
        if not -_INT_MAX - 1 <= whence <= _INT_MAX:
            raise OverflowError("Python int too large to convert to C int")
        self._check_open()
        if whence == 0:
            if offset < 0:
                raise ValueError(f"negative seek value {offset}")
            self._position = offset
        elif whence in (1, 2):
            base = self._position if whence == 1 else len(self._data)
            if offset > _SSIZE_MAX - base:
                raise OverflowError("new position too large")
            self._position = max(base + offset, 0)
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        return self._position

    def tell(self) -> int:
        self._check_open()
        return self._position

    def getvalue(self) -> bytes:
        self._check_open()
        return self._data

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return False

    def write(self, data: Any, /) -> int:
        raise io.UnsupportedOperation("write")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")

    def isatty(self) -> bool:
        self._check_open()
        return False

    def flush(self) -> None:
        self._check_open()

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> BufferedInput:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RequestLimitsCall(Hop):
    """Run the request limits layer's request path, and call ``app``.

    A request that passes with no body or a buffered one, and no trace to
    record, goes straight to ``app``. Every other outcome goes to the
    middleware's ``finish()``, which reads the bodies it must read itself,
    sends rejections, streams and traces.
    """

    __slots__ = ("default", "gates", "layer")

    def __init__(self, layer: Any) -> None:
        self.app = layer._call_app
        self.layer = layer
        self.default: RequestGate = layer.default.gate
        self.gates: dict[str, RequestGate] = {
            route_id: limits.gate for route_id, limits in layer.by_route.items()
        }

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        route = environ.get(ROUTE)
        gate = self.default if route is None else self.gates.get(route.id, self.default)
        outcome, detail = admit(environ, gate)
        result: Iterable[bytes]
        if outcome in (NO_BODY, BUFFERED) and environ.get(TRACE) is None:
            result = self.app(environ, start_response)
        else:
            result = self.layer.finish(environ, start_response, outcome, detail)
        return result
