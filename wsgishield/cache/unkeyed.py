"""Record which request headers an application reads.

:class:`WatchedEnviron` is the environ the cache hands to the app on a miss.
It is a ``dict`` subclass, so every WSGI framework accepts it, and it notes
each ``HTTP_*`` key looked up through ``[]``, ``get`` or ``in``.

NOTE: a scan over all keys (``items()``) is not recorded, because the cache
cannot tell which of the headers the app then used, and counting them all
would refuse nearly every response. Werkzeug scans this way for
``headers.getlist`` and so for ``request.cookies``; header reads by name
(``request.headers.get("X-Foo")``, ``request.headers["X-Foo"]``) are seen.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WatchedEnviron"]


class WatchedEnviron(dict[str, Any]):
    """A WSGI environ that records the request headers read from it."""

    __slots__ = ("reads",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key[:5] == "HTTP_":
            self.reads.add(key)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if key[:5] == "HTTP_":
            self.reads.add(key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key[:5] == "HTTP_":
            self.reads.add(key)
        return dict.__contains__(self, key)

    def copy(self) -> WatchedEnviron:
        # The copy shares the record, so reads through it still count.
        clone = WatchedEnviron(self)
        clone.reads = self.reads
        return clone
