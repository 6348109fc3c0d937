from __future__ import annotations

from typing import Any

import pytest

from tests.cache_helpers import route_table
from wsgishield import ConfigurationError, Shield, load_policy
from wsgishield.middleware.cache import CacheMiddleware


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        pytest.param({"cache": {"stroe": "memory"}}, "cache.stroe", id="misspelt-key"),
        pytest.param({"cache": {"store": "disk"}}, "cache.store", id="unknown-store"),
        pytest.param(
            {"cache": {"max_entry_bytes": 0}}, "cache.max_entry_bytes", id="zero-entry"
        ),
        pytest.param(
            {"cache": {"statuses": [99]}}, "cache.statuses[0]", id="bad-status"
        ),
        pytest.param(
            {"cache": {"version": "a b"}}, "cache.version", id="space-in-version"
        ),
        pytest.param(
            {"cache": {"unkeyed_headers": "ignore"}},
            "cache.unkeyed_headers",
            id="bad-mode",
        ),
        pytest.param(
            {"routes": [{"id": "r", "path": "/", "cache": {"ttl": 0}}]},
            "routes[0].cache.ttl",
            id="zero-ttl",
        ),
        pytest.param(
            {"routes": [{"id": "r", "path": "/", "cache": {"vary": ["Bad Header"]}}]},
            "routes[0].cache.vary[0]",
            id="bad-vary-name",
        ),
    ],
)
def test_invalid_cache_policy(policy: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_policy(policy)
    assert error.value.key == key


def test_redis_store_needs_redis_section() -> None:
    policy = {
        "cache": {"store": "redis"},
        "routes": [{"id": "r", "path": "/", "cache": {}}],
    }
    with pytest.raises(ConfigurationError) as error:
        Shield(app, policy)
    assert error.value.key == "cache.store"


def test_invalid_unkeyed_mode_in_constructor() -> None:
    with pytest.raises(ConfigurationError) as error:
        CacheMiddleware(app, routes=route_table({"/": {}}), unkeyed_headers="maybe")
    assert error.value.key == "cache.unkeyed_headers"


def test_cache_is_innermost_layer() -> None:
    shield = Shield(
        app, {"cache": {}, "routes": [{"id": "r", "path": "/", "cache": {}}]}
    )
    assert isinstance(shield.layers[-1], CacheMiddleware)
