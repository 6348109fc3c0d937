"""Storage rules: the responses a shared cache may store, and their lifetime (RFC 9111).

:func:`assess` reads a response's status and headers once and returns a
:class:`Storability`: either the reason it must not be stored, or its
freshness lifetime, stale windows, ``Vary`` names, tags and validators.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Sequence
from email.utils import parsedate_to_datetime
from typing import NamedTuple

__all__ = [
    "HOP_BY_HOP",
    "Storability",
    "assess",
    "mark_private",
    "parse_cache_control",
    "parse_list",
]

#: Headers that describe one connection, never stored (RFC 9110, 7.6.1),
#: plus ``Age``, which the cache recomputes on every hit.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "age",
    }
)


class Storability(NamedTuple):
    """The verdict on one response."""

    #: Empty when the response may be stored, else a short reason
    #: (``status``, ``no-store``, ``private``, ``set-cookie``, ...).
    refusal: str
    ttl: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    #: Lower-case request header names from ``Vary``.
    vary: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    etag: str = ""
    last_modified: str = ""
    #: Headers to store and replay: hop-by-hop and tag headers removed.
    headers: tuple[tuple[str, str], ...] = ()


def parse_list(value: str) -> list[str]:
    """Split a comma-separated header value into trimmed, non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_cache_control(value: str) -> dict[str, str]:
    """Parse ``Cache-Control`` into lower-case directive names and values.

    A directive without a value maps to ``""``; quoted values lose their
    quotes. Later duplicates do not override earlier ones, so a response
    cannot smuggle a second, longer ``max-age`` past the first.
    """
    directives: dict[str, str] = {}
    for item in parse_list(value):
        name, _, argument = item.partition("=")
        name = name.strip().lower()
        if name and name not in directives:
            directives[name] = argument.strip().strip('"')
    return directives


def _seconds(value: str | None) -> float | None:
    """Read a delta-seconds value; ``None`` when missing or invalid."""
    if value is None or not value.isdigit():
        return None
    # RFC 9111, 1.2.2: a value beyond 2**31 means 2**31 seconds.
    return float(min(int(value), 2**31))


def _expires_in(expires: str, date: str | None, now: float | None) -> float:
    """Lifetime from ``Expires`` minus ``Date`` (or now), RFC 9111 4.2.1.

    An invalid ``Expires``, such as ``0``, means already expired (5.3).
    """
    try:
        expires_at = parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    base = now if now is not None else time.time()
    if date is not None:
        # An invalid Date leaves the local clock as the base.
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            base = parsedate_to_datetime(date).timestamp()
    return max(0.0, expires_at - base)


def assess(
    status: int,
    headers: Sequence[tuple[str, str]],
    *,
    statuses: Collection[int],
    negative_ttl: float,
    default_ttl: float,
    stale_while_revalidate: float,
    stale_if_error: float,
    route_tags: Sequence[str],
    tag_header: str,
    allow_private: bool,
    now: float | None = None,
) -> Storability:
    """Decide whether a response may be stored and how.

    ``tag_header`` is lower-case. ``allow_private`` is true for routes keyed
    per identity, where ``Cache-Control: private`` responses may be stored
    because the key keeps each subject's entries apart.
    """
    if status not in statuses:
        return Storability("status")

    cache_control = ""
    vary: list[str] = []
    tags: list[str] = list(route_tags)
    etag = last_modified = ""
    expires = date = None
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "set-cookie":
            return Storability("set-cookie")
        if lower == "cache-control":
            cache_control = f"{cache_control}, {value}" if cache_control else value
        elif lower == "vary":
            vary.extend(item.lower() for item in parse_list(value))
        elif lower == "content-security-policy" and "'nonce-" in value:
            # A nonce must differ on every response, so a replayed one lets
            # an injected script that copied it run.
            return Storability("csp-nonce")
        elif lower == tag_header:
            tags.extend(value.split())
            continue
        elif lower == "etag":
            etag = value.strip()
        elif lower == "last-modified":
            last_modified = value.strip()
        elif lower == "expires":
            expires = value
        elif lower == "date":
            date = value
        if lower not in HOP_BY_HOP:
            kept.append((name, value))

    directives = parse_cache_control(cache_control)
    if "no-store" in directives:
        return Storability("no-store")
    if "private" in directives and not allow_private:
        return Storability("private")
    if "no-cache" in directives:
        # Storing would oblige the cache to revalidate on every use, which
        # the app can do faster itself.
        return Storability("no-cache")
    if "*" in vary:
        return Storability("vary-star")

    ttl = _seconds(directives.get("s-maxage"))
    if ttl is None:
        ttl = _seconds(directives.get("max-age"))
    if ttl is None and expires is not None:
        ttl = _expires_in(expires, date, now)
    if ttl is None:
        ttl = default_ttl
    if status in (404, 410):
        ttl = min(ttl, negative_ttl)
    if ttl <= 0:
        return Storability("max-age=0")

    swr = _seconds(directives.get("stale-while-revalidate"))
    sie = _seconds(directives.get("stale-if-error"))
    if "must-revalidate" in directives or "proxy-revalidate" in directives:
        # RFC 9111, 5.2.2.2: a stale response must not be used at all.
        swr = sie = 0.0
    else:
        swr = stale_while_revalidate if swr is None else swr
        sie = stale_if_error if sie is None else sie

    return Storability(
        "",
        ttl,
        swr,
        sie,
        tuple(dict.fromkeys(vary)),
        tuple(dict.fromkeys(tags)),
        etag,
        last_modified,
        tuple(kept),
    )


def mark_private(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mark a per-identity response ``private`` for caches further down.

    A shared cache between the shield and the client keys by URL alone, so
    it must not keep a response that belongs to one subject. ``public`` and
    ``s-maxage`` go; the other directives stay.
    """
    directives: list[str] = []
    rest = []
    for name, value in headers:
        if name.lower() == "cache-control":
            for item in parse_list(value):
                lower = item.lower()
                if lower != "public" and not lower.startswith("s-maxage"):
                    directives.append(item)
        else:
            rest.append((name, value))
    if not any(item.lower() in ("private", "no-store") for item in directives):
        directives.insert(0, "private")
    rest.append(("Cache-Control", ", ".join(directives)))
    return rest
