"""Security header profiles, precomputed once per policy.

Two profiles follow the OWASP Secure Headers Project's recommended set
(owasp.org/www-project-secure-headers, ``ci/headers_add.json``), trimmed to
what each kind of response needs:

``api``
    For JSON APIs: ``X-Content-Type-Options: nosniff``, a CSP that lets a
    response load nothing and be framed nowhere, ``X-Frame-Options: DENY``,
    ``Referrer-Policy: no-referrer``, ``Cross-Origin-Opener-Policy`` and
    ``Cross-Origin-Resource-Policy`` ``same-origin``, and
    ``X-Permitted-Cross-Domain-Policies: none``.
``html``
    For pages: the same, with a same-origin CSP for documents in place of
    the API's empty one, ``Cross-Origin-Embedder-Policy: require-corp`` and
    a ``Permissions-Policy`` that turns off powerful browser features.

``Strict-Transport-Security`` is added only when the effective scheme is
https, as resolved by the client address layer from trusted proxies only: a
client cannot turn it on over plain http by sending ``X-Forwarded-Proto``.
An authenticated response gets ``Cache-Control: no-store`` in place of the
app's value, so no shared cache keeps one user's data for another.

A header the app sets itself keeps the app's value, except ``Cache-Control``
on authenticated responses. Fingerprinting headers (``Server``,
``X-Powered-By``) are removed from the app's response; the server's own
``Server`` header is the server's to drop (nginx ``server_tokens off``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .errors import ConfigurationError

__all__ = ["PROFILES", "HeaderProfile", "HeaderVariant", "hsts_value"]

Headers = list[tuple[str, str]]

_COMMON: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
)

#: Header sets by profile name, before HSTS and cache headers.
PROFILES: dict[str, tuple[tuple[str, str], ...]] = {
    "api": (
        *_COMMON,
        # A JSON response loads nothing; frame-ancestors replaces X-Frame-Options
        # in browsers that support CSP level 2.
        ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ),
    "html": (
        *_COMMON,
        (
            "Content-Security-Policy",
            "default-src 'self'; form-action 'self'; base-uri 'self'; "
            "object-src 'none'; frame-ancestors 'none'; upgrade-insecure-requests",
        ),
        ("Cross-Origin-Embedder-Policy", "require-corp"),
        (
            "Permissions-Policy",
            "accelerometer=(), camera=(), display-capture=(), geolocation=(), "
            "gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
        ),
    ),
}

# RFC 9110, section 5.1 (field names are tokens) and 5.5 (no CR, LF or NUL).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")

_MAX_SEEN_NAMES = 512

# One year: the minimum the HSTS preload list accepts.
_PRELOAD_MIN_AGE = 31_536_000


def hsts_value(max_age: int, include_subdomains: bool, preload: bool) -> str:
    """Return a ``Strict-Transport-Security`` value (RFC 6797, section 6.1)."""
    if preload and (not include_subdomains or max_age < _PRELOAD_MIN_AGE):
        raise ConfigurationError(
            "headers.hsts_preload",
            preload,
            "preload needs hsts_include_subdomains and hsts_max_age >= 31536000",
        )
    value = f"max-age={max_age}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value


class HeaderVariant:
    """The headers one kind of response gets: plain or https, cached or not."""

    __slots__ = ("_unwatched", "added", "no_store", "removed", "watched")

    def __init__(self, added: Headers, removed: frozenset[str], no_store: bool) -> None:
        self.added = added
        self.removed = removed
        self.no_store = no_store
        watched = {name.lower() for name, _ in added} | removed
        self.watched = frozenset(watched)
        # Header names, as apps spell them, that are not watched: a set
        # lookup is the cheapest test per response header. Apps use a few
        # dozen names, so the set stays small. Past the bound, further names
        # are lowered on every response instead of remembered.
        self._unwatched: set[str] = set()

    def apply(self, headers: list[tuple[str, str]]) -> Headers:
        """Return the app's headers with this variant's added and removed.

        The fast path, taken when the app set none of the watched names,
        copies the list once, because the app may reuse its own list.
        """
        unwatched = self._unwatched
        for name, _ in headers:
            if name not in unwatched and self._is_watched(name):
                return self._merge(headers)
        return headers + self.added

    def _is_watched(self, name: str) -> bool:
        if name.lower() in self.watched:
            return True
        if len(self._unwatched) < _MAX_SEEN_NAMES:
            self._unwatched.add(name)
        return False

    def _merge(self, headers: list[tuple[str, str]]) -> Headers:
        merged: Headers = []
        present = set()
        for name, value in headers:
            lower = name.lower()
            if lower in self.removed or (self.no_store and lower == "cache-control"):
                continue
            present.add(lower)
            merged.append((name, value))
        for name, value in self.added:
            if name.lower() not in present:
                merged.append((name, value))
        return merged


class HeaderProfile:
    """A profile's four precomputed variants: (https or not) x (no-store or not)."""

    __slots__ = ("name", "variants")

    def __init__(
        self,
        name: str,
        *,
        hsts: str | None,
        content_security_policy: str | None = None,
        extra: Mapping[str, str] | None = None,
        remove: Iterable[str] = ("Server", "X-Powered-By"),
    ) -> None:
        if name not in PROFILES:
            raise ConfigurationError(
                "headers.profile", name, f"expected one of {sorted(PROFILES)}"
            )
        self.name = name

        # Keyed by lower-case name, so "extra" replaces a profile header
        # whatever its spelling instead of adding a second one.
        base = {header.lower(): (header, value) for header, value in PROFILES[name]}
        if content_security_policy is not None:
            _check_value("headers.content_security_policy", content_security_policy)
            base["content-security-policy"] = (
                "Content-Security-Policy",
                content_security_policy,
            )
        for header, value in (extra or {}).items():
            _check_name(f"headers.extra.{header}", header)
            _check_value(f"headers.extra.{header}", value)
            if header.lower() == "strict-transport-security":
                # From "extra" it would go out over plain http as well.
                raise ConfigurationError(
                    f"headers.extra.{header}", value, "set HSTS with the hsts_* keys"
                )
            base[header.lower()] = (header, value)
        removed = set()
        for header in remove:
            _check_name("headers.remove", header)
            removed.add(header.lower())

        # A removed name never goes out, whether the app or the profile set it.
        for header in removed:
            base.pop(header, None)
        if "strict-transport-security" in removed:
            hsts = None

        plain = list(base.values())
        if hsts is not None:
            base["strict-transport-security"] = ("Strict-Transport-Security", hsts)
        https = list(base.values())
        # no-store replaces any Cache-Control that "extra" set.
        no_store = ("Cache-Control", "no-store")
        frozen = frozenset(removed)
        # Indexed by (https << 1) | no_store.
        self.variants: tuple[HeaderVariant, ...] = (
            HeaderVariant(plain, frozen, False),
            HeaderVariant(_with_no_store(plain, no_store), frozen, True),
            HeaderVariant(https, frozen, False),
            HeaderVariant(_with_no_store(https, no_store), frozen, True),
        )

    def variant(self, https: bool, no_store: bool) -> HeaderVariant:
        """Return the precomputed variant for a response."""
        return self.variants[(https << 1) | no_store]

    def headers(self, https: bool, no_store: bool) -> Sequence[tuple[str, str]]:
        """Return the headers this profile adds to a response that sets none."""
        return self.variant(https, no_store).added


def _with_no_store(headers: Headers, no_store: tuple[str, str]) -> Headers:
    return [item for item in headers if item[0].lower() != "cache-control"] + [no_store]


def _check_name(key: str, name: str) -> None:
    if not _TOKEN.match(name):
        raise ConfigurationError(key, name, "a header name must be an RFC 9110 token")


def _check_value(key: str, value: str) -> None:
    if not _FIELD_VALUE.match(value) or value != value.strip():
        raise ConfigurationError(
            key,
            value,
            "a header value may not contain control characters or edge spaces",
        )
