"""Route rules: which policy applies to a request's method and path.

Patterns are written like URL templates::

    /health               exact path
    /items/{id}           one segment, named (``*`` is an unnamed one)
    /admin/**             the prefix itself and everything below it
    /files/{rest:path}    the same, named

Rules are tried in the order the policy lists them and the first match wins,
so put narrow rules before broad ones. A rule without ``methods`` matches
every method; a rule that lists ``GET`` also matches ``HEAD``, as Flask and
Werkzeug route them together.

Paths are matched after normalization: repeated slashes merge and ``.`` and
``..`` segments resolve, so ``//admin/./x`` and ``/public/../admin/x`` meet
the rule written for ``/admin/x``. Matching on the normalized form is the
safe side: a router that keeps the raw form reaches at most the same view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ConfigurationError

__all__ = ["Route", "RouteTable", "compile_pattern", "normalize_path"]

# Paths longer than this are matched but not memoised, so a flood of long
# random paths cannot fill memory through the memo table.
MAX_MEMOISED_PATH = 256

_SEGMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def normalize_path(path: str) -> str:
    """Merge repeated slashes and resolve ``.`` and ``..`` segments.

    The result always starts with ``/``: Werkzeug routes ``admin/x`` (a
    ``PATH_INFO`` without its slash) as ``/admin/x``, so the rules must too.
    """
    if path[:1] == "/" and "//" not in path and "/." not in path:
        return path
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a route pattern to an anchored regular expression.

    Raises ``ValueError`` naming the bad part of the pattern.
    """
    if not pattern.startswith("/"):
        raise ValueError("a path pattern must start with '/'")
    if normalize_path(pattern) != pattern:
        # Requests are matched after normalization, so such a rule could
        # never match anything.
        raise ValueError("a path pattern may not contain '//', '.' or '..' segments")
    parts = pattern.split("/")[1:]
    names: set[str] = set()
    regex = ""
    for index, part in enumerate(parts):
        is_last = index == len(parts) - 1
        if part == "**" or (part.startswith("{") and part.endswith(":path}")):
            if not is_last:
                raise ValueError(f"{part!r} may only be the last segment")
            # The prefix itself, with or without a slash, and all below it.
            regex += r"(?:/.*)?"
            continue
        if part == "*":
            regex += r"/[^/]+"
        elif part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if not _SEGMENT_NAME.match(name):
                raise ValueError(f"invalid segment name {name!r}")
            if name in names:
                raise ValueError(f"segment name {name!r} is used twice")
            names.add(name)
            regex += r"/[^/]+"
        elif "{" in part or "}" in part or "*" in part:
            raise ValueError(f"invalid segment {part!r}")
        else:
            regex += "/" + re.escape(part)
    # DOTALL: a decoded path may contain a newline, and "." must match it
    # too, or "/admin/x%0A" would slip past "/admin/**".
    return re.compile((regex or "/") + r"\Z", re.DOTALL)


class Route:
    """One compiled rule: its id, pattern, methods and the policy it carries."""

    __slots__ = ("id", "methods", "pattern", "regex", "rule")

    def __init__(
        self, id: str, pattern: str, methods: Sequence[str] = (), rule: Any = None
    ) -> None:
        self.id = id
        self.pattern = pattern
        self.regex = compile_pattern(pattern)
        upper = {method.upper() for method in methods}
        if "GET" in upper:
            upper.add("HEAD")
        self.methods = frozenset(upper)
        self.rule = rule

    def matches(self, method: str, path: str) -> bool:
        """Tell whether the normalized ``path`` and ``method`` fall under this rule."""
        if self.methods and method not in self.methods:
            return False
        return self.regex.match(path) is not None

    def __repr__(self) -> str:
        methods = ",".join(sorted(self.methods)) or "*"
        return f"<Route {self.id} {methods} {self.pattern}>"


class RouteTable:
    """Ordered route rules with a bounded memo of (method, path) results."""

    __slots__ = ("_memo", "cache_size", "cached", "routes")

    def __init__(self, routes: Iterable[Route], cache_size: int = 4096) -> None:
        self.routes = tuple(routes)
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.id in seen:
                raise ConfigurationError(
                    f"routes[{index}].id", route.id, "duplicate route id"
                )
            seen.add(route.id)
        self.cache_size = cache_size
        self._memo: dict[tuple[str, str], Route | None] = {}
        # cached((method, path), default): the memoised result of match(),
        # or default. A bound dict.get, so a hit costs no Python frame.
        self.cached = self._memo.get

    def match(self, method: str, path: str) -> Route | None:
        """Return the first route that matches, or ``None``."""
        key = (method, path)
        try:
            return self._memo[key]
        except KeyError:
            pass

        normalized = normalize_path(path)
        found = None
        for route in self.routes:
            if route.matches(method, normalized):
                found = route
                break

        if len(path) <= MAX_MEMOISED_PATH:
            if len(self._memo) >= self.cache_size:
                # Evict the oldest entry. Another thread may evict the same
                # one first, which is harmless.
                try:
                    del self._memo[next(iter(self._memo))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            self._memo[key] = found
        return found
