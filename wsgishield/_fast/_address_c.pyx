# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled address parser: the same names and results as ``_address_py``.

The parser walks the text once with C integers and builds a Python object only
for the result, which is what makes it several times faster than the twin and
than ``ipaddress.ip_address``.
"""

from cpython.unicode cimport PyUnicode_1BYTE_DATA
from libc.stdint cimport uint32_t, uint64_t

from ._address_common import MAX_ADDRESS_TEXT, ZONE_CHARACTERS, check_address_value

__all__ = ["COMPILED", "format_address", "parse_address"]

COMPILED = True

cdef Py_ssize_t _MAX_TEXT = MAX_ADDRESS_TEXT
cdef const char* _HEX_DIGITS = b"0123456789abcdef"


cdef inline Py_ssize_t _write_decimal(char* buffer, Py_ssize_t position, uint32_t octet) noexcept:
    if octet >= 100:
        buffer[position] = 48 + octet // 100
        position += 1
    if octet >= 10:
        buffer[position] = 48 + (octet // 10) % 10
        position += 1
    buffer[position] = 48 + octet % 10
    return position + 1


cdef inline Py_ssize_t _write_hex(char* buffer, Py_ssize_t position, uint32_t group) noexcept:
    cdef int shift
    cdef bint started = False
    for shift in range(12, -4, -4):
        if started or (group >> shift) & 15 or shift == 0:
            buffer[position] = _HEX_DIGITS[(group >> shift) & 15]
            position += 1
            started = True
    return position


cdef str _format_ipv4(uint32_t value):
    cdef char buffer[16]
    cdef Py_ssize_t position = 0
    cdef int shift
    for shift in range(24, -8, -8):
        position = _write_decimal(buffer, position, (value >> shift) & 255)
        if shift:
            buffer[position] = 46  # "."
            position += 1
    return buffer[:position].decode("ascii")


cdef str _format_ipv6(uint64_t high, uint64_t low):
    cdef uint32_t groups[8]
    cdef char buffer[48]
    cdef Py_ssize_t position = 0
    cdef int k
    cdef int best_start = -1
    cdef int best_length = 1
    cdef int run_start = -1
    cdef int run_length = 0

    for k in range(4):
        groups[k] = (high >> (48 - 16 * k)) & 0xFFFF
        groups[k + 4] = (low >> (48 - 16 * k)) & 0xFFFF

    # RFC 5952, section 4.2: compress the longest run of two or more zero
    # groups, the first one on a tie.
    for k in range(8):
        if groups[k] == 0:
            if run_length == 0:
                run_start = k
            run_length += 1
            if run_length > best_length:
                best_start = run_start
                best_length = run_length
        else:
            run_length = 0

    k = 0
    while k < 8:
        if k == best_start:
            buffer[position] = 58
            buffer[position + 1] = 58
            position += 2
            k += best_length
            continue
        if k > 0 and k != best_start + best_length:
            buffer[position] = 58  # ":"
            position += 1
        position = _write_hex(buffer, position, groups[k])
        k += 1
    return buffer[:position].decode("ascii")


cdef object _ipv6_result(uint64_t high, uint64_t low, str zone):
    if high == 0 and (low >> 32) == 0xFFFF:
        return _format_ipv4(<uint32_t>(low & 0xFFFFFFFF)), 4, <uint32_t>(low & 0xFFFFFFFF), zone
    return _format_ipv6(high, low), 6, (<object>high << 64) | <object>low, zone


cdef Py_ssize_t _find(const unsigned char* text, unsigned char wanted,
                      Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(start, end):
        if text[i] == wanted:
            return i
    return -1


cdef bint _is_port(const unsigned char* text, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint32_t value = 0
    if end - start < 1 or end - start > 5:
        return False
    for i in range(start, end):
        if text[i] < 48 or text[i] > 57:
            return False
        value = value * 10 + (text[i] - 48)
    return value <= 65535


cdef object _zone_of(str text, Py_ssize_t percent, Py_ssize_t end):
    """Return the zone after ``percent``, or None when it is invalid."""
    if percent < 0:
        return ""
    zone = text[percent + 1:end]
    if not zone or not ZONE_CHARACTERS.issuperset(zone):
        return None
    return zone


def parse_address(object value):
    """Parse an IP address with optional port, brackets and IPv6 zone.

    Returns ``(canonical, version, value, zone)`` or ``None`` when ``text`` is
    not an address. IPv4-mapped IPv6 addresses come back as IPv4; the zone is
    returned apart and is not part of ``canonical`` or ``value``.
    """
    cdef str text
    cdef const unsigned char* data
    cdef Py_ssize_t n
    cdef Py_ssize_t i
    cdef Py_ssize_t close
    cdef Py_ssize_t percent
    cdef Py_ssize_t colon = -1
    cdef int colons = 0
    cdef uint32_t ipv4
    cdef uint64_t high
    cdef uint64_t low

    if type(value) is str:
        text = <str>value
    elif isinstance(value, str):
        text = str(value)  # a str subclass parses like its text
    else:
        raise TypeError(f"expected str, got {type(value).__name__}")
    n = len(text)
    # Every character of an address, a port or a zone id is ASCII, and an
    # ASCII str stores one byte per character, which the parsers walk.
    if n == 0 or n > _MAX_TEXT or not text.isascii():
        return None
    data = PyUnicode_1BYTE_DATA(text)

    if data[0] == 91:  # "["
        close = _find(data, 93, 1, n)  # "]"
        if close < 0:
            return None
        if close + 1 < n and (data[close + 1] != 58 or not _is_port(data, close + 2, n)):
            return None
        percent = _find(data, 37, 1, close)  # "%"
        zone = _zone_of(text, percent, close)
        if zone is None:
            return None
        if not _ascii_ipv6(data, 1, percent if percent >= 0 else close, &high, &low):
            return None
        return _ipv6_result(high, low, zone)

    for i in range(n):
        if data[i] == 58:
            colons += 1
            colon = i

    if colons >= 2:
        # A bare IPv6 address is never split on ":" for a port.
        percent = _find(data, 37, 0, n)
        zone = _zone_of(text, percent, n)
        if zone is None:
            return None
        if not _ascii_ipv6(data, 0, percent if percent >= 0 else n, &high, &low):
            return None
        return _ipv6_result(high, low, zone)

    if colons == 1:
        if not _is_port(data, colon + 1, n):
            return None
        n = colon
    if not _ascii_ipv4(data, 0, n, &ipv4):
        return None
    return _format_ipv4(ipv4), 4, ipv4, ""


def format_address(int version, object value):
    """Format an address in canonical text: dotted quad, or RFC 5952 IPv6.

    Raises ``ValueError`` for a version other than 4 or 6, or a value out of
    its range.
    """
    check_address_value(version, value)
    if version == 4:
        return _format_ipv4(<uint32_t>value)
    return _format_ipv6(<uint64_t>(value >> 64), <uint64_t>(value & 0xFFFFFFFFFFFFFFFF))


# --- Address grammar over ASCII bytes ---------------------------------------
#
# parse_address above and the kernels that look addresses up by text (the
# CIDR matcher, through _address_c.pxd and parse_ascii_address) share these
# parsers: no per-character indexing calls, no exceptions, no GIL.


cdef inline int _ascii_hex_value(unsigned char c) noexcept nogil:
    if c >= 48 and c <= 57:  # 0-9
        return c - 48
    if c >= 97 and c <= 102:  # a-f
        return c - 87
    if c >= 65 and c <= 70:  # A-F
        return c - 55
    return -1


cdef bint _ascii_ipv4(const unsigned char* text, Py_ssize_t start, Py_ssize_t end,
                      uint32_t* out) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef int dots = 0
    cdef int digits = 0
    cdef uint32_t octet = 0
    cdef uint32_t value = 0

    for i in range(start, end):
        c = text[i]
        if c == 46:  # "."
            if digits == 0 or dots == 3:
                return False
            dots += 1
            value = (value << 8) | octet
            octet = 0
            digits = 0
        elif c >= 48 and c <= 57:
            # Leading zeros are rejected: see the twin for why.
            if digits == 1 and octet == 0:
                return False
            octet = octet * 10 + (c - 48)
            digits += 1
            if octet > 255:
                return False
        else:
            return False

    if digits == 0 or dots != 3:
        return False
    out[0] = (value << 8) | octet
    return True


cdef bint _ascii_ipv6(const unsigned char* text, Py_ssize_t start, Py_ssize_t end,
                      uint64_t* high, uint64_t* low) noexcept nogil:
    cdef uint32_t groups[8]
    cdef int count = 0
    cdef int gap = -1
    cdef Py_ssize_t i = start
    cdef Py_ssize_t group_start
    cdef int digit
    cdef int length
    cdef uint32_t group
    cdef uint32_t ipv4
    cdef int missing
    cdef int k

    if end - start < 2:
        return False
    if text[i] == 58:  # ":" may start the text only as "::"
        if text[i + 1] != 58:
            return False
        gap = 0
        i += 2

    while i < end:
        group_start = i
        group = 0
        length = 0
        while i < end:
            digit = _ascii_hex_value(text[i])
            if digit < 0:
                break
            group = (group << 4) | <uint32_t>digit
            length += 1
            if length > 4:
                return False
            i += 1

        if i < end and text[i] == 46:  # "." starts an embedded IPv4 tail
            if count > 6 or not _ascii_ipv4(text, group_start, end, &ipv4):
                return False
            groups[count] = ipv4 >> 16
            groups[count + 1] = ipv4 & 0xFFFF
            count += 2
            i = end
            break

        if length == 0 or count == 8:
            return False
        groups[count] = group
        count += 1
        if i == end:
            break
        if text[i] != 58:
            return False
        i += 1
        if i < end and text[i] == 58:
            if gap >= 0:
                return False
            gap = count
            i += 1
        elif i == end:
            return False  # a single trailing ":"

    if gap < 0:
        if count != 8:
            return False
    else:
        # "::" stands for at least one group of zeros (RFC 4291, section 2.2).
        missing = 8 - count
        if missing < 1:
            return False
        for k in range(count - 1, gap - 1, -1):
            groups[k + missing] = groups[k]
        for k in range(gap, gap + missing):
            groups[k] = 0

    high[0] = 0
    low[0] = 0
    for k in range(4):
        high[0] = (high[0] << 16) | groups[k]
        low[0] = (low[0] << 16) | groups[k + 4]
    return True


cdef int parse_ascii_address(const unsigned char* text, Py_ssize_t start, Py_ssize_t end,
                             uint64_t* high, uint64_t* low) noexcept nogil:
    """Parse a plain address (no port, brackets or zone) in ``text[start:end]``.

    Returns 4 (the value in ``low``), 6 (in ``high`` and ``low``) or 0 when
    the bytes are not an address. IPv4-mapped IPv6 addresses come back as
    6: the caller decides how to treat them.
    """
    cdef Py_ssize_t i
    cdef uint32_t ipv4
    for i in range(start, end):
        if text[i] == 58:  # ":"
            return 6 if _ascii_ipv6(text, start, end, high, low) else 0
    if not _ascii_ipv4(text, start, end, &ipv4):
        return 0
    high[0] = 0
    low[0] = ipv4
    return 4
