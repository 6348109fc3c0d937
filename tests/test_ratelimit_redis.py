"""The Redis bucket store against a real redis-server: one call, atomic, safe."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from tests.support.servers import RedisServer, free_port, stop_process, wait_for_port
from wsgishield import StoreError, context, events
from wsgishield._fast import _gcra_py as python_gcra
from wsgishield._fast.gcra import MAX_EXACT
from wsgishield.middleware.ratelimit import RateLimitMiddleware
from wsgishield.policy import RedisSettings
from wsgishield.ratelimit import Limit
from wsgishield.routes import Route
from wsgishield.stores import redis as redis_connections
from wsgishield.stores.breaker import CLOSED, OPEN, CircuitBreaker
from wsgishield.stores.buckets_memory import MemoryBucketStore
from wsgishield.stores.buckets_redis import GCRA_SCRIPT, RedisBucketStore

pytestmark = pytest.mark.redis

SECOND = 1_000_000


@pytest.fixture(autouse=True)
def fresh_event_budget(monkeypatch):
    monkeypatch.setattr(events, "_limiter", events.EventLimiter())


def connect(server: RedisServer, timeout_ms: int = 50):
    return redis_connections.connect(
        RedisSettings(url=server.url, timeout_ms=timeout_ms)
    )


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def layer_on(store, limits, **options):
    layer = RateLimitMiddleware(
        hello_app,
        limits=limits,
        default=[limit.id for limit in limits],
        store=store,
        **options,
    )
    route = Route("r", "/**")

    def routed(environ, start_response):
        environ[context.ROUTE] = route
        environ.setdefault("REMOTE_ADDR", "127.0.0.1")
        return layer(environ, start_response)

    return routed


def command_calls(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()
    }


def test_one_round_trip_whatever_the_policies(shared_redis_server):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="roundtrip", deny_cache_size=0)
    limits = [
        Limit("ip", "100/second"),
        Limit("route", "100/second", key=["ip", "route"]),
        Limit("all", "1000/second", key=[]),
    ]
    app = Client(layer_on(store, limits))
    app.get("/")  # loads the script
    client.config_resetstat()

    requests = 40
    for _ in range(requests):
        assert app.get("/").status_code == 200

    calls = command_calls(client)
    calls.pop("config|resetstat", None)
    assert calls.pop("evalsha") == requests
    # TIME, GET and SET run inside the script: TIME once, the others once
    # per policy.
    assert calls.pop("time") == requests
    assert calls.pop("get") == 3 * requests
    assert calls.pop("set") == 3 * requests
    assert calls == {}


def test_every_key_has_a_ttl_and_a_tag(shared_redis_server):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="ttl")
    limits = [
        Limit("minute", "5/minute"),
        Limit("day", "1000/day", key=["ip", "route"]),
    ]
    app = Client(layer_on(store, limits))
    for _ in range(7):
        app.get("/")
    keys = client.keys("ttl:*")
    assert len(keys) == 2
    for key in keys:
        assert key.startswith(b"ttl:{127.0.0.1}:rl:")
        assert client.pttl(key) > 0


def test_script_flush_during_load_is_invisible(shared_redis_server):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="flush", deny_cache_size=0)
    app = layer_on(store, [Limit("many", "100000/second")])
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        local = Client(app)
        while not stop.is_set() and len(statuses) < 20_000:
            statuses.append(local.get("/").status_code)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(load)
        for _ in range(10):
            time.sleep(0.03)
            client.script_flush()
        stop.set()

    assert len(statuses) > 50
    assert set(statuses) == {200}


def test_denied_request_answered_locally(shared_redis_server):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="denycache")
    app = Client(layer_on(store, [Limit("one", "1/minute")]))
    assert app.get("/").status_code == 200
    assert app.get("/").status_code == 429
    client.config_resetstat()
    for _ in range(10):
        response = app.get("/")
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "evalsha" not in command_calls(client)


def test_server_time_decides_not_local_clock(shared_redis_server, monkeypatch):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="skew", deny_cache_size=0)
    limit = Limit("one", "1/hour")
    assert store.apply([limit], ["one|a"], 1, "a").allowed
    # A host whose clock runs a day ahead still gets the spent bucket.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400)
    assert not store.apply([limit], ["one|a"], 1, "a").allowed
    tat = int(client.get("skew:{a}:rl:one|a"))
    server_now = client.time()
    assert (
        abs(tat - (server_now[0] * SECOND + server_now[1]) - 3600 * SECOND)
        < 60 * SECOND
    )


def client_commands(monkeypatch, client) -> list[str]:
    """Record the name of every command sent through ``client.execute_command``."""
    names: list[str] = []
    send = client.execute_command

    def recording(*args, **options):
        names.append(str(args[0]))
        return send(*args, **options)

    monkeypatch.setattr(client, "execute_command", recording)
    return names


def test_plain_client_sends_packed_commands(shared_redis_server, monkeypatch):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="packed", deny_cache_size=0)
    limits = [Limit("ip", "100/hour"), Limit("all", "100/hour", key=[])]
    keys = ["ip|a", "all|"]
    assert store.apply(limits, keys, 1, "a").allowed  # loads the script
    sent = client_commands(monkeypatch, client)
    client.config_resetstat()
    for _ in range(5):
        assert store.apply(limits, keys, 2, "a").allowed
    # The calls bypass execute_command and still reach Redis, one EVALSHA each.
    assert sent == ["CONFIG RESETSTAT"]
    assert command_calls(client)["evalsha"] == 5
    assert int(client.get("packed:{a}:rl:ip|a")) > 0


def test_packed_keys_match_client_keys(shared_redis_server):
    """Keys packed as bytes are the keys redis-py would have sent."""
    packed = RedisBucketStore(connect(shared_redis_server), prefix="enc")
    # A single-connection client keeps client.evalsha.
    single = redis.Redis(port=shared_redis_server.port, single_connection_client=True)
    through_client = RedisBucketStore(single, prefix="enc")
    limit = Limit("one", "1/minute")
    assert packed.apply([limit], ["one|caf\u00e9"], 1, "\u00e9t\u00e9").allowed
    denied = through_client.apply([limit], ["one|caf\u00e9"], 1, "\u00e9t\u00e9")
    assert not denied.allowed
    assert single.exists("enc:{\u00e9t\u00e9}:rl:one|caf\u00e9")
    single.close()


def test_packed_call_reloads_script_after_flush(shared_redis_server):
    client = connect(shared_redis_server, timeout_ms=1000)
    store = RedisBucketStore(client, prefix="reload", deny_cache_size=0)
    limit = Limit("ten", "10/minute")
    assert store.apply([limit], ["ten|a"], 1, "a").results[0].remaining == 9
    client.script_flush()
    client.config_resetstat()
    assert store.apply([limit], ["ten|a"], 1, "a").results[0].remaining == 8
    calls = command_calls(client)
    # The first EVALSHA got NOSCRIPT and did not run; the second one ran.
    assert calls["evalsha"] == 2
    assert calls["script|load"] == 1


def test_timeout_is_not_repeated(redis_server):
    client = connect(redis_server, timeout_ms=50)
    breaker = CircuitBreaker("ratelimit", failure_threshold=1, reset_seconds=0.1)
    store = RedisBucketStore(
        client, prefix="timeout", breaker=breaker, deny_cache_size=0
    )
    limit = Limit("ten", "10/minute")
    assert store.apply([limit], ["ten|a"], 1, "a").allowed
    other = redis.Redis(port=redis_server.port)
    other.config_resetstat()
    # The server pauses every client's commands for 500 ms, then runs them.
    other.client_pause(500)
    with pytest.raises(StoreError, match="Timeout"):
        store.apply([limit], ["ten|a"], 1, "a")
    assert breaker.state == OPEN
    time.sleep(0.6)
    # The EVALSHA that timed out ran once at most, and was not sent again.
    assert command_calls(other).get("evalsha", 0) <= 1
    ran = command_calls(other).get("evalsha", 0)
    time.sleep(0.1)
    # The connection whose reply never came was dropped: a new one works.
    outcome = store.apply([limit], ["ten|a"], 1, "a")
    assert outcome.allowed
    assert outcome.results[0].remaining == 8 - ran
    other.close()
    client.close()


def test_killed_server_fails_then_recovers(redis_server):
    client = connect(redis_server, timeout_ms=200)
    breaker = CircuitBreaker("ratelimit", failure_threshold=1, reset_seconds=0.1)
    store = RedisBucketStore(client, prefix="killed", breaker=breaker)
    limit = Limit("many", "1000/second")
    assert store.apply([limit], ["many|a"], 1, "a").allowed
    redis_server.stop()
    with pytest.raises(StoreError, match="rate-limit call failed"):
        store.apply([limit], ["many|a"], 1, "a")
    assert breaker.state == OPEN
    redis_server.start()
    time.sleep(0.15)
    # The new server has no script loaded: NOSCRIPT, load, call again.
    assert store.apply([limit], ["many|a"], 1, "a").allowed
    assert breaker.state == CLOSED
    client.close()


def run_outage(server, failure_mode, outage):
    """Send requests before, during and after an outage; return what happened."""
    client = connect(server, timeout_ms=50)
    breaker = CircuitBreaker("ratelimit", failure_threshold=3, reset_seconds=0.3)
    store = RedisBucketStore(
        client, prefix="outage", breaker=breaker, deny_cache_size=0
    )
    local = MemoryBucketStore()
    limits = [Limit("three", "3/minute", failure_mode=failure_mode)]
    app = layer_on(store, limits, local_store=local, breaker_reset_seconds=0.3)

    def burst(count):
        durations, statuses = [], []

        def one(n):
            environ = {"REMOTE_ADDR": f"192.0.2.{n % 5}"}
            started = time.monotonic()
            status = Client(app).get("/", environ_base=environ).status_code
            return time.monotonic() - started, status

        with ThreadPoolExecutor(4) as pool:
            for duration, status in pool.map(one, range(count)):
                durations.append(duration)
                statuses.append(status)
        return durations, statuses

    try:
        burst(8)
        outage("start")
        durations, statuses = burst(40)
        breaker_state = breaker.state
        outage("end")
        deadline = time.monotonic() + 10
        while breaker.state != CLOSED and time.monotonic() < deadline:
            burst(4)
            time.sleep(0.05)
        return durations, statuses, breaker_state, breaker.state
    finally:
        # Close the pooled sockets now: left to the garbage collector, a
        # socket may be finalized before its connection closes it, which
        # raises a ResourceWarning.
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("failure_mode", ["open", "local", "closed"])
@pytest.mark.parametrize("outage_kind", ["killed", "black-holed"])
def test_outage_applies_failure_mode(redis_server, failure_mode, outage_kind):
    def outage(phase):
        if outage_kind == "killed":
            redis_server.stop() if phase == "start" else redis_server.start()
        else:
            redis_server.pause() if phase == "start" else redis_server.resume()

    durations, statuses, during, after = run_outage(redis_server, failure_mode, outage)

    assert 500 not in statuses
    assert during == OPEN
    assert after == CLOSED
    # Generous bound: 50 ms timeout, no retries, no reconnect storms.
    assert max(durations) < 1.0
    if failure_mode == "open":
        assert set(statuses) == {200}
    elif failure_mode == "closed":
        assert set(statuses) == {503}
    else:
        # Five clients, eight requests each, 3/minute on the local store.
        assert statuses.count(200) == 15
        assert statuses.count(429) == 25


def test_closed_failure_mode_sends_retry_after(redis_server):
    client = connect(redis_server, timeout_ms=50)
    store = RedisBucketStore(client, prefix="closed")
    app = Client(layer_on(store, [Limit("one", "5/minute", failure_mode="closed")]))
    redis_server.stop()
    response = app.get("/")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_json(force=True)["status"] == 503


def test_readonly_replica_reconnects(redis_server):
    primary = RedisServer().start()
    try:
        client = connect(redis_server, timeout_ms=1000)
        breaker = CircuitBreaker("ratelimit", failure_threshold=1, reset_seconds=0.1)
        store = RedisBucketStore(
            client, prefix="ro", breaker=breaker, deny_cache_size=0
        )
        limit = Limit("many", "1000/second")
        assert store.apply([limit], ["many|a"], 1, "a").allowed

        client.replicaof("127.0.0.1", primary.port)
        with pytest.raises(StoreError, match="READONLY"):
            store.apply([limit], ["many|a"], 1, "a")

        redis.Redis(port=redis_server.port).replicaof("NO", "ONE")
        time.sleep(0.15)
        assert store.apply([limit], ["many|a"], 1, "a").allowed
    finally:
        primary.cleanup()


@pytest.fixture
def sentinel(redis_server, tmp_path):
    """One Sentinel on loopback that monitors ``redis_server`` as ``mymaster``."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
    )
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield port
    finally:
        stop_process(process)


def test_sentinel_mode_finds_master(sentinel, monkeypatch):
    client = redis_connections.connect(
        RedisSettings(
            mode="sentinel", sentinels=[f"127.0.0.1:{sentinel}"], timeout_ms=1000
        )
    )
    store = RedisBucketStore(client, prefix="sentinel", deny_cache_size=0)
    limit = Limit("two", "2/minute")
    assert store.apply([limit], ["two|a"], 1, "a").allowed  # loads the script
    # The master's client sends packed commands, like a plain client.
    sent = client_commands(monkeypatch, client)
    decisions = [store.apply([limit], ["two|a"], 1, "a").allowed for _ in range(2)]
    assert decisions == [True, False]
    assert sent == []


_times = st.integers(min_value=1, max_value=4_000_000_000 * SECOND)


@settings(max_examples=300, deadline=None)
@given(
    stored=st.one_of(st.just(0), _times),
    now=_times,
    interval=st.integers(min_value=1, max_value=86_400 * SECOND),
    burst=st.integers(min_value=1, max_value=100_000),
    cost=st.integers(min_value=1, max_value=100_000),
)
def test_lua_script_matches_kernel(
    shared_redis_server, stored, now, interval, burst, cost
):
    # Limit() rejects larger buckets, which keeps every figure below 2**53,
    # where Lua's doubles are exact.
    assume(burst * interval <= MAX_EXACT // 4)
    client = redis.Redis(port=shared_redis_server.port)
    key = "luacheck:{a}:rl:one|a"
    client.delete(key)
    if stored:
        client.set(key, stored)
    tolerance = burst * interval
    reply = client.eval(GCRA_SCRIPT, 1, key, now, cost, interval, tolerance, 0)

    allowed, tat, remaining, retry_after, reset_after = python_gcra.update(
        stored, now, interval, tolerance, cost
    )
    assert reply == [int(allowed), remaining, retry_after, reset_after]
    assert (retry_after == 0) == allowed
    if allowed:
        # A key whose bucket refills within a millisecond may be gone already.
        assert client.get(key) in (None, str(tat).encode())
        assert client.pttl(key) != -1  # -1: a key without a TTL
    else:
        assert client.get(key) == (str(stored).encode() if stored else None)
