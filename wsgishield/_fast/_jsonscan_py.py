"""Pure-Python twin of the JSON pre-scan kernel (``_jsonscan_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.
"""

from __future__ import annotations

from ._jsonscan_common import OK, TOO_DEEP, TOO_MANY_TOKENS

__all__ = ["COMPILED", "OK", "TOO_DEEP", "TOO_MANY_TOKENS", "scan_json"]

COMPILED = False

_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
# Bytes that end a bare scalar (number, true, false, null) outside a string.
_DELIMITERS = frozenset(b' \t\r\n[]{},:"')
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def scan_json(data: bytes, max_depth: int, max_tokens: int) -> tuple[int, int]:
    """Measure the nesting depth and token count of a JSON text without decoding.

    A token is an object, an array, a string (keys included) or a bare
    scalar. Bytes inside strings, escaped quotes included, never count as
    structure. The text need not be valid JSON: the decoder that runs after
    the scan reports syntax errors. Returns ``(verdict, offset)``, where
    ``verdict`` is ``OK``, ``TOO_DEEP`` or ``TOO_MANY_TOKENS`` and ``offset``
    is the index of the byte that crossed the limit (``len(data)`` on ``OK``).
    """
    depth = 0
    tokens = 0
    in_string = False
    in_scalar = False
    escaped = False

    for offset, byte in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
            continue

        if in_scalar:
            if byte not in _DELIMITERS:
                continue
            in_scalar = False

        if byte in _OPEN:
            depth += 1
            if depth > max_depth:
                return TOO_DEEP, offset
        elif byte in _CLOSE:
            # Unbalanced closers are a syntax error for the decoder to report.
            if depth > 0:
                depth -= 1
            continue
        elif byte == _QUOTE:
            in_string = True
        elif byte in _DELIMITERS:
            continue
        else:
            in_scalar = True

        tokens += 1
        if tokens > max_tokens:
            return TOO_MANY_TOKENS, offset

    return OK, len(data)
