"""Cache keys: what makes two requests ask for the same stored response.

A key hashes the effective scheme and host, the path, the canonical query
and the version. For per-identity routes it also hashes the verified
subject, and it hashes the values of the request headers that the route
declares or that the response named in ``Vary``.

The scheme comes from the client-address layer, which reads forwarding
headers only from trusted proxies. The host comes from ``Host`` (or
``SERVER_NAME``) and never from ``X-Forwarded-Host``, because any client
can send that header.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

__all__ = ["KeyBuilder", "Target", "canonical_query", "environ_key"]

# RFC 9110 host syntax, loosely: a reg-name, IPv4 or bracketed IPv6, with
# an optional port. Anything else bypasses the cache instead of being keyed.
_HOST = re.compile(
    r"[a-z0-9._~!$&'()*+,;=%-]{1,253}(?::[0-9]{1,5})?|\[[0-9a-f:.]{2,45}\](?::[0-9]{1,5})?"
)
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_ABSENT = "\x00absent"

# Requests whose path and query together are longer than this are keyed but
# not memoised, so a flood of long random URLs cannot fill the memo tables.
MAX_MEMOISED_TARGET = 512
_encode = msgspec.msgpack.Encoder().encode


class Target(NamedTuple):
    """The parts of the request target that the key uses."""

    scheme: str
    host: str
    path: str
    #: Canonical query: drop-listed parameters removed, sorted by name.
    query: str


def environ_key(header: str) -> str:
    """Return the WSGI environ key of a request header name."""
    name = header.upper().replace("-", "_")
    if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return name
    return "HTTP_" + name


def canonical_query(
    query: str,
    drop_exact: frozenset[str] = frozenset(),
    drop_prefixes: tuple[str, ...] = (),
) -> str:
    """Sort a raw query string by parameter name and remove dropped names.

    The sort is stable, so repeated parameters keep their relative order
    (``?a=2&a=1`` and ``?a=1&a=2`` differ, as they do to the app). Values
    stay percent-encoded as sent; empty pairs (``&&``) go.
    """
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        if not pair:
            continue
        name = pair.partition("=")[0]
        if name in drop_exact or (drop_prefixes and name.startswith(drop_prefixes)):
            continue
        pairs.append((name, pair))
    pairs.sort(key=lambda item: item[0])
    return "&".join(pair for _, pair in pairs)


def _digest(parts: Sequence[Any]) -> str:
    # msgpack frames every part with its length, so no two different part
    # lists encode alike; 128 bits of BLAKE2b make collisions negligible.
    try:
        data = _encode(parts)
    except UnicodeEncodeError:
        # A server that decodes the request with "surrogateescape" can pass
        # lone surrogates, which UTF-8 cannot encode. repr() escapes them
        # and starts with "[" or "(", which no msgpack array does.
        data = repr(parts).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class KeyBuilder:
    """Builds targets, keys and URI tags for one cache configuration."""

    __slots__ = (
        "_primaries",
        "_targets",
        "drop_exact",
        "drop_prefixes",
        "memo_size",
        "version",
    )

    def __init__(
        self,
        *,
        drop_params: Iterable[str] = (),
        version: str = "1",
        memo_size: int = 4096,
    ) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for name in drop_params:
            if name.endswith("*"):
                prefixes.append(name[:-1])
            else:
                exact.add(name)
        self.drop_exact = frozenset(exact)
        self.drop_prefixes = tuple(prefixes)
        self.version = version
        self.memo_size = memo_size
        # Hits repeat the same few URLs, so the parsing and hashing of each
        # is done once and remembered in these bounded tables.
        self._targets: dict[tuple[str, ...], Target | None] = {}
        self._primaries: dict[tuple[Any, ...], str] = {}

    def _remember(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= self.memo_size:
            # Evict the oldest entry. Another thread may evict it first,
            # which is harmless.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del table[next(iter(table))]
        table[key] = value

    def target(self, environ: Mapping[str, Any], scheme: str) -> Target | None:
        """Read the request target; ``None`` when the host is not valid."""
        raw = (
            scheme,
            environ.get("HTTP_HOST") or "",
            environ.get("SERVER_NAME", ""),
            environ.get("SERVER_PORT", ""),
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )
        try:
            return self._targets[raw]
        except KeyError:
            pass
        target = self._parse_target(environ, scheme)
        if len(raw[5]) + len(raw[6]) <= MAX_MEMOISED_TARGET:
            self._remember(self._targets, raw, target)
        return target

    def _parse_target(self, environ: Mapping[str, Any], scheme: str) -> Target | None:
        host = environ.get("HTTP_HOST")
        if host is None:
            host = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        host = host.lower().rstrip(".")
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port and host.endswith(default_port):
            host = host[: -len(default_port)]
        if not _HOST.fullmatch(host):
            return None
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        query = canonical_query(
            environ.get("QUERY_STRING", ""), self.drop_exact, self.drop_prefixes
        )
        return Target(scheme, host, path or "/", query)

    def strip_query(self, query: str) -> str:
        """Remove dropped parameters from ``query``, keeping the order of the rest."""
        kept = []
        for pair in query.split("&"):
            name = pair.partition("=")[0]
            if name in self.drop_exact or (
                self.drop_prefixes and name.startswith(self.drop_prefixes)
            ):
                continue
            kept.append(pair)
        return "&".join(kept)

    def primary(
        self,
        target: Target,
        declared_vary: Sequence[str],
        environ: Mapping[str, Any],
        subject: str | None,
    ) -> str:
        """Key of a resource before any ``Vary`` learnt from responses."""
        values: tuple[str, ...] = ()
        if declared_vary:
            values = tuple(
                environ.get(environ_key(name), _ABSENT) for name in declared_vary
            )
        # The app sees the Host header as sent, so a spelling that differs
        # from the normalized host (case, default port) gets its own entry.
        host = environ.get("HTTP_HOST")
        sent_host = host if host is not None and host != target.host else None
        memo_key = (target, subject, values, sent_host)
        try:
            return self._primaries[memo_key]
        except KeyError:
            pass
        primary = _digest(
            ("GET", *target, self.version, subject, list(values), sent_host)
        )
        if (
            len(target.path) + len(target.query) <= MAX_MEMOISED_TARGET
            and sum(len(value) for value in values) <= MAX_MEMOISED_TARGET
        ):
            self._remember(self._primaries, memo_key, primary)
        return primary

    def variant(
        self, primary: str, vary: Sequence[str], environ: Mapping[str, Any]
    ) -> str:
        """Key of one variant of the resource at ``primary``."""
        values = [environ.get(environ_key(name), _ABSENT) for name in vary]
        return _digest((primary, list(vary), values))

    def uri_tag(self, target: Target) -> str:
        """Tag shared by every entry of one URI, whatever identity or variant."""
        return "uri:" + _digest((target.scheme, target.host, target.path, target.query))
