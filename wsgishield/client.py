"""Resolve the real client address of a request behind reverse proxies.

The immediate peer (``REMOTE_ADDR``) is the client unless it is one of the
configured trusted proxies. Only then is one configured forwarding header
read, and only the part of it that trusted proxies wrote.

.. warning::

   Every forwarding header is written by whoever sends the request. Trust a
   proxy only if it overwrites or appends to the header you select, and
   list exactly the networks your proxies connect from. Trusting a network
   that clients can connect from lets any client choose its own address,
   and with it its rate limits, bans and allow lists.

Sources:

``x-forwarded-for``
    With ``hops = 0`` (the default) the list is walked from the right,
    skipping trusted proxies, and the first untrusted address is the client:
    an address a client prepends is never chosen. With ``hops = N`` the
    client is the N-th address from the right, for a fixed chain of N
    proxies whose addresses are not known in advance.
``forwarded``
    The same walk over the ``for=`` parameters of RFC 7239 ``Forwarded``.
``x-real-ip``
    A single address set by the proxy (nginx ``$remote_addr``).
``cf-connecting-ip``
    A single address set by Cloudflare, read only when the peer is in
    Cloudflare's published edge ranges.

When the header is absent or unusable, the peer is the client and the reason
is recorded (``missing``, ``invalid`` or ``short-chain``); resolution never
raises and never returns an empty address. Header values longer than
``max_header_bytes`` are ignored as ``invalid``, which bounds the work a
request can cause.

If the reverse proxy already rewrites the peer address (nginx
``real_ip_header`` with ``set_real_ip_from``), leave ``trusted_proxies``
empty here: resolving the address twice would trust the proxy's view of
itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

from ._fast.address import parse_address
from .errors import ConfigurationError
from .networks import (
    CLOUDFLARE_PRESET,
    PRESETS,
    NetworkSet,
    expand_presets,
    load_cloudflare_ranges,
    parse_network,
)

__all__ = ["REASONS", "SOURCES", "ClientAddress", "ClientAddressResolver"]

Source = Literal["x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip"]

SOURCES: dict[str, str] = {
    "x-forwarded-for": "HTTP_X_FORWARDED_FOR",
    "forwarded": "HTTP_FORWARDED",
    "x-real-ip": "HTTP_X_REAL_IP",
    "cf-connecting-ip": "HTTP_CF_CONNECTING_IP",
}

#: Reasons for using a trusted peer's own address instead of its header.
REASONS = ("missing", "invalid", "short-chain")

# Shortest prefixes accepted in a Cloudflare ranges file: an eighth of the
# IPv4 space and a /16 of IPv6 are far broader than any edge range.
MIN_CLOUDFLARE_PREFIX_V4 = 8
MIN_CLOUDFLARE_PREFIX_V6 = 16

# nginx's default large_client_header_buffers allows 8 KiB per header line, so
# a longer forwarding header did not come through a default nginx.
DEFAULT_MAX_HEADER_BYTES = 8192

# A peer without an IP address (an empty REMOTE_ADDR, or "unix:...") is a
# local process on a Unix socket, such as nginx in front of Gunicorn. It gets
# the loopback address and its trust.
_UNIX_SOCKET_PEER = ("127.0.0.1", 4, 0x7F000001, "")

# Any other REMOTE_ADDR that is not an IP address comes from a misbehaving
# server. It gets the unspecified address, which no preset trusts.
_INVALID_PEER = ("0.0.0.0", 4, 0, "")

_Parsed = tuple[str, int, int, str]

# Resolutions are memoised per (peer, header, proto header, scheme): a client
# that keeps its connection path repeats the same values. Longer header
# values are resolved every time, so random headers cannot fill the memo
# with large keys.
MEMO_SIZE = 4096
MAX_MEMOISED_HEADER = 256


class ClientAddress(NamedTuple):
    """The resolved client of one request."""

    #: Canonical address text: IPv4-mapped IPv6 as IPv4, no port, no zone.
    ip: str
    #: 4 or 6.
    version: int
    #: The address as an integer, for network lookups.
    value: int
    #: IPv6 zone id, for logs only (never part of a key).
    zone: str
    #: The immediate peer, as canonical text.
    peer: str
    #: ``"peer"``, or the forwarding header the address came from.
    source: str
    #: Fallback reason when a trusted peer's header was unusable, or ``None``.
    reason: str | None


class ClientAddressResolver:
    """Resolve :class:`ClientAddress` values from WSGI environs.

    All options are keyword-only and default to trusting nothing. Presets
    ``loopback``, ``private`` and ``cloudflare`` may stand in
    ``trusted_proxies`` for their networks.
    """

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str] = (),
        source: Source = "x-forwarded-for",
        hops: int = 0,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        cloudflare_ranges: str | None = None,
        forwarded_proto: bool = True,
    ) -> None:
        if source not in SOURCES:
            raise ConfigurationError(
                "client.source", source, f"expected one of {', '.join(SOURCES)}"
            )
        if not 0 <= hops <= 32:
            raise ConfigurationError("client.hops", hops, "expected 0 to 32")
        if hops and source not in ("x-forwarded-for", "forwarded"):
            raise ConfigurationError(
                "client.hops", hops, f"hop counting does not apply to {source}"
            )
        if max_header_bytes < 64:
            raise ConfigurationError(
                "client.max_header_bytes", max_header_bytes, "expected at least 64"
            )

        try:
            cloudflare = load_cloudflare_ranges(cloudflare_ranges)
        except OSError as exc:
            raise ConfigurationError(
                "client.cloudflare_ranges", cloudflare_ranges, str(exc)
            ) from exc

        trusted_proxies = list(trusted_proxies)
        _check_trusted_entries(trusted_proxies)
        networks = expand_presets(trusted_proxies, cloudflare)
        self.trusted = _network_set("client.trusted_proxies", networks)
        self._trusts_proxies = bool(self.trusted)
        self.cloudflare = _network_set("client.cloudflare_ranges", cloudflare)
        _check_cloudflare_ranges(cloudflare)
        self.source = source
        self.hops = hops
        self.max_header_bytes = max_header_bytes
        self.forwarded_proto = forwarded_proto
        self._header_key = SOURCES[source]
        # The environ keys whose values key the memo. With no trusted proxy
        # the peer is always the client and no header is read, so the peer
        # and the scheme alone are enough.
        self.memo_key_names: tuple[str, ...] = (
            (
                "REMOTE_ADDR",
                self._header_key,
                "HTTP_X_FORWARDED_PROTO",
                "wsgi.url_scheme",
            )
            if self._trusts_proxies
            else ("REMOTE_ADDR", "wsgi.url_scheme")
        )
        self._memo: dict[tuple[Any, ...], tuple[ClientAddress, str]] = {}
        # cached(key): the memoised resolution for the values of
        # memo_key_names, or None. A bound dict.get, so that compiled callers
        # look it up without a Python frame.
        self.cached = self._memo.get
        self._walk = {
            "x-forwarded-for": self._from_list,
            "forwarded": self._from_forwarded,
            "x-real-ip": self._from_single,
            "cf-connecting-ip": self._from_cloudflare,
        }[source]

    def resolve(self, environ: Mapping[str, Any]) -> tuple[ClientAddress, str]:
        """Return the client address and the effective scheme of a request."""
        # The values of memo_key_names, spelled out: tuple(map(...)) takes
        # three times as long.
        key: tuple[Any, ...]
        if self._trusts_proxies:
            header = environ.get(self._header_key)
            key = (
                environ.get("REMOTE_ADDR"),
                header,
                environ.get("HTTP_X_FORWARDED_PROTO"),
                environ.get("wsgi.url_scheme"),
            )
        else:
            header = None
            key = (environ.get("REMOTE_ADDR"), environ.get("wsgi.url_scheme"))
        try:
            return self._memo[key]
        except (KeyError, TypeError):
            pass

        resolved = self._resolve(environ, header)
        if header is None or len(header) <= MAX_MEMOISED_HEADER:
            memo = self._memo
            if len(memo) >= MEMO_SIZE:
                # Another thread may evict the same entry first: harmless.
                try:
                    del memo[next(iter(memo))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            try:
                memo[key] = resolved
            except TypeError:  # a non-string value in a hand-built environ
                pass
        return resolved

    def _resolve(
        self, environ: Mapping[str, Any], header: Any
    ) -> tuple[ClientAddress, str]:
        scheme = environ.get("wsgi.url_scheme", "http")
        peer = _parse_peer(environ.get("REMOTE_ADDR"))

        if not self.trusted.contains(peer[1], peer[2]):
            return _client(peer, peer, "peer", None), scheme

        if not header or header.isspace():
            return _client(peer, peer, "peer", "missing"), scheme
        if len(header) > self.max_header_bytes:
            return _client(peer, peer, "peer", "invalid"), scheme

        found, reason, proto = self._walk(header, peer)
        if found is None:
            return _client(peer, peer, "peer", reason), scheme
        if self.forwarded_proto:
            scheme = proto or _forwarded_proto(environ) or scheme
        return _client(found, peer, self.source, None), scheme

    # Each walker returns (address or None, reason when None, proto or None).

    def _from_list(
        self, header: str, peer: _Parsed
    ) -> tuple[_Parsed | None, str | None, str | None]:
        if self.hops:
            return _count_hops(header.split(","), self.hops, {})
        return self._walk_right_to_left(header.split(","), {})

    def _from_forwarded(
        self, header: str, peer: _Parsed
    ) -> tuple[_Parsed | None, str | None, str | None]:
        parsed = _parse_forwarded(header)
        if parsed is None:
            # An unterminated quote would swallow every element to its right,
            # including those the proxies appended. Parse each
            # comma-separated piece on its own instead, so that a quote a
            # client wrote spoils only the client's own elements.
            parsed = _parse_forwarded_pieces(header)
        nodes, protos = parsed
        if self.hops:
            return _count_hops(nodes, self.hops, protos)
        return self._walk_right_to_left(nodes, protos)

    def _from_single(
        self, header: str, peer: _Parsed
    ) -> tuple[_Parsed | None, str | None, str | None]:
        found = parse_address(header.strip())
        return found, None if found else "invalid", None

    def _from_cloudflare(
        self, header: str, peer: _Parsed
    ) -> tuple[_Parsed | None, str | None, str | None]:
        # CF-Connecting-IP means something only when Cloudflare itself sent
        # the request; from anywhere else it is a client's claim.
        if not self.cloudflare.contains(peer[1], peer[2]):
            return None, "invalid", None
        return self._from_single(header, peer)

    def _walk_right_to_left(
        self, nodes: list[str], protos: Mapping[int, str]
    ) -> tuple[_Parsed | None, str | None, str | None]:
        last_trusted: _Parsed | None = None
        last_trusted_index = -1
        saw_invalid = False
        for index in range(len(nodes) - 1, -1, -1):
            text = nodes[index].strip()
            # RFC 9110, section 5.6.1.2: recipients ignore empty list elements,
            # which also appear where a server joins repeated header lines.
            if not text:
                continue
            parsed = parse_address(text)
            if parsed is None:
                saw_invalid = True
                break
            if not self.trusted.contains(parsed[1], parsed[2]):
                return parsed, None, protos.get(index)
            last_trusted, last_trusted_index = parsed, index

        # Every address a trusted proxy wrote is trusted too: the client is
        # itself inside a trusted network, so the leftmost of those is it.
        if last_trusted is not None:
            return last_trusted, None, protos.get(last_trusted_index)
        return None, "invalid" if saw_invalid else "missing", None


def _count_hops(
    nodes: list[str], hops: int, protos: Mapping[int, str]
) -> tuple[_Parsed | None, str | None, str | None]:
    """Take the ``hops``-th non-empty element from the right of ``nodes``.

    Only that element is parsed: garbage a client wrote further left cannot
    void the header and hand the proxy's own address to the rules.
    """
    seen = 0
    for index in range(len(nodes) - 1, -1, -1):
        text = nodes[index].strip()
        if not text:
            continue
        seen += 1
        if seen == hops:
            parsed = parse_address(text)
            if parsed is None:
                return None, "invalid", None
            return parsed, None, protos.get(index)
    return None, "short-chain" if seen else "missing", None


def _parse_forwarded(header: str) -> tuple[list[str], dict[int, str]] | None:
    """Split an RFC 7239 ``Forwarded`` value into its ``for=`` nodes.

    Returns one node text per element (empty when an element has no
    ``for``), with quotes removed, and the ``proto`` of each element that
    has one. Returns ``None`` when a quoted string is not terminated. Obfuscated
    identifiers (``_hidden``) and ``unknown`` stay as they are and fail to
    parse as addresses later.
    """
    nodes: list[str] = []
    protos: dict[int, str] = {}
    node = ""
    name = ""
    name_start = 0
    value_start = -1
    in_quotes = False
    escaped = False

    def end_pair(end: int) -> None:
        nonlocal node
        if value_start < 0:
            return
        value = _unquote(header[value_start:end].strip())
        if name == "for":
            node = value
        elif name == "proto" and value.lower() in ("http", "https"):
            protos[len(nodes)] = value.lower()

    for index, char in enumerate(header):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "=" and value_start < 0:
            name = header[name_start:index].strip().lower()
            value_start = index + 1
        elif char == ";" or char == ",":
            end_pair(index)
            name_start, value_start, name = index + 1, -1, ""
            if char == ",":
                nodes.append(node)
                node = ""

    if in_quotes:
        return None
    end_pair(len(header))
    nodes.append(node)
    return nodes, protos


def _parse_forwarded_pieces(header: str) -> tuple[list[str], dict[int, str]]:
    nodes: list[str] = []
    protos: dict[int, str] = {}
    for piece in header.split(","):
        parsed = _parse_forwarded(piece)
        if parsed is None or len(parsed[0]) != 1:
            nodes.append('"')  # not an address, so the walk stops here
            continue
        if 0 in parsed[1]:
            protos[len(nodes)] = parsed[1][0]
        nodes.append(parsed[0][0])
    return nodes, protos


def _parse_peer(remote_addr: Any) -> _Parsed:
    if not remote_addr or not isinstance(remote_addr, str):
        return _UNIX_SOCKET_PEER
    parsed: _Parsed | None = parse_address(remote_addr)
    if parsed is not None:
        return parsed
    if remote_addr.startswith("unix:"):
        return _UNIX_SOCKET_PEER
    return _INVALID_PEER


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return inner.replace("\\\\", "\0").replace("\\", "").replace("\0", "\\")
    return value


def _forwarded_proto(environ: Mapping[str, Any]) -> str | None:
    """Return the last ``X-Forwarded-Proto`` value, if it is http or https."""
    header = environ.get("HTTP_X_FORWARDED_PROTO")
    if not header:
        return None
    proto = header.rsplit(",", 1)[-1].strip().lower()
    return proto if proto in ("http", "https") else None


def _client(
    found: _Parsed, peer: _Parsed, source: str, reason: str | None
) -> ClientAddress:
    ip, version, value, zone = found
    return ClientAddress(ip, version, value, zone, peer[0], source, reason)


def _check_trusted_entries(entries: list[str]) -> None:
    for index, entry in enumerate(entries):
        key = f"client.trusted_proxies[{index}]"
        if entry in PRESETS or entry == CLOUDFLARE_PRESET:
            continue
        try:
            _, _, prefix = parse_network(entry)
        except ValueError as exc:
            raise ConfigurationError(key, entry, str(exc)) from exc
        if prefix == 0:
            raise ConfigurationError(
                key,
                entry,
                "a /0 network trusts every peer, so any client could choose its "
                "own address; list the networks your proxies connect from",
            )


def _check_cloudflare_ranges(ranges: Iterable[str]) -> None:
    # Cloudflare's shortest published prefixes are /13 (IPv4) and /29
    # (IPv6). A much shorter one in the file, such as a /0, would turn
    # CF-Connecting-IP into a header any peer may set.
    for entry in ranges:
        version, _, prefix = parse_network(entry)
        if prefix < (
            MIN_CLOUDFLARE_PREFIX_V4 if version == 4 else MIN_CLOUDFLARE_PREFIX_V6
        ):
            raise ConfigurationError(
                "client.cloudflare_ranges",
                entry,
                "too broad for a Cloudflare edge range; check the ranges file",
            )


def _network_set(key: str, networks: Iterable[str]) -> NetworkSet:
    entries = list(networks)
    try:
        return NetworkSet(entries)
    except ValueError as exc:
        raise ConfigurationError(key, entries, str(exc)) from exc
