"""The response cache's domain: keys, freshness rules, entries and stores.

The WSGI side lives in :mod:`wsgishield.middleware.cache`; nothing here
reads or writes a WSGI environ except the key builder, which takes the
request's values from it.
"""

from __future__ import annotations

from .entry import Entry, VaryMarker
from .freshness import Storability, parse_cache_control
from .keys import KeyBuilder, canonical_query
from .memory import MemoryStore
from .store import CacheStore
from .validation import etag_matches, not_modified_since

__all__ = [
    "CacheStore",
    "Entry",
    "KeyBuilder",
    "MemoryStore",
    "Storability",
    "VaryMarker",
    "canonical_query",
    "etag_matches",
    "not_modified_since",
    "parse_cache_control",
]
