"""Automatic bans: strike counting, growth, release, stores and the middleware."""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis

from tests.support.servers import RedisServer
from wsgishield import ConfigurationError, Shield, context, events
from wsgishield.bans import Ban, Bans, MemoryBanStore, RedisBanStore
from wsgishield.middleware import AccessMiddleware
from wsgishield.middleware.access import FLOOD_EVENTS_PER_SECOND
from wsgishield.policy import BanPolicy, RedisSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Respond to ``/status/NNN`` with status NNN and to anything else with 200."""
    path = environ["PATH_INFO"]
    status = int(path[8:11]) if path.startswith("/status/") else 200
    start_response(f"{status} Status", [("Content-Type", "text/plain")])
    return [b"app"]


def request(
    app: Any, address: str, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        captured["status"] = int(status[:3])
        captured["headers"] = dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": address}
    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def value_of(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)


@pytest.fixture(autouse=True)
def fresh_event_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_limiter", events.EventLimiter())


_prefix_counter = iter(range(1_000_000))


def redis_settings(server: RedisServer) -> RedisSettings:
    # A prefix per test keeps tests on the shared server apart.
    return RedisSettings(
        url=server.url, timeout_ms=500, key_prefix=f"t{next(_prefix_counter)}"
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_bans(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    def make(**options: Any) -> Bans:
        policy = BanPolicy(store=store_kind, **options)  # type: ignore[arg-type]
        settings = None
        if store_kind == "redis":
            server = request.getfixturevalue("shared_redis_server")
            settings = redis_settings(server)
        return Bans.from_policy(policy, settings)

    yield make


# --- Counting and banning, on every store -----------------------------------


def test_threshold_starts_ban(make_bans: Any) -> None:
    bans = make_bans(threshold=5, ban_time=600)
    client = value_of("192.0.2.7")
    for _ in range(4):
        assert bans.strike(*client) == ("192.0.2.7/32", None)
    _, ban = bans.strike(*client)
    assert ban == Ban("192.0.2.7/32", 600.0, 1)
    left = bans.ban_left(*client)
    assert left is not None
    assert 590 < left <= 600
    assert bans.ban_left(*value_of("192.0.2.8")) is None


def test_banned_client_not_counted_again(make_bans: Any) -> None:
    bans = make_bans(threshold=2)
    client = value_of("192.0.2.7")
    bans.strike(*client)
    assert bans.strike(*client)[1] is not None
    assert bans.strike(*client)[1] is None


def test_ipv6_counted_per_64(make_bans: Any) -> None:
    bans = make_bans(threshold=3)
    assert bans.strike(*value_of("2001:db8:1:2::1"))[1] is None
    assert bans.strike(*value_of("2001:db8:1:2:ffff::9"))[1] is None
    subject, ban = bans.strike(*value_of("2001:db8:1:2:abcd:1234:5678:9abc"))
    assert subject == "2001:db8:1:2::/64"
    assert ban is not None
    assert bans.ban_left(*value_of("2001:db8:1:2::77")) is not None
    assert bans.ban_left(*value_of("2001:db8:1:3::1")) is None


def test_ipv4_prefix_groups_clients(make_bans: Any) -> None:
    bans = make_bans(threshold=2, ipv4_prefix=24)
    bans.strike(*value_of("198.51.100.1"))
    subject, ban = bans.strike(*value_of("198.51.100.254"))
    assert subject == "198.51.100.0/24"
    assert ban is not None


def test_weighted_strike_bans_at_once(make_bans: Any) -> None:
    bans = make_bans(threshold=50)
    assert bans.strike(*value_of("192.0.2.1"), 50)[1] is not None


def test_1000_addresses_in_one_64(make_bans: Any) -> None:
    """1,000 failing requests from random addresses of one /64: one ban."""
    bans = make_bans(threshold=100)
    app = AccessMiddleware(status_app, bans=bans)
    generator = random.Random(64)
    network = 0x2001_0DB8_0042_0007 << 64
    statuses = []
    for _ in range(1000):
        address = ipaddress.IPv6Address(network | generator.getrandbits(64))
        statuses.append(request(app, str(address), "/status/401")[0])
    assert statuses.count(401) == 100
    assert statuses.count(403) == 900
    assert statuses[:100] == [401] * 100
    assert bans.ban_left(*value_of("2001:db8:42:7:1:2:3:4")) is not None
    assert bans.ban_left(*value_of("2001:db8:42:8::1")) is None

    store = bans.store
    if isinstance(store, RedisBanStore):
        assert store.client.zcard(store.index_key) == 1
        (member,) = store.client.zrange(store.index_key, 0, -1)
        assert member.decode().startswith("2001:db8:42:7::/64|")
    else:
        assert list(store._bans) == [(6, network)]


# --- Timing, with a fake clock on the memory store ---------------------------


def memory_bans(clock: FakeClock, **options: Any) -> Bans:
    return Bans.from_policy(BanPolicy(**options), clock=clock)


def test_strikes_drain_over_window() -> None:
    clock = FakeClock()
    bans = memory_bans(clock, threshold=5, window=10)
    client = value_of("192.0.2.7")
    # One strike every 2.1 s drains faster than 5 per 10 s arrive.
    for _ in range(50):
        assert bans.strike(*client)[1] is None
        clock.now += 2.1
    for _ in range(4):
        bans.strike(*client)
        clock.now += 0.1
    assert bans.strike(*client)[1] is not None


def test_ban_released_after_time() -> None:
    clock = FakeClock()
    bans = memory_bans(clock, threshold=1, ban_time=30)
    client = value_of("192.0.2.7")
    bans.strike(*client)
    clock.now += 29.9
    assert bans.ban_left(*client) == pytest.approx(0.1)
    clock.now += 0.1
    assert bans.ban_left(*client) is None


def test_repeat_bans_grow_to_max() -> None:
    clock = FakeClock()
    bans = memory_bans(
        clock,
        threshold=1,
        ban_time=10,
        ban_multiplier=2,
        max_ban_time=35,
        repeat_window=1000,
    )
    client = value_of("192.0.2.7")
    lengths = []
    for _ in range(4):
        _, ban = bans.strike(*client)
        assert ban is not None
        lengths.append((ban.seconds, ban.offence))
        clock.now += ban.seconds
    assert lengths == [(10, 1), (20, 2), (35, 3), (35, 4)]

    clock.now += 1000
    _, ban = bans.strike(*client)
    assert ban == Ban("192.0.2.7/32", 10, 1)


def test_memory_store_bounded() -> None:
    clock = FakeClock()
    bans = memory_bans(clock, threshold=1, max_clients=100)
    for index in range(1000):
        bans.strike(4, 0x0A000000 + index)
    store = bans.store
    assert isinstance(store, MemoryBanStore)
    assert len(store._bans) == 100
    assert len(store._offences) == 100
    # The newest bans are the ones kept.
    assert bans.ban_left(4, 0x0A000000 + 999) is not None


def test_redis_store_needs_redis_section() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Bans.from_policy(BanPolicy(store="redis"), None)
    assert raised.value.key == "bans.store"


def test_bad_trap_pattern_rejected() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Bans.from_policy(BanPolicy(trap_paths=["/ok", "no-slash"]))
    assert raised.value.key == "bans.trap_paths[1]"


# --- Middleware ---------------------------------------------------------------


def ban_shield(**options: Any) -> Shield:
    policy = {"client": {"trusted_proxies": ["loopback"]}, "bans": options}
    return Shield(status_app, policy)


def via_proxy(
    shield: Shield, client: str, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        captured["status"] = int(status[:3])
        captured["headers"] = dict(headers)

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_FOR": client,
    }
    body = b"".join(shield(environ, start_response))
    return captured["status"], captured["headers"], body


STRIKE_STATUSES = [
    (401, True),
    (403, True),
    (429, True),
    (400, True),
    (422, True),
    (404, False),
    (500, False),
    (200, False),
    (302, False),
]


@pytest.mark.parametrize(
    ("status", "counts"), STRIKE_STATUSES, ids=[str(s) for s, _ in STRIKE_STATUSES]
)
def test_statuses_that_count(status: int, counts: bool) -> None:
    shield = ban_shield(threshold=3)
    for _ in range(3):
        via_proxy(shield, "192.0.2.7", f"/status/{status}")
    banned = via_proxy(shield, "192.0.2.7")[0] == 403
    assert banned is counts


def test_validation_statuses_can_be_off() -> None:
    shield = ban_shield(threshold=2, strike_validation=False)
    for _ in range(3):
        via_proxy(shield, "192.0.2.7", "/status/422")
    assert via_proxy(shield, "192.0.2.7")[0] == 200


def test_trap_path_bans_at_once() -> None:
    shield = ban_shield(threshold=20, trap_paths=["/wp-login.php", "/.env"])
    assert via_proxy(shield, "192.0.2.7", "//./wp-login.php")[0] == 200
    assert via_proxy(shield, "192.0.2.7", "/")[0] == 403
    assert via_proxy(shield, "192.0.2.8", "/")[0] == 200


def test_trap_strikes_weight() -> None:
    shield = ban_shield(threshold=20, trap_paths=["/.env"], trap_strikes=10)
    via_proxy(shield, "192.0.2.7", "/.env")
    assert via_proxy(shield, "192.0.2.7", "/")[0] == 200
    via_proxy(shield, "192.0.2.7", "/.env")
    assert via_proxy(shield, "192.0.2.7", "/")[0] == 403


def test_exempt_path_not_counted() -> None:
    shield = ban_shield(threshold=2, exempt_paths=["/status/**"])
    for _ in range(5):
        via_proxy(shield, "192.0.2.7", "/status/401")
    assert via_proxy(shield, "192.0.2.7")[0] == 200


def test_exempt_network_never_banned() -> None:
    shield = ban_shield(
        threshold=2, trap_paths=["/.env"], exempt_networks=["192.0.2.0/24"]
    )
    for _ in range(5):
        via_proxy(shield, "192.0.2.7", "/status/401")
        via_proxy(shield, "192.0.2.7", "/.env")
    assert via_proxy(shield, "192.0.2.7")[0] == 200
    via_proxy(shield, "198.51.100.1", "/.env")
    assert via_proxy(shield, "198.51.100.1")[0] == 403


def test_banned_response_403() -> None:
    shield = ban_shield(threshold=1)
    via_proxy(shield, "192.0.2.7", "/status/401")
    status, headers, body = via_proxy(shield, "192.0.2.7")
    assert status == 403
    assert headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" not in headers
    assert json.loads(body)["type"].endswith(":banned")


def test_banned_response_429_retry_after() -> None:
    shield = ban_shield(threshold=1, status=429, ban_time=90)
    via_proxy(shield, "192.0.2.7", "/status/401")
    status, headers, body = via_proxy(shield, "192.0.2.7")
    assert status == 429
    assert 89 <= int(headers["Retry-After"]) <= 90
    assert json.loads(body)["status"] == 429


def test_banned_decision_recorded() -> None:
    bans = Bans.from_policy(BanPolicy(threshold=1))
    app = AccessMiddleware(status_app, bans=bans)
    request(app, "2001:db8::1", "/status/401")
    captured: list[Any] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "2001:db8::2",
        context.TRACE: captured,
    }
    b"".join(app(environ, lambda status, headers, exc_info=None: None))
    decision = context.Decision("access", "banned", "strikes", "2001:db8::/64")
    assert environ[context.DECISION] == decision
    assert captured == [("access", "banned", decision)]


def test_strike_and_ban_events(caplog: pytest.LogCaptureFixture) -> None:
    shield = ban_shield(threshold=2)
    with caplog.at_level(logging.INFO, logger="wsgishield.events.access"):
        via_proxy(shield, "192.0.2.7", "/status/401")
        via_proxy(shield, "192.0.2.7", "/status/401")
        via_proxy(shield, "192.0.2.7", "/")
    actions = [record.event["event.action"] for record in caplog.records]  # type: ignore[attr-defined]
    assert actions == ["strike", "strike", "ban", "banned"]
    ban = caplog.records[2].event  # type: ignore[attr-defined]
    assert ban["client.ip"] == "192.0.2.7"
    assert ban["labels.subject"] == "192.0.2.7/32"
    # ECS labels are keywords, so numbers arrive as text.
    assert ban["labels.ban_seconds"] == "600.0"
    assert ban["labels.offence"] == "1"
    assert ban["event.reason"] == "status-401"
    assert ban["url.path"] == "/status/401"


def test_strike_events_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """Strikes from 3,000 distinct clients still cost a bounded number of records."""
    shield = ban_shield(threshold=10_000)
    with caplog.at_level(logging.INFO, logger="wsgishield.events.access"):
        for index in range(3000):
            via_proxy(shield, f"10.0.{index // 256}.{index % 256}", "/status/401")
    assert 1 <= len(caplog.records) <= 2 * FLOOD_EVENTS_PER_SECOND


def test_malformed_status_not_counted() -> None:
    def odd_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("abc", [])
        return [b""]

    bans = Bans.from_policy(BanPolicy(threshold=1))
    app = AccessMiddleware(odd_app, bans=bans)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "192.0.2.7"}
    b"".join(app(environ, lambda status, headers, exc_info=None: None))
    assert bans.ban_left(*value_of("192.0.2.7")) is None


POLICY_ERRORS = [
    ({"ipv6_prefix": 8}, "bans.ipv6_prefix"),
    ({"status": 404}, "bans.status"),
    ({"threshold": 0}, "bans.threshold"),
    ({"window": -1}, "bans.window"),
    ({"strike_statuses": [200]}, "bans.strike_statuses[0]"),
    ({"store": "postgres"}, "bans.store"),
    ({"exempt_networks": ["10.0.0.1/8"]}, "bans.exempt_networks"),
    ({"ban_time": 100, "max_ban_time": 10}, "bans.max_ban_time"),
]


@pytest.mark.parametrize(
    ("settings", "key"), POLICY_ERRORS, ids=[key for _, key in POLICY_ERRORS]
)
def test_policy_errors_name_key(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Shield(status_app, {"bans": settings})
    assert raised.value.key == key


def test_strike_rule_from_inner_decision() -> None:
    def rejecting_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        context.record_decision(
            environ, "ratelimit", "rate-limited", "over-limit", "login"
        )
        start_response("429 Too Many Requests", [])
        return [b""]

    bans = Bans.from_policy(BanPolicy(threshold=2))
    app = AccessMiddleware(rejecting_app, bans=bans)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("wsgishield.events.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        request(app, "192.0.2.7")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert records[0].event["rule.id"] == "login"  # type: ignore[attr-defined]
    assert records[0].event["event.reason"] == "status-429"  # type: ignore[attr-defined]


def test_app_error_not_counted() -> None:
    def failing_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("boom")

    bans = Bans.from_policy(BanPolicy(threshold=1))
    app = AccessMiddleware(failing_app, bans=bans)
    with pytest.raises(RuntimeError):
        request(app, "192.0.2.7")
    assert bans.ban_left(*value_of("192.0.2.7")) is None


# --- Redis store ----------------------------------------------------------------


def redis_bans(server: RedisServer, **options: Any) -> Bans:
    return Bans.from_policy(BanPolicy(store="redis", **options), redis_settings(server))


@pytest.mark.redis
def test_redis_keys_have_ttl(shared_redis_server: RedisServer) -> None:
    bans = redis_bans(shared_redis_server, threshold=3)
    bans.strike(*value_of("192.0.2.1"))
    bans.strike(*value_of("2001:db8::1"), 3)
    store = bans.store
    assert isinstance(store, RedisBanStore)
    keys = list(store.client.scan_iter(f"{store.key_prefix}:*"))
    assert len(keys) == 4  # strikes, offences, banned marker, index
    for key in keys:
        assert store.client.pttl(key) > 0, key


@pytest.mark.redis
def test_redis_ban_seen_by_other_process(shared_redis_server: RedisServer) -> None:
    settings = redis_settings(shared_redis_server)
    policy = BanPolicy(store="redis", threshold=2, sync_interval=0.05)
    first = Bans.from_policy(policy, settings)
    second = Bans.from_policy(policy, settings)
    client = value_of("203.0.113.5")
    assert second.ban_left(*client) is None

    first.strike(*client)
    second.strike(*client)  # strikes add up across processes
    assert first.ban_left(*client) is not None
    deadline = time.monotonic() + 5
    while second.ban_left(*client) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.ban_left(*client) is not None


@pytest.mark.redis
def test_redis_known_ban_needs_no_round_trip(
    shared_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bans = redis_bans(shared_redis_server, threshold=1, sync_interval=60)
    client = value_of("203.0.113.5")
    bans.strike(*client)
    bans.ban_left(*client)  # the first use in a process polls once
    store = bans.store
    assert isinstance(store, RedisBanStore)

    def no_redis(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Redis was called")

    monkeypatch.setattr(store.client, "evalsha", no_redis)
    monkeypatch.setattr(store.client, "execute_command", no_redis)
    for _ in range(100):
        assert bans.ban_left(*client) is not None
    assert bans.strike(*client)[1] is None


@pytest.mark.redis
def test_redis_repeat_ban_grows(shared_redis_server: RedisServer) -> None:
    bans = redis_bans(
        shared_redis_server,
        threshold=1,
        ban_time=0.2,
        ban_multiplier=3,
        max_ban_time=60,
    )
    client = value_of("203.0.113.9")
    _, ban = bans.strike(*client)
    assert ban == Ban("203.0.113.9/32", 0.2, 1)
    time.sleep(0.3)
    assert bans.ban_left(*client) is None
    _, ban = bans.strike(*client)
    assert ban is not None
    assert ban.offence == 2
    assert ban.seconds == pytest.approx(0.6)


@pytest.mark.redis
def test_redis_script_reloaded_after_flush(shared_redis_server: RedisServer) -> None:
    bans = redis_bans(shared_redis_server, threshold=2)
    bans.strike(*value_of("203.0.113.1"))
    store = bans.store
    assert isinstance(store, RedisBanStore)
    store.client.script_flush()
    assert bans.strike(*value_of("203.0.113.1"))[1] is not None


@pytest.mark.redis
def test_redis_down_falls_back_to_memory(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    bans = redis_bans(redis_server, threshold=2)
    bans.strike(*value_of("203.0.113.1"))
    redis_server.stop()

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="wsgishield.bans"):
        for _ in range(3):
            bans.strike(*value_of("203.0.113.2"))
            bans.ban_left(*value_of("203.0.113.2"))
    assert time.monotonic() - started < 5
    assert bans.ban_left(*value_of("203.0.113.2")) is not None
    assert len(caplog.records) == 1
    assert "Connection refused" in caplog.text


@pytest.mark.redis
def test_redis_ignores_malformed_index_entry(shared_redis_server: RedisServer) -> None:
    bans = redis_bans(shared_redis_server, threshold=1, sync_interval=0.05)
    store = bans.store
    assert isinstance(store, RedisBanStore)
    client = redis.Redis.from_url(shared_redis_server.url)
    client.zadd(store.index_key, {"garbage|x": 1, "not-a-network|99999999999999": 2})
    client.pexpire(store.index_key, 60_000)
    time.sleep(0.06)
    assert bans.ban_left(*value_of("203.0.113.1")) is None


@pytest.mark.redis
def test_redis_strike_learns_ban_of_other_process(
    shared_redis_server: RedisServer,
) -> None:
    settings = redis_settings(shared_redis_server)
    policy = BanPolicy(store="redis", threshold=1, sync_interval=60)
    first = Bans.from_policy(policy, settings)
    second = Bans.from_policy(policy, settings)
    client = value_of("203.0.113.77")
    second.ban_left(*client)  # polls now, then not for a minute
    assert first.strike(*client)[1] is not None
    assert second.ban_left(*client) is None

    assert second.strike(*client)[1] is None
    left = second.ban_left(*client)
    assert left is not None
    assert 590 < left <= 600
