"""Every bucket store gives the same decisions; shared stores stay exact under load."""

from __future__ import annotations

import glob
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from tests.support.servers import REPOSITORY, GunicornServer
from wsgishield import StoreError, _fast
from wsgishield.policy import RedisSettings
from wsgishield.ratelimit import BucketResult, Limit
from wsgishield.stores import redis as redis_connections
from wsgishield.stores.buckets_memory import MemoryBucketStore
from wsgishield.stores.buckets_redis import RedisBucketStore
from wsgishield.stores.buckets_shm import (
    SharedMemoryBucketStore,
    remove_tables,
    table_path,
)

SECOND = 1_000_000
START = 1_700_000_000 * SECOND

STORES = [
    "memory",
    "shm-compiled",
    "shm-python",
    pytest.param("redis", marks=pytest.mark.redis),
]


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


def shm_store(tmp_path, mode: str, clock=None, slots: int = 1024):
    """A shared-memory store on ``mode``'s twin of the table kernel."""
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    return SharedMemoryBucketStore(
        slots=slots,
        path=str(tmp_path / f"table-{mode}"),
        clock=clock or FakeClock(),
        table_class=load_twin("shm", mode).SharedTable,
    )


def make_store(kind: str, tmp_path, clock, request):
    if kind == "memory":
        return MemoryBucketStore(clock=clock)
    if kind.startswith("shm"):
        return shm_store(tmp_path, kind.split("-")[1], clock)
    server = request.getfixturevalue("shared_redis_server")
    client = redis_connections.connect(RedisSettings(url=server.url, timeout_ms=1000))
    prefix = f"diff{random.randrange(10**9)}"
    return RedisBucketStore(client, prefix=prefix, deny_cache_size=0, server_time=clock)


@pytest.mark.parametrize("kind", STORES)
def test_stores_decide_identically(kind, tmp_path, request):
    limits = [
        Limit("fast", "5/second", burst=8),
        Limit("slow", "20/minute"),
        Limit("shadow", "2/second", shadow=True),
    ]
    keys = ["fast|a", "slow|a", "shadow|a"]
    rng = random.Random(1234)
    steps = [
        (rng.randrange(0, SECOND // 2), rng.choice([1, 1, 1, 2, 3])) for _ in range(300)
    ]

    reference_clock = FakeClock()
    reference = MemoryBucketStore(clock=reference_clock)
    clock = FakeClock()
    store = make_store(kind, tmp_path, clock, request)

    for step, cost in steps:
        reference_clock.now += step
        clock.now += step
        expected = reference.apply(limits, keys, cost)
        got = store.apply(limits, keys, cost, "a")
        assert got.allowed == expected.allowed
        for mine, theirs in zip(got.results, expected.results, strict=True):
            assert (
                mine.allowed,
                mine.remaining,
                mine.retry_after,
                mine.reset_after,
            ) == (
                theirs.allowed,
                theirs.remaining,
                theirs.retry_after,
                theirs.reset_after,
            )


def hammer(kind, path_or_url, limit_args, seconds, results):
    """Run 16 threads against one key for ``seconds``; report admissions.

    On the shm store, even threads take the one-call path (``admit``) and
    odd ones ``apply``, so both paths contend for the same bucket.
    """
    limit = Limit(*limit_args)
    if kind == "shm":
        store = SharedMemoryBucketStore(slots=1024, path=path_or_url)
        plan = store.prepare([limit], 1, fields=True)
    else:
        client = redis_connections.connect(
            RedisSettings(url=path_or_url, timeout_ms=2000)
        )
        store = RedisBucketStore(client, prefix="hammer", deny_cache_size=0)
    admitted = [0] * 16
    errors = [0] * 16
    deadline = time.monotonic() + seconds

    def worker(index):
        one_call = kind == "shm" and index % 2 == 0
        while time.monotonic() < deadline:
            try:
                if one_call:
                    admitted[index] += store.admit(plan, "key") is not None
                else:
                    outcome = store.apply([limit], ["one|key"], 1, "key")
                    admitted[index] += outcome.allowed
            except Exception:
                errors[index] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((sum(admitted), sum(errors)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["shm", pytest.param("redis", marks=pytest.mark.redis)]
)
def test_four_processes_never_exceed_rate(kind, tmp_path, request):
    if kind == "shm":
        target = str(tmp_path / "hammer-table")
    else:
        target = request.getfixturevalue("shared_redis_server").url
    rate, burst = 200, 20
    limit_args = ("one", f"{rate}/second")
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    started = time.monotonic()
    processes = [
        context.Process(
            target=hammer, args=(kind, target, (*limit_args,), 1.5, results)
        )
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    totals = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    elapsed = time.monotonic() - started

    admitted = sum(total for total, _ in totals)
    errors = sum(error for _, error in totals)
    assert errors == 0
    assert admitted <= rate + rate * elapsed + 1  # burst defaults to the rate
    assert admitted >= burst


def test_killed_worker_never_wedges_table(tmp_path, kernel_mode):
    store = shm_store(tmp_path, kernel_mode)
    store.clock = MemoryBucketStore().clock
    limit = Limit("many", "1000000/second")
    path = str(tmp_path / f"table-{kernel_mode}")
    context = multiprocessing.get_context("fork")

    def spin():
        child = SharedMemoryBucketStore(
            slots=1024, path=path, table_class=load_twin("shm", kernel_mode).SharedTable
        )
        while True:
            child.apply([limit], ["many|k"], 1)

    store.apply([limit], ["many|k"], 1)  # creates the table
    for _ in range(5):
        process = context.Process(target=spin)
        process.start()
        time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.join()

    done = threading.Event()

    def check():
        store.apply([limit], ["many|k"], 1)
        done.set()

    threading.Thread(target=check, daemon=True).start()
    assert done.wait(10), "the table stayed locked after a worker was killed"


def test_full_shm_table_never_evicts_limited_keys(tmp_path, kernel_mode):
    clock = FakeClock()
    store = shm_store(tmp_path, kernel_mode, clock)
    limit = Limit("one", "1/minute")
    placed = [n for n in range(3000) if store.apply([limit], [f"one|k{n}"], 1).allowed]
    # 1,024 slots: the rest shared one overflow bucket, which admitted one.
    assert len(placed) <= 1024 + 1
    for n in placed[:200]:
        assert not store.apply([limit], [f"one|k{n}"], 1).allowed
    clock.now += 61 * SECOND
    assert store.apply([limit], ["one|fresh"], 1).allowed


@pytest.mark.slow
@pytest.mark.gunicorn
def test_gunicorn_four_workers_enforce_once():
    server = GunicornServer(
        "tests.support.ratelimit_app:app",
        config=str(REPOSITORY / "deploy" / "gunicorn.conf.py"),
        workers=4,
        env={"RATELIMIT_RATE": "5/day"},
    ).start()
    assert server.process is not None
    arbiter = server.process.pid
    try:
        statuses = []
        for _ in range(20):
            # A fresh connection each time, so requests spread over workers.
            with requests.Session() as session:
                response = session.get(
                    server.url + "/", headers={"Connection": "close"}, timeout=10
                )
                statuses.append(response.status_code)
        assert statuses.count(200) == 5, server.log()
        assert statuses.count(429) == 15
        assert glob.glob(table_path(arbiter, 1 << 18))
    finally:
        server.stop()
    # The on_exit hook of wsgishield.gunicorn removed the table.
    assert not glob.glob(table_path(arbiter, 1 << 18))
    remove_tables(arbiter)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2 * SECOND),
            st.integers(min_value=1, max_value=4),
            st.integers(min_value=0, max_value=40),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_shm_twins_agree(tmp_path_factory, steps):
    if _fast.NO_EXTENSIONS:
        return
    directory = tmp_path_factory.mktemp("twins")
    clocks = [FakeClock(), FakeClock()]
    stores = [
        SharedMemoryBucketStore(
            slots=1024,
            path=str(directory / mode),
            clock=clock,
            table_class=load_twin("shm", mode).SharedTable,
        )
        for mode, clock in zip(["compiled", "python"], clocks, strict=True)
    ]
    limits = [Limit("fast", "4/second"), Limit("slow", "30/minute", shadow=True)]
    for step, cost, client in steps:
        keys = [f"fast|c{client}", f"slow|c{client % 7}"]
        outcomes = []
        for store, clock in zip(stores, clocks, strict=True):
            clock.now += step
            outcomes.append(store.apply(limits, keys, cost))
        assert outcomes[0] == outcomes[1]


def test_unusable_shm_table_applies_failure_mode(tmp_path, caplog):
    # A directory where the table file should be: mapping it fails.
    (tmp_path / "table").mkdir()
    store = SharedMemoryBucketStore(slots=1024, path=str(tmp_path / "table"))
    with (
        caplog.at_level(logging.ERROR, logger="wsgishield.ratelimit"),
        pytest.raises(StoreError),
    ):
        store.apply([Limit("one", "1/minute")], ["one|a"], 1)
    assert "shared-memory bucket table failed" in caplog.text


@pytest.mark.gunicorn
def test_stale_table_of_reused_pid_not_inherited(tmp_path):
    """A table left by a killed arbiter must not carry buckets into a new one
    that happens to get the same pid: on_starting removes it."""
    from wsgishield import gunicorn as gunicorn_settings

    stale = Path(table_path(os.getpid(), 1 << 18))
    stale.write_bytes(b"stale")
    try:
        gunicorn_settings.on_starting(object())
        assert not stale.exists()
    finally:
        stale.unlink(missing_ok=True)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=()), max_size=80))
def test_shm_key_hash_twins_agree(text):
    # The compiled kernel hashes ASCII keys in place and encodes the others,
    # lone surrogates included; both must give the twin's value.
    if _fast.NO_EXTENSIONS:
        return
    compiled = load_twin("shm", "compiled").key_hash
    python = load_twin("shm", "python").key_hash
    assert compiled(text) == python(text)


@pytest.mark.parametrize("mode", ["compiled", "python"])
def test_shm_table_builds_the_result_type(tmp_path, mode):
    store = shm_store(tmp_path, mode)
    outcome = store.apply([Limit("one", "2/minute")], ["one|a"], 1)
    (result,) = outcome.results
    assert type(result) is BucketResult
    assert result == (True, START + 30 * SECOND, 1, 0, 30 * SECOND)
    with pytest.raises(TypeError):
        load_twin("shm", mode).SharedTable(None, -1, 1024, result=list)


@pytest.mark.parametrize("mode", ["compiled", "python"])
def test_shm_clock_is_clock_monotonic_in_microseconds(mode):
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    clock = load_twin("shm", mode).monotonic_microseconds
    before = time.monotonic_ns() // 1000
    now = clock()
    after = time.monotonic_ns() // 1000
    assert type(now) is int
    assert before <= now <= after


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2 * SECOND),
            st.integers(min_value=0, max_value=30),
        ),
        min_size=1,
        max_size=60,
    ),
    cost=st.integers(min_value=1, max_value=3),
)
@pytest.mark.parametrize("kind", ["memory", "shm-compiled", "shm-python"])
def test_admit_matches_apply(tmp_path_factory, kind, steps, cost):
    """The one-call path decides, stores and formats as apply does."""
    if kind == "shm-compiled" and _fast.NO_EXTENSIONS:
        return
    from wsgishield.middleware.ratelimit import RateLimitMiddleware

    limits = [Limit("fast", "4/second", burst=6), Limit("daily", "50/day")]
    clocks = [FakeClock(), FakeClock()]
    admitting, applying = (
        make_store(kind, tmp_path_factory.mktemp(name), clock, None)
        for name, clock in zip(["admit", "apply"], clocks, strict=True)
    )
    plan = admitting.prepare(limits, cost, fields=True)
    layer = RateLimitMiddleware(None, limits=limits, store=applying)
    for step, client in steps:
        for clock in clocks:
            clock.now += step
        keys = [f"{limit.id}|192.0.2.{client}" for limit in limits]
        fields = admitting.admit(plan, f"192.0.2.{client}")
        outcome = applying.apply(limits, keys, cost)
        assert (fields is not None) == outcome.allowed
        if fields is not None:
            assert fields == layer._header_fields(limits, outcome.results)
    # Both stores hold the same buckets afterwards.
    for client in range(31):
        keys = [f"{limit.id}|192.0.2.{client}" for limit in limits]
        assert admitting.apply(limits, keys, 1) == applying.apply(limits, keys, 1)


@pytest.mark.parametrize("mode", ["compiled", "python"])
def test_shm_admission_options(tmp_path, mode):
    kernel = load_twin("shm", mode)
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    store = shm_store(tmp_path, mode)
    quiet = kernel.Admission([Limit("one", "2/minute")], 1, fields=False)
    assert store.admit(quiet, "192.0.2.1") == []
    assert store.admit(quiet, "192.0.2.1") == []
    assert store.admit(quiet, "192.0.2.1") is None
    # A non-ASCII client part hashes like its UTF-8 key on the general path.
    plan = kernel.Admission([Limit("one", "1/minute")], 1)
    assert store.admit(plan, "clé") == [
        ("RateLimit-Policy", '"one";q=1;w=60'),
        ("RateLimit", '"one";r=0;t=60'),
    ]
    assert not store.apply([Limit("one", "1/minute")], ["one|clé"], 1).allowed
    with pytest.raises(ValueError, match="shadow"):
        kernel.Admission([Limit("try", "1/minute", shadow=True)], 1)
    with pytest.raises(ValueError, match="policies"):
        kernel.Admission([], 1)


def test_shm_kernel_survives_failed_admission_init(tmp_path):
    """A plan whose __init__ failed, or never ran, must not reach the C arrays."""
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    # A child process, so that a crash fails this test instead of the run.
    code = f"""
from wsgishield._fast import _shm_c
from wsgishield.ratelimit import Limit
from wsgishield.stores.buckets_shm import SharedMemoryBucketStore

store = SharedMemoryBucketStore(
    slots=1024, path={str(tmp_path / "table")!r}, table_class=_shm_c.SharedTable
)
plan = _shm_c.Admission([Limit("one", "1/minute")], 1)
many = [Limit(f"p{{n}}", "1/minute") for n in range(200)]
shadow = [Limit("a", "1/minute"), Limit("b", "1/minute", shadow=True)]
for limits in (many, shadow):
    try:
        plan.__init__(limits, 1)
    except ValueError:
        pass
    try:
        store.admit(plan, "192.0.2.1")
    except ValueError as exc:
        print(exc)
try:
    store.admit(_shm_c.Admission.__new__(_shm_c.Admission), "192.0.2.1")
except ValueError as exc:
    print(exc)
try:
    _shm_c.SharedTable.__new__(_shm_c.SharedTable).apply([], [], 1, 0)
except ValueError as exc:
    print(exc)
"""
    child = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert len(lines) == 4
    for line in lines[:3]:
        assert line.startswith("the admission contains no policies")
    assert lines[3].startswith("the shared table is not initialized")


def test_shm_admit_on_unusable_table_defers_to_apply(tmp_path):
    (tmp_path / "table").mkdir()
    store = SharedMemoryBucketStore(slots=1024, path=str(tmp_path / "table"))
    plan = store.prepare([Limit("one", "1/minute")], 1, fields=True)
    assert store.admit(plan, "192.0.2.1") is None
