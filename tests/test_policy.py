"""Policy loading: TOML, mappings and structs, with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wsgishield import ConfigurationError, Policy, Shield, load_policy
from wsgishield.policy import ClientPolicy, RouteRule


def test_empty_policy_trusts_nothing() -> None:
    policy = load_policy(None)
    assert policy == Policy()
    assert policy.client.trusted_proxies == []
    assert policy.routes == []


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text(
        '[client]\ntrusted_proxies = ["loopback"]\nhops = 1\n\n'
        '[[routes]]\nid = "health"\npath = "/health"\nmethods = ["GET"]\n'
    )
    policy = load_policy(path)
    assert policy.client.trusted_proxies == ["loopback"]
    assert policy.client.hops == 1
    assert policy.routes[0].id == "health"
    assert load_policy(str(path)) == policy


def test_struct_passes_through() -> None:
    policy = Policy(
        client=ClientPolicy(trusted_proxies=["10.0.0.0/8"]),
        routes=[RouteRule(id="a", path="/a")],
    )
    assert load_policy(policy) is policy


BAD_POLICIES = [
    ("wrong-type", {"client": {"hops": "2"}}, "client.hops", "2"),
    ("out-of-range", {"client": {"hops": 99}}, "client.hops", 99),
    (
        "unknown-key",
        {"client": {"trusted_proxy": ["x"]}},
        "client.trusted_proxy",
        ["x"],
    ),
    ("unknown-section", {"clients": {}}, "clients", {}),
    (
        "bad-enum",
        {"client": {"source": "true-client-ip"}},
        "client.source",
        "true-client-ip",
    ),
    (
        "route-id",
        {"routes": [{"id": "has space", "path": "/"}]},
        "routes[0].id",
        "has space",
    ),
    (
        "route-method",
        {"routes": [{"id": "a", "path": "/", "methods": ["GE T"]}]},
        "routes[0].methods[0]",
        "GE T",
    ),
    ("missing-path", {"routes": [{"id": "a"}]}, "routes[0]", {"id": "a"}),
    ("bool-is-not-int", {"route_cache_size": True}, "route_cache_size", True),
]


@pytest.mark.parametrize(
    ("raw", "key", "value"),
    [case[1:] for case in BAD_POLICIES],
    ids=[case[0] for case in BAD_POLICIES],
)
def test_bad_policy_names_key_and_value(
    raw: dict[str, Any], key: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_policy(raw)
    assert raised.value.key == key
    assert raised.value.value == value
    assert key in str(raised.value)


def test_invalid_toml_is_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[client\n")
    with pytest.raises(ConfigurationError, match="invalid TOML"):
        load_policy(path)


def test_missing_file_is_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No such file"):
        load_policy(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("routes", "key"),
    [
        ([{"id": "a", "path": "no-slash"}], "routes[0].path"),
        ([{"id": "a", "path": "/**/x"}], "routes[0].path"),
        ([{"id": "a", "path": "/{bad name}"}], "routes[0].path"),
        ([{"id": "a", "path": "/a"}, {"id": "a", "path": "/b"}], "routes[1].id"),
    ],
    ids=["no-leading-slash", "rest-not-last", "bad-segment-name", "duplicate-id"],
)
def test_bad_routes_fail_at_start(routes: list[dict[str, Any]], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Shield(lambda environ, start_response: [], {"routes": routes})
    assert raised.value.key == key


def test_policy_is_immutable() -> None:
    policy = load_policy({"client": {"hops": 1}})
    with pytest.raises(AttributeError):
        policy.client.hops = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw",
    [
        {"redis": {"urll": "redis://default:hunter2@cache:6379/0"}},
        {"redis": "redis://user:hunter2@cache:6379/0"},
        {"redis": {"url": ["rediss://:hunter2@cache:6379/0"]}},
    ],
    ids=["unknown-key", "wrong-type", "list"],
)
def test_errors_never_show_url_password(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_policy(raw)
    assert "hunter2" not in str(raised.value)
    assert "***@" in str(raised.value)


@pytest.mark.parametrize(
    ("redis", "key"),
    [
        ({"url": "ftp://cache"}, "redis.url"),
        ({"sentinels": ["not a host"]}, "redis.sentinels[0]"),
        ({"sentinels": ["sentinel-1"]}, "redis.sentinels[0]"),
    ],
    ids=["url-scheme", "sentinel-spaces", "sentinel-no-port"],
)
def test_redis_settings_validated(redis: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_policy({"redis": redis})
    assert raised.value.key == key
