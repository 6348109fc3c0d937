# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled JSON pre-scan: the same names and results as ``_jsonscan_py``.

A vectorised count of "[" and "{" bytes proves most bodies within the
limits. The others get one pass with a C state machine. Neither allocates,
so a body is measured at memory speed before any decoder (and its
recursion) sees it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from ._jsonscan_common import OK, TOO_DEEP, TOO_MANY_TOKENS

__all__ = ["COMPILED", "OK", "TOO_DEEP", "TOO_MANY_TOKENS", "scan_json"]

COMPILED = True

cdef int _OK = OK
cdef int _TOO_DEEP = TOO_DEEP
cdef int _TOO_MANY_TOKENS = TOO_MANY_TOKENS

# The class of each byte outside a string. A bare scalar runs until the
# next byte that is not SCALAR. SKIP is whitespace, the comma and the colon.
cdef enum:
    SCALAR = 0
    SKIP = 1
    QUOTE = 2
    OPEN = 3
    CLOSE = 4

cdef unsigned char _CLASS[256]
# 1 for the two bytes that stop the skip through a string: the quote and the
# backslash.
cdef unsigned char _STRING_STOP[256]


cdef void _fill_tables() noexcept:
    cdef int i
    for i in range(256):
        _CLASS[i] = SCALAR
        _STRING_STOP[i] = 0
    for i in b' \t\r\n,:':
        _CLASS[i] = SKIP
    _CLASS[34] = QUOTE  # '"'
    _CLASS[91] = OPEN  # "["
    _CLASS[123] = OPEN  # "{"
    _CLASS[93] = CLOSE  # "]"
    _CLASS[125] = CLOSE  # "}"
    _STRING_STOP[34] = 1
    _STRING_STOP[92] = 1


_fill_tables()


# Bytes counted per block by _within_limits() before it checks the count: a
# block is short enough to stop soon after the limit and long enough for the
# compiler to vectorise the count.
cdef Py_ssize_t _BLOCK = 240


cdef bint _within_limits(
    const unsigned char* data,
    Py_ssize_t n,
    Py_ssize_t max_depth,
    Py_ssize_t max_tokens,
) noexcept nogil:
    """Tell whether the text cannot cross either limit, without parsing it.

    Every token starts at its own byte, so there are at most ``n`` tokens,
    and the depth never exceeds the number of "[" and "{" bytes. When both
    bounds are within the limits, the full scan would return OK.
    """
    cdef Py_ssize_t openers = 0
    cdef Py_ssize_t block_start
    cdef Py_ssize_t block_end
    cdef Py_ssize_t i
    # A block's count fits 8 bits, so the compiler can add 16 lanes at once.
    cdef unsigned char in_block

    if n > max_tokens:
        return False
    block_start = 0
    while block_start < n:
        block_end = min(block_start + _BLOCK, n)
        in_block = 0
        for i in range(block_start, block_end):
            # "[" (0x5B) and "{" (0x7B) differ only in bit 0x20.
            in_block += (data[i] | 0x20) == 123
        openers += in_block
        if openers > max_depth:
            return False
        block_start = block_end
    return True


cdef int _scan(
    const unsigned char* data,
    Py_ssize_t n,
    Py_ssize_t max_depth,
    Py_ssize_t max_tokens,
    Py_ssize_t* offset,
) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t depth = 0
    cdef Py_ssize_t tokens = 0
    cdef unsigned char kind

    # The offset is written only where the scan stops, not on every byte.
    while i < n:
        kind = _CLASS[data[i]]

        if kind == SKIP:
            i += 1
            continue

        if kind == QUOTE:  # skip the string, honouring escapes
            tokens += 1
            if tokens > max_tokens:
                offset[0] = i
                return _TOO_MANY_TOKENS
            i += 1
            while i < n:
                if _STRING_STOP[data[i]]:
                    if data[i] == 34:
                        break
                    i += 2  # backslash: the next byte is escaped
                    continue
                i += 1
            i += 1
            continue

        if kind == OPEN:
            depth += 1
            if depth > max_depth:
                offset[0] = i
                return _TOO_DEEP
            tokens += 1
            if tokens > max_tokens:
                offset[0] = i
                return _TOO_MANY_TOKENS
        elif kind == CLOSE:
            # Unbalanced closers are a syntax error for the decoder to report.
            if depth > 0:
                depth -= 1
        else:
            # A bare scalar: count it once and skip to its end.
            tokens += 1
            if tokens > max_tokens:
                offset[0] = i
                return _TOO_MANY_TOKENS
            i += 1
            while i < n and _CLASS[data[i]] == SCALAR:
                i += 1
            continue
        i += 1

    offset[0] = n
    return _OK


cdef int scan_buffer(const unsigned char* data, Py_ssize_t n, Py_ssize_t max_depth,
                     Py_ssize_t max_tokens, Py_ssize_t* offset) noexcept nogil:
    """Return the verdict of ``scan_json`` on ``n`` bytes, storing its offset."""
    if n == 0:
        offset[0] = 0
        return _OK
    # A body with few brackets, such as a typical API request, is proven
    # within the limits by a vectorised count, at a fraction of the cost of
    # the scan. Otherwise the count stops soon after the depth limit.
    if _within_limits(data, n, max_depth, max_tokens):
        offset[0] = n
        return _OK
    return _scan(data, n, max_depth, max_tokens, offset)


def scan_json(object data, Py_ssize_t max_depth, Py_ssize_t max_tokens):
    """Measure the nesting depth and token count of a JSON text without decoding.

    A token is an object, an array, a string (keys included) or a bare
    scalar. Bytes inside strings, escaped quotes included, never count as
    structure. The text need not be valid JSON: the decoder that runs after
    the scan reports syntax errors. Returns ``(verdict, offset)``, where
    ``verdict`` is ``OK``, ``TOO_DEEP`` or ``TOO_MANY_TOKENS`` and ``offset``
    is the index of the byte that crossed the limit (``len(data)`` on ``OK``).
    """
    cdef const unsigned char[::1] view
    cdef const unsigned char* start
    cdef Py_ssize_t n
    cdef Py_ssize_t offset = 0
    cdef int verdict

    # Bytes, the usual case, are read in place: acquiring a buffer view
    # costs more than scanning a 1 KB body.
    if type(data) is bytes:
        start = <const unsigned char*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    else:
        view = data
        n = view.shape[0]
        start = &view[0] if n else NULL
    with nogil:
        verdict = scan_buffer(start, n, max_depth, max_tokens, &offset)
    return verdict, offset
