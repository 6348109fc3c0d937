"""Request gate: the compiled kernel, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel
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
    METHOD_NOT_ALLOWED,
    NO_BODY,
    READ_BODY,
    REJECTED,
    STREAMED,
    TRANSFER_CODING_NOT_CHUNKED,
    UNSUPPORTED_CONTENT_CODING,
    UNSUPPORTED_MEDIA_TYPE,
    URI_TOO_LONG,
)

__all__ = [
    "BODY_TOO_LARGE",
    "BUFFERED",
    "CONFLICTING_FRAMING",
    "DECODE_FAILED",
    "HEADERS_TOO_LARGE",
    "INPUT_FAILED",
    "INVALID_CONTENT_LENGTH",
    "JSON_TOO_DEEP",
    "JSON_TOO_MANY_TOKENS",
    "LENGTH_REQUIRED",
    "METHOD_NOT_ALLOWED",
    "NO_BODY",
    "READ_BODY",
    "REJECTED",
    "STREAMED",
    "TRANSFER_CODING_NOT_CHUNKED",
    "UNSUPPORTED_CONTENT_CODING",
    "UNSUPPORTED_MEDIA_TYPE",
    "URI_TOO_LONG",
    "BufferedInput",
    "RequestGate",
    "RequestLimitsCall",
    "admit",
    "check_body",
]

_kernel = load_kernel("requestgate")

BufferedInput = _kernel.BufferedInput
RequestGate = _kernel.RequestGate
RequestLimitsCall = _kernel.RequestLimitsCall
admit = _kernel.admit
check_body = _kernel.check_body
