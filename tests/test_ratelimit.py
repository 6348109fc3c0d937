"""The rate-limit layer: policies, responses, exemptions.

Every test runs on the memory store and on the shared-memory store, whose
one-call path (``prepare``/``admit``) serves the routes keyed by address.
"""

from __future__ import annotations

import json
import logging

import pytest
from werkzeug.test import Client

from wsgishield import ConfigurationError, Shield, context, events
from wsgishield.middleware.ratelimit import RateLimitMiddleware
from wsgishield.ratelimit import Limit, parse_rate
from wsgishield.routes import Route
from wsgishield.stores.buckets_memory import MemoryBucketStore
from wsgishield.stores.buckets_shm import SharedMemoryBucketStore

SECOND = 1_000_000


@pytest.fixture(autouse=True)
def fresh_event_budget(monkeypatch):
    """Give each test its own event budget, so earlier tests suppress nothing."""
    monkeypatch.setattr(events, "_limiter", events.EventLimiter())


class FakeClock:
    """A clock in microseconds that moves only when a test advances it."""

    def __init__(self, start: int = 1_000 * SECOND) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def hello_app(environ, start_response):
    headers = [("Content-Type", "text/plain")]
    origin = environ.get("HTTP_ORIGIN")
    if origin:
        headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
    start_response("200 OK", headers)
    return [b"hello"]


@pytest.fixture(autouse=True, params=["memory", "shm"])
def store_kind(request, tmp_path, monkeypatch):
    """Run each test on the memory store, then on the shared-memory store."""
    if request.param == "shm":

        def shm_store(clock):
            path = str(tmp_path / "table")
            return SharedMemoryBucketStore(slots=1024, path=path, clock=clock)

        monkeypatch.setitem(globals(), "new_store", shm_store)
    return request.param


def new_store(clock):
    """Build the store of the current test (see ``store_kind``)."""
    return MemoryBucketStore(clock=clock)


def make_layer(limits, clock=None, **options):
    """Build the layer on the current store; every request matches route ``r``."""
    store = new_store(clock=clock or FakeClock())
    layer = RateLimitMiddleware(hello_app, limits=limits, store=store, **options)
    route = Route("r", "/**")

    def routed(environ, start_response):
        environ[context.ROUTE] = route
        environ.setdefault("REMOTE_ADDR", "127.0.0.1")
        return layer(environ, start_response)

    return routed


def field_items(value: str) -> dict[str, dict[str, str]]:
    """Parse a RateLimit or RateLimit-Policy field into {name: {param: value}}."""
    items = {}
    for item in value.split(","):
        name, *params = item.strip().split(";")
        items[json.loads(name)] = dict(param.split("=") for param in params)
    return items


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", (10, SECOND)),
        ("1000/day", (1000, 86_400 * SECOND)),
        ("3/minute", (3, 60 * SECOND)),
        ("100/5 minutes", (100, 300 * SECOND)),
        ("5/h", (5, 3600 * SECOND)),
    ],
    ids=["second", "day", "minute", "five-minutes", "hour-abbreviated"],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["", "10", "10/fortnight", "0/second", "-1/second", "ten/second", "10/0s"]
)
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_bad_rate_names_key():
    with pytest.raises(ConfigurationError) as info:
        Shield(hello_app, {"limits": {"policies": {"a": {"rate": "3/fortnight"}}}})
    assert info.value.key == "limits.policies.a.rate"


def test_unknown_policy_name_rejected():
    policy = {
        "limits": {"policies": {"a": {"rate": "3/minute"}}},
        "routes": [{"id": "r", "path": "/r", "limits": ["missing"]}],
    }
    with pytest.raises(ConfigurationError) as info:
        Shield(hello_app, policy)
    assert info.value.value == "missing"


def test_policy_and_group_consume_together():
    # A route policy of 3/minute and a group policy of 10/minute: the two
    # denied requests consume nothing from the group.
    per_route = Limit("per-route", "3/minute", key=["ip", "route"])
    group = Limit("group", "10/minute")
    layer = make_layer([per_route, group], route_limits={"r": ["per-route", "group"]})
    client = Client(layer)

    statuses = [client.get("/x").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]

    last = client.get("/x")
    remaining = field_items(last.headers["RateLimit"])
    assert remaining["group"]["r"] == "7"
    assert remaining["per-route"]["r"] == "0"


def test_headers_on_admitted_response():
    layer = make_layer([Limit("ten", "10/second")], default=["ten"])
    response = Client(layer).get("/")
    assert response.status_code == 200
    assert field_items(response.headers["RateLimit-Policy"]) == {
        "ten": {"q": "10", "w": "1"}
    }
    assert field_items(response.headers["RateLimit"]) == {"ten": {"r": "9", "t": "1"}}


def test_retry_after_is_whole_seconds_and_enough():
    clock = FakeClock()
    layer = make_layer([Limit("slow", "2/7 seconds")], clock=clock, default=["slow"])
    client = Client(layer)
    assert client.get("/").status_code == 200
    assert client.get("/").status_code == 200
    clock.advance(0.25)

    denied = client.get("/")
    assert denied.status_code == 429
    retry = int(denied.headers["Retry-After"])
    assert retry == 4  # 3.5 s refill minus 0.25 s, rounded up

    clock.advance(3.2)
    assert client.get("/").status_code == 429
    clock.advance(retry - 3.2)
    assert client.get("/").status_code == 200


def test_rejection_is_problem_json():
    layer = make_layer([Limit("one", "1/minute")], default=["one"])
    client = Client(layer)
    client.get("/")
    response = client.get("/")
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json(force=True)
    assert body["status"] == 429
    assert body["type"].endswith("rate-limited")


def test_rejection_records_decision_and_event(caplog):
    layer = make_layer([Limit("one", "1/minute")], default=["one"])
    environs = []

    def capture(environ, start_response):
        environs.append(environ)
        return layer(environ, start_response)

    client = Client(capture)
    client.get("/")
    with caplog.at_level(logging.WARNING, logger="wsgishield.events.ratelimit"):
        client.get("/")
    decision = environs[-1][context.DECISION]
    assert decision == context.Decision(
        "ratelimit", "rate-limited", "limit-exceeded", "one"
    )
    event = caplog.records[-1].event
    assert event["event.action"] == "rate-limited"
    assert event["rule.id"] == "one"


def test_head_rejection_has_no_body():
    layer = make_layer([Limit("one", "1/minute")], default=["one"])
    client = Client(layer)
    client.head("/")
    response = client.head("/")
    assert response.status_code == 429
    assert response.data == b""


def test_cost_above_burst_is_never_admissible():
    layer = make_layer([Limit("small", "5/minute")], route_limits={"r": (["small"], 6)})
    response = Client(layer).get("/")
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.get_json(force=True)["type"].endswith("cost-exceeds-burst")


def test_cost_above_burst_after_skipped_policy():
    # An anonymous request skips the identity policy, which is also smaller
    # than the cost. The address policy must still reject it as too costly.
    user = Limit("user", "2/minute", key=["identity"])
    small = Limit("small", "3/minute")
    layer = make_layer([user, small], route_limits={"r": (["user", "small"], 5)})
    client = Client(layer)
    for _ in range(2):
        response = client.get("/")
        assert response.status_code == 429
        assert "Retry-After" not in response.headers
        assert response.get_json(force=True)["type"].endswith("cost-exceeds-burst")


def test_cost_consumes_tokens():
    layer = make_layer([Limit("five", "5/minute")], route_limits={"r": (["five"], 2)})
    client = Client(layer)
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]


def test_shadow_policy_counts_but_never_denies(caplog):
    layer = make_layer([Limit("trial", "1/minute", shadow=True)], default=["trial"])
    client = Client(layer)
    with caplog.at_level(logging.INFO, logger="wsgishield.events.ratelimit"):
        statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    actions = [record.event["event.action"] for record in caplog.records]
    assert actions == ["shadow-rate-limited", "shadow-rate-limited"]


def test_browser_preflight_not_counted_and_429_keeps_cors():
    layer = make_layer([Limit("two", "2/minute")], default=["two"])
    client = Client(layer)
    origin = {"Origin": "https://app.example"}
    preflight = {**origin, "Access-Control-Request-Method": "GET"}

    assert client.options("/", headers=preflight).status_code == 200
    assert client.get("/", headers=origin).status_code == 200
    assert client.options("/", headers=preflight).status_code == 200
    assert client.get("/", headers=origin).status_code == 200

    denied = client.get("/", headers=origin)
    assert denied.status_code == 429
    assert denied.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Retry-After" in denied.headers["Access-Control-Expose-Headers"]


def test_configured_cors_origin_on_first_429():
    layer = make_layer(
        [Limit("zero", "1/minute")],
        default=["zero"],
        cors_origins=["https://a.example"],
    )
    client = Client(layer)
    client.get("/")
    denied = client.get("/", headers={"Origin": "https://a.example"})
    assert denied.headers["Access-Control-Allow-Origin"] == "https://a.example"
    other = client.get("/", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_counted_preflight_when_configured():
    layer = make_layer(
        [Limit("one", "1/minute")], default=["one"], count_preflight=True
    )
    client = Client(layer)
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    assert client.options("/", headers=preflight).status_code == 200
    assert client.options("/", headers=preflight).status_code == 429


def test_exempt_paths_and_networks():
    layer = make_layer(
        [Limit("one", "1/minute")],
        default=["one"],
        exempt_paths=["/health"],
        exempt_networks=["10.0.0.0/8"],
    )
    shield = Shield(layer)  # adds the client address for the network check
    client = Client(shield)
    for _ in range(3):
        assert client.get("/health").status_code == 200
        assert (
            client.get("/", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
        )


def test_ipv6_clients_grouped_by_prefix():
    layer = make_layer([Limit("one", "1/minute")], default=["one"])
    client = Client(Shield(layer))
    first = {"REMOTE_ADDR": "2001:db8:1:2::1"}
    same_64 = {"REMOTE_ADDR": "2001:db8:1:2:ffff::9"}
    other_64 = {"REMOTE_ADDR": "2001:db8:1:3::1"}
    assert client.get("/", environ_base=first).status_code == 200
    assert client.get("/", environ_base=same_64).status_code == 429
    assert client.get("/", environ_base=other_64).status_code == 200


def test_spoofed_forwarded_for_does_not_change_key():
    policy = {
        "client": {"trusted_proxies": ["10.0.0.1"]},
        "limits": {
            "store": "memory",
            "policies": {"one": {"rate": "1/minute"}},
            "default": ["one"],
        },
    }
    client = Client(Shield(hello_app, policy))
    peer = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/", environ_base=peer).status_code == 200
    for spoof in ("198.51.100.1", "10.0.0.1", "2001:db8::1", "garbage"):
        response = client.get(
            "/", environ_base=peer, headers={"X-Forwarded-For": spoof}
        )
        assert response.status_code == 429, spoof


def test_identity_key_needs_identity():
    class Identity:
        def __init__(self, subject):
            self.subject = subject

    layer = make_layer([Limit("user", "1/minute", key=["identity"])], default=["user"])

    def with_identity(subject):
        def app(environ, start_response):
            if subject is not None:
                environ[context.IDENTITY] = Identity(subject)
            return layer(environ, start_response)

        return Client(app)

    assert with_identity("alice").get("/").status_code == 200
    assert with_identity("alice").get("/").status_code == 429
    assert with_identity("bob").get("/").status_code == 200
    # Anonymous requests are not limited by an identity policy.
    assert with_identity(None).get("/").status_code == 200
    assert "RateLimit" not in with_identity(None).get("/").headers
    # Hostile subjects become digests: no braces or separators in the key.
    hostile = "}{evil|" + "x" * 500
    assert with_identity(hostile).get("/").status_code == 200
    assert with_identity(hostile).get("/").status_code == 429


def test_api_key_limit_keeps_no_secret():
    store = MemoryBucketStore(clock=FakeClock())
    layer = RateLimitMiddleware(
        hello_app,
        limits=[Limit("key", "1/minute", key=["api-key"])],
        default=["key"],
        store=store,
    )
    client = Client(layer)
    assert client.get("/", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/", headers={"X-API-Key": "s3cret"}).status_code == 429
    assert client.get("/", headers={"X-API-Key": "other"}).status_code == 200
    assert not any("s3cret" in key for key in store._tats)


def test_x_ratelimit_dialect():
    layer = make_layer(
        [Limit("ten", "10/minute"), Limit("two", "2/minute")],
        default=["ten", "two"],
        headers="x-ratelimit",
    )
    response = Client(layer).get("/")
    assert response.headers["X-RateLimit-Limit"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert int(response.headers["X-RateLimit-Reset"]) > 1_600_000_000
    assert "RateLimit" not in response.headers


def test_global_limit_applies_to_every_route():
    policy = {
        "limits": {
            "store": "memory",
            "policies": {
                "all": {"rate": "3/minute", "key": []},
                "own": {"rate": "9/minute"},
            },
            "global": ["all"],
        },
        "routes": [
            {"id": "a", "path": "/a", "limits": ["own"]},
            {"id": "b", "path": "/b"},
        ],
    }
    client = Client(Shield(hello_app, policy))
    statuses = [
        client.get(path, environ_base={"REMOTE_ADDR": f"192.0.2.{n}"}).status_code
        for n, path in enumerate(["/a", "/b", "/c", "/a", "/b"])
    ]
    assert statuses == [200, 200, 200, 429, 429]


def test_no_limits_section_adds_no_layer():
    shield = Shield(hello_app, {})
    assert not any(isinstance(layer, RateLimitMiddleware) for layer in shield.layers)


def test_memory_store_never_evicts_limited_keys():
    clock = FakeClock()
    store = MemoryBucketStore(max_keys=16, clock=clock)
    limit = Limit("one", "1/minute")
    for n in range(16):
        assert store.apply([limit], [f"one|k{n}"], 1).allowed
    # The table is full of spent buckets: new keys share the overflow bucket.
    assert store.apply([limit], ["one|new-1"], 1).allowed
    assert not store.apply([limit], ["one|new-2"], 1).allowed
    # Limited keys stay limited.
    assert not store.apply([limit], ["one|k0"], 1).allowed
    assert len(store) <= 17

    clock.advance(61)
    assert store.apply([limit], ["one|new-3"], 1).allowed
    assert not store.apply([limit], ["one|new-3"], 1).allowed
    assert len(store) == 1


def test_hostile_requests_never_500():
    layer = make_layer(
        [Limit("ip", "100/minute"), Limit("key", "100/minute", key=["api-key", "ip"])],
        default=["ip", "key"],
    )
    client = Client(Shield(layer))
    cases = [
        {"REMOTE_ADDR": ""},
        {"REMOTE_ADDR": "not-an-address"},
        {"REMOTE_ADDR": "::1%eth0"},
        {"REMOTE_ADDR": "1.2.3.4", "HTTP_X_API_KEY": "\x00\xff" * 4000},
        {"REMOTE_ADDR": "1.2.3.4", "HTTP_ORIGIN": "null"},
        {"REMOTE_ADDR": "1.2.3.4", "HTTP_ORIGIN": "https://" + "a" * 10_000},
        {"REMOTE_ADDR": "1.2.3.4", "HTTP_X_API_KEY": "\udcff\u2603"},
    ]
    for environ in cases:
        assert client.get("/", environ_base=environ).status_code == 200


@pytest.mark.parametrize("mixed", [False, True], ids=["address-only", "mixed-keys"])
def test_shm_store_rejects_over_32_policies(mixed):
    policies = {f"p{n}": {"rate": "10/second"} for n in range(32)}
    if mixed:
        policies["p0"]["key"] = ["ip", "route"]
    limits = {"store": "shm", "policies": policies, "global": ["p0"]}
    routes = [{"id": "wide", "path": "/wide", "limits": list(policies)[1:]}]
    # 1 global and 31 own policies fit in one kernel call.
    Shield(hello_app, {"limits": limits, "routes": routes})

    limits["default"] = list(policies)
    with pytest.raises(ConfigurationError) as info:
        Shield(hello_app, {"limits": limits, "routes": routes})
    assert info.value.key == "limits.default"
    assert "at most 32 policies" in str(info.value)


ONE = {"one": {"rate": "1/second"}}


@pytest.mark.parametrize(
    ("limits", "routes", "key"),
    [
        (
            {"policies": {"a": {"rate": "1/s", "key": ["ip", "ip"]}}},
            [],
            "limits.policies.a.key",
        ),
        ({"policies": ONE, "global": ["missing"]}, [], "limits.global"),
        ({"policies": ONE, "default": ["missing"]}, [], "limits.default"),
        ({"policies": ONE, "store": "redis"}, [], "limits.store"),
        (
            {"policies": ONE, "exempt_networks": ["10.0.0.1/8"]},
            [],
            "limits.exempt_networks",
        ),
        ({"policies": ONE, "exempt_paths": ["health"]}, [], "limits.exempt_paths[0]"),
        (
            {"policies": ONE},
            [{"id": "x", "path": "/x"}, {"id": "y", "path": "/y", "limits": ["zz"]}],
            "routes[1].limits",
        ),
    ],
    ids=[
        "repeated-key-part",
        "unknown-global",
        "unknown-default",
        "redis-without-settings",
        "host-bits-set",
        "relative-exempt-path",
        "unknown-route-policy",
    ],
)
def test_configuration_errors_name_key(limits, routes, key):
    with pytest.raises(ConfigurationError) as info:
        Shield(hello_app, {"limits": limits, "routes": routes})
    assert info.value.key == key


@pytest.mark.parametrize("cost", [0, -1, 1_000_001])
def test_route_cost_out_of_range_rejected(cost):
    with pytest.raises(ConfigurationError, match="cost"):
        RateLimitMiddleware(
            hello_app,
            limits=[Limit("one", "1/minute")],
            route_limits={"r": (["one"], cost)},
        )
