"""Pure-Python twin of the header size kernel (``_headerscan_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._headerscan_common import HEADER_LINE_OVERHEAD, UNPREFIXED_HEADERS

__all__ = ["COMPILED", "header_totals"]

COMPILED = False


def header_totals(environ: Mapping[str, Any]) -> tuple[int, int]:
    """Return the number of request header fields in a WSGI environ and their size.

    The size counts names (without the ``HTTP_`` prefix), values and the
    ``": "`` and CRLF of each line. Servers join repeated fields into one
    value, so the count is of distinct names while the size still counts
    every byte. A value that is not a ``str`` counts as empty.
    """
    count = 0
    size = 0
    for key, value in environ.items():
        if not isinstance(key, str):
            continue
        if key.startswith("HTTP_"):
            size += len(key) - 5
        elif key in UNPREFIXED_HEADERS and value:
            size += len(key)
        else:
            continue
        count += 1
        if isinstance(value, str):
            size += len(value)
    return count, size + count * HEADER_LINE_OVERHEAD
