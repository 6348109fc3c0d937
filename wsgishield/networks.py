"""IP networks: CIDR parsing, named presets and small membership sets.

Trusted-proxy lists are short (a few private ranges, or Cloudflare's 22
edge ranges), so :class:`NetworkSet` checks them one by one with integer
masks. Long allow and deny lists use the compiled longest-prefix matcher.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from ._fast.address import parse_address

__all__ = [
    "PRESETS",
    "Network",
    "NetworkSet",
    "expand_presets",
    "load_cloudflare_ranges",
    "parse_network",
    "read_network_file",
]

Network = tuple[int, int, int]
"""A network as ``(version, first address, prefix length)``."""

#: Named groups that may stand for their networks in a list of CIDRs.
PRESETS: dict[str, tuple[str, ...]] = {
    "loopback": ("127.0.0.0/8", "::1/128"),
    # RFC 1918 private IPv4, RFC 6598 shared address space and RFC 4193
    # unique local IPv6: the ranges a load balancer in a private network uses.
    "private": (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ),
}

CLOUDFLARE_PRESET = "cloudflare"


def parse_network(text: str) -> Network:
    """Parse ``"203.0.113.0/24"``, ``"2001:db8::/32"`` or a bare address.

    Raises ``ValueError`` for anything else, including host bits set below
    the prefix (``10.0.0.1/8``), which is almost always a typo.
    """
    network = ipaddress.ip_network(text.strip(), strict=True)
    first = int(network.network_address)
    prefix = network.prefixlen
    if network.version == 6 and isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        # ::ffff:0:0/96 and longer prefixes inside it describe IPv4 clients,
        # which the address parser returns as IPv4.
        if mapped is not None and prefix >= 96:
            return 4, int(mapped), prefix - 96
    return network.version, first, prefix


def read_network_file(path: str | Path) -> list[tuple[int, str]]:
    """Read one CIDR per line, skipping blanks and ``#`` comments.

    Returns ``(line number, text)`` pairs so callers can name a bad line.
    """
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                entries.append((number, text))
    return entries


def load_cloudflare_ranges(path: str | Path | None = None) -> tuple[str, ...]:
    """Return Cloudflare's edge ranges from ``path`` or the packaged snapshot."""
    if path is None:
        source = resources.files("wsgishield") / "data" / "cloudflare-ips.txt"
        text = source.read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line)


def expand_presets(
    entries: Iterable[str], cloudflare_ranges: Iterable[str] = ()
) -> list[str]:
    """Replace preset names in ``entries`` by the networks they stand for."""
    expanded: list[str] = []
    for entry in entries:
        if entry == CLOUDFLARE_PRESET:
            expanded.extend(cloudflare_ranges)
        elif entry in PRESETS:
            expanded.extend(PRESETS[entry])
        else:
            expanded.append(entry)
    return expanded


class NetworkSet:
    """A short list of networks with a membership test on parsed addresses."""

    __slots__ = ("_ipv4", "_ipv6", "networks")

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(networks)
        ipv4: list[tuple[int, int]] = []
        ipv6: list[tuple[int, int]] = []
        for text in self.networks:
            version, first, prefix = parse_network(text)
            bits = 32 if version == 4 else 128
            mask = ((1 << prefix) - 1) << (bits - prefix)
            (ipv4 if version == 4 else ipv6).append((first, mask))
        self._ipv4 = tuple(ipv4)
        self._ipv6 = tuple(ipv6)

    def __bool__(self) -> bool:
        return bool(self._ipv4 or self._ipv6)

    def __len__(self) -> int:
        return len(self._ipv4) + len(self._ipv6)

    def contains(self, version: int, value: int) -> bool:
        """Tell whether the parsed address ``(version, value)`` is in the set."""
        for first, mask in self._ipv4 if version == 4 else self._ipv6:
            if value & mask == first:
                return True
        return False

    def __contains__(self, address: str) -> bool:
        parsed = parse_address(address)
        return parsed is not None and self.contains(parsed[1], parsed[2])
