"""Pure-Python twin of the longest-prefix matcher kernel (``_cidr_c.pyx``).

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.

The table flattens the prefixes of each IP version into sorted, disjoint
intervals, each carrying the rule id of the longest prefix that covers it.
A lookup is one binary search over the interval starts, so its cost grows
with the logarithm of the number of prefixes and never with the size of a
range: ``0.0.0.0/0`` is one interval like any ``/32``.
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from collections.abc import Iterable

from ._address_py import _parse_ipv4, _parse_ipv6
from ._cidr_common import (
    IPV4_BITS,
    IPV4_MAPPED_HIGH_BITS,
    IPV6_BITS,
    MAX_NETWORK_TEXT,
    MAX_RULE,
    NO_MATCH,
)

__all__ = ["COMPILED", "NO_MATCH", "PrefixTable", "parse_host", "parse_network"]

COMPILED = False

_DIGITS = frozenset("0123456789")


def _parse_plain(text: str) -> tuple[int, int] | None:
    """Parse an address without port, brackets or zone to ``(version, value)``."""
    if ":" in text:
        value = _parse_ipv6(text)
        if value is None:
            return None
        if value >> 32 == IPV4_MAPPED_HIGH_BITS:
            return 4, value & 0xFFFFFFFF
        return 6, value
    ipv4 = _parse_ipv4(text)
    if ipv4 is None:
        return None
    return 4, ipv4


def parse_host(text: str) -> tuple[int, int]:
    """Parse a plain IP address to ``(version, value)``.

    Ports, brackets and zones are rejected; IPv4-mapped IPv6 comes back as
    IPv4. Raises ``ValueError`` when ``text`` is not an address.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    text = str(text)
    parsed = _parse_plain(text) if len(text) <= MAX_NETWORK_TEXT else None
    if parsed is None:
        raise ValueError(f"invalid IP address {text[:MAX_NETWORK_TEXT]!r}")
    return parsed


def parse_network(text: str) -> tuple[int, int, int]:
    """Parse ``"192.0.2.0/24"``, ``"2001:db8::/32"`` or a bare address.

    Returns ``(version, first address, prefix length)``. A prefix inside
    ``::ffff:0:0/96`` comes back as the IPv4 prefix it covers. Raises
    ``ValueError`` naming the problem, also when bits below the prefix are
    set (``10.0.0.1/8``), which is almost always a typo.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    text = str(text)
    if len(text) > MAX_NETWORK_TEXT:
        raise ValueError(f"invalid network {text[:MAX_NETWORK_TEXT]!r}: too long")
    address, slash, length = text.partition("/")
    if ":" in address:
        version, bits, value = 6, IPV6_BITS, _parse_ipv6(address)
    else:
        version, bits, value = 4, IPV4_BITS, _parse_ipv4(address)
    if value is None:
        raise ValueError(f"invalid network {text!r}: not an IP address")

    prefix = bits
    if slash:
        if not length or len(length) > 3 or not _DIGITS.issuperset(length):
            raise ValueError(f"invalid network {text!r}: bad prefix length")
        prefix = int(length)
        if prefix > bits:
            raise ValueError(f"invalid network {text!r}: prefix longer than /{bits}")
    if value & ((1 << (bits - prefix)) - 1):
        raise ValueError(f"invalid network {text!r}: host bits set below /{prefix}")

    if version == 6 and prefix >= 96 and value >> 32 == IPV4_MAPPED_HIGH_BITS:
        return 4, value & 0xFFFFFFFF, prefix - 96
    return version, value, prefix


def _check_network(index: int, network: tuple[int, int, int, int]) -> None:
    version, first, prefix, rule = network
    if version not in (4, 6):
        raise ValueError(f"network {index}: version must be 4 or 6, not {version!r}")
    bits = IPV4_BITS if version == 4 else IPV6_BITS
    if not 0 <= prefix <= bits:
        raise ValueError(f"network {index}: prefix length {prefix!r} out of range")
    if not 0 <= first < 1 << bits:
        raise ValueError(f"network {index}: address out of range for IPv{version}")
    if first & ((1 << (bits - prefix)) - 1):
        raise ValueError(f"network {index}: host bits set below /{prefix}")
    if not 0 <= rule <= MAX_RULE:
        raise ValueError(f"network {index}: rule id {rule!r} out of range")


def _flatten(
    entries: list[tuple[int, int, int, int, int]], top: int
) -> tuple[list[int], list[int]]:
    """Turn nested prefixes into interval starts and the rule of each interval.

    ``entries`` are ``(first, prefix, order, last, rule)`` sorted ascending,
    so a prefix comes right after the prefixes that contain it. A stack
    holds the prefixes open at the current position; CIDR prefixes either
    nest or do not overlap at all, so the stack never holds more than one
    prefix per length.
    """
    starts: list[int] = []
    rules: list[int] = []

    def emit(position: int, rule: int) -> None:
        if starts and starts[-1] == position:
            rules[-1] = rule
            if len(rules) > 1 and rules[-2] == rule:
                starts.pop()
                rules.pop()
        elif not rules or rules[-1] != rule:
            starts.append(position)
            rules.append(rule)

    stack: list[tuple[int, int]] = []
    previous: tuple[int, int] | None = None
    for first, prefix, _order, last, rule in entries:
        # The same prefix listed twice: the first one listed keeps it.
        if previous == (first, prefix):
            continue
        previous = (first, prefix)
        while stack and stack[-1][0] < first:
            closed_last, _ = stack.pop()
            emit(closed_last + 1, stack[-1][1] if stack else NO_MATCH)
        emit(first, rule)
        stack.append((last, rule))

    while stack:
        closed_last, _ = stack.pop()
        if closed_last < top:
            emit(closed_last + 1, stack[-1][1] if stack else NO_MATCH)
    return starts, rules


class PrefixTable:
    """IPv4 and IPv6 prefixes with a longest-prefix match to a rule id.

    ``networks`` yields ``(version, first address, prefix length, rule)``
    with ``rule`` from 0 to ``2**31 - 1``. When the same prefix appears more
    than once, the first one keeps it. Raises ``ValueError`` naming the
    position of a bad network.
    """

    __slots__ = ("_ids4", "_ids6", "_size", "_starts4", "_starts6")

    def __init__(self, networks: Iterable[tuple[int, int, int, int]]) -> None:
        by_version: dict[int, list[tuple[int, int, int, int, int]]] = {4: [], 6: []}
        for index, network in enumerate(networks):
            _check_network(index, network)
            version, first, prefix, rule = network
            bits = IPV4_BITS if version == 4 else IPV6_BITS
            last = first | ((1 << (bits - prefix)) - 1)
            by_version[version].append((first, prefix, index, last, rule))

        size = 0
        for entries in by_version.values():
            entries.sort()
            size += len({(first, prefix) for first, prefix, *_ in entries})
        self._size = size
        self._starts4, self._ids4 = _flatten(by_version[4], (1 << IPV4_BITS) - 1)
        self._starts6, self._ids6 = _flatten(by_version[6], (1 << IPV6_BITS) - 1)

    def __len__(self) -> int:
        """Return the number of distinct prefixes in the table."""
        return self._size

    @property
    def intervals(self) -> int:
        """Number of disjoint intervals the prefixes were flattened to."""
        return len(self._starts4) + len(self._starts6)

    @property
    def nbytes(self) -> int:
        """Estimated bytes held by the lookup lists and their integers."""
        total = 0
        for values in (self._starts4, self._ids4, self._starts6, self._ids6):
            total += sys.getsizeof(values) + sum(sys.getsizeof(v) for v in values)
        return total

    def lookup(self, version: int, value: int) -> int:
        """Return the rule of the longest prefix holding the address, or ``NO_MATCH``.

        ``(version, value)`` is the canonical form of
        :class:`~wsgishield.client.ClientAddress`. Raises ``ValueError`` for
        a version other than 4 or 6 or a value out of range.
        """
        if version == 4:
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"IPv4 address value out of range: {value!r}")
            starts, ids = self._starts4, self._ids4
        elif version == 6:
            if not 0 <= value < 1 << IPV6_BITS:
                raise ValueError(f"IPv6 address value out of range: {value!r}")
            starts, ids = self._starts6, self._ids6
        else:
            raise ValueError(f"IP version must be 4 or 6, not {version!r}")
        index = bisect_right(starts, value) - 1
        return ids[index] if index >= 0 else NO_MATCH

    def lookup_text(self, text: str) -> int:
        """Parse a plain address (see :func:`parse_host`) and look it up."""
        version, value = parse_host(text)
        return self.lookup(version, value)
