"""Pure-Python twin of the address parser kernel (``_address_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.
"""

from __future__ import annotations

from ._address_common import MAX_ADDRESS_TEXT, ZONE_CHARACTERS, check_address_value

__all__ = ["COMPILED", "format_address", "parse_address"]

COMPILED = False

_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _parse_ipv4(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        # Reject leading zeros: "010" is octal to inet_aton and decimal to
        # others, so an address written that way has no single meaning.
        if not part or len(part) > 3 or not _DIGITS.issuperset(part):
            return None
        if len(part) > 1 and part[0] == "0":
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


def _parse_hex_groups(text: str, allow_ipv4_tail: bool) -> list[int] | None:
    if not text:
        return []
    groups: list[int] = []
    pieces = text.split(":")
    for index, piece in enumerate(pieces):
        is_last = index == len(pieces) - 1
        if is_last and allow_ipv4_tail and "." in piece:
            ipv4 = _parse_ipv4(piece)
            if ipv4 is None:
                return None
            groups.append(ipv4 >> 16)
            groups.append(ipv4 & 0xFFFF)
            continue
        if not piece or len(piece) > 4 or not _HEX_DIGITS.issuperset(piece):
            return None
        groups.append(int(piece, 16))
    return groups


def _parse_ipv6(text: str) -> int | None:
    head, gap, tail = text.partition("::")
    if gap:
        if "::" in tail:
            return None
        head_groups = _parse_hex_groups(head, allow_ipv4_tail=False)
        tail_groups = _parse_hex_groups(tail, allow_ipv4_tail=True)
        if head_groups is None or tail_groups is None:
            return None
        # "::" stands for at least one group of zeros (RFC 4291, section 2.2).
        missing = 8 - len(head_groups) - len(tail_groups)
        if missing < 1:
            return None
        groups = head_groups + [0] * missing + tail_groups
    else:
        parsed = _parse_hex_groups(text, allow_ipv4_tail=True)
        if parsed is None or len(parsed) != 8:
            return None
        groups = parsed
    value = 0
    for group in groups:
        value = (value << 16) | group
    return value


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and _DIGITS.issuperset(text) and int(text) <= 65535


def _split_zone(text: str) -> tuple[str, str] | None:
    address, percent, zone = text.partition("%")
    if not percent:
        return text, ""
    if not zone or not ZONE_CHARACTERS.issuperset(zone):
        return None
    return address, zone


def parse_address(text: str) -> tuple[str, int, int, str] | None:
    """Parse an IP address with optional port, brackets and IPv6 zone.

    Returns ``(canonical, version, value, zone)`` or ``None`` when ``text`` is
    not an address. IPv4-mapped IPv6 addresses come back as IPv4; the zone is
    returned apart and is not part of ``canonical`` or ``value``.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    if not text or len(text) > MAX_ADDRESS_TEXT:
        return None

    if text[0] == "[":
        close = text.find("]")
        if close < 0:
            return None
        rest = text[close + 1 :]
        if rest and (rest[0] != ":" or not _is_port(rest[1:])):
            return None
        inner = _split_zone(text[1:close])
        if inner is None:
            return None
        value = _parse_ipv6(inner[0])
        zone = inner[1]
    elif text.count(":") >= 2:
        # A bare IPv6 address is never split on ":" for a port.
        inner = _split_zone(text)
        if inner is None:
            return None
        value = _parse_ipv6(inner[0])
        zone = inner[1]
    else:
        host, colon, port = text.partition(":")
        if colon and not _is_port(port):
            return None
        ipv4 = _parse_ipv4(host)
        if ipv4 is None:
            return None
        return _format_ipv4(ipv4), 4, ipv4, ""

    if value is None:
        return None
    if value >> 32 == 0xFFFF:
        ipv4 = value & 0xFFFFFFFF
        return _format_ipv4(ipv4), 4, ipv4, zone
    return _format_ipv6(value), 6, value, zone


def format_address(version: int, value: int) -> str:
    """Format an address in canonical text: dotted quad, or RFC 5952 IPv6.

    Raises ``ValueError`` for a version other than 4 or 6, or a value out of
    its range.
    """
    check_address_value(version, value)
    if version == 4:
        return _format_ipv4(value)
    return _format_ipv6(value)


def _format_ipv4(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _format_ipv6(value: int) -> str:
    groups = [(value >> shift) & 0xFFFF for shift in range(112, -16, -16)]

    # RFC 5952, section 4.2: compress the longest run of two or more zero
    # groups, the first one on a tie.
    best_start, best_length = -1, 1
    run_start, run_length = -1, 0
    for index, group in enumerate(groups):
        if group == 0:
            if run_length == 0:
                run_start = index
            run_length += 1
            if run_length > best_length:
                best_start, best_length = run_start, run_length
        else:
            run_length = 0

    if best_start < 0:
        return ":".join(f"{group:x}" for group in groups)
    head = ":".join(f"{group:x}" for group in groups[:best_start])
    tail = ":".join(f"{group:x}" for group in groups[best_start + best_length :])
    return f"{head}::{tail}"
