"""The request tally kernel: both twins, one table, and hypothesis agreement."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import load_twin
from wsgishield import _fast, context
from wsgishield.routes import Route

BOUNDS = (0.01, 0.1, 1.0, math.inf)
ITEMS = Route("items", "/items/{id}")
# counter at slot 1, histogram sum at 2 and its 4 buckets at 3..6
TABLE_SLOTS = (1, 2)
IN_FLIGHT = 0
SIZE = 7


class CountingLock:
    """A lock that counts how often it was taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    def acquire(self) -> bool:
        self.taken += 1
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


def environ(
    method: str = "GET", route: Route | None = ITEMS, decision: Any = None
) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": method, context.ROUTE: route}
    if decision is not None:
        env[context.DECISION] = decision
    return env


@pytest.fixture
def tally_module(kernel_mode: str) -> Any:
    return load_twin("tally", kernel_mode)


CASES = [
    # (id, method, route, decision action, status, expected key)
    ("allowed", "GET", ITEMS, None, "200 OK", ("items", "GET", "2xx", "allowed")),
    (
        "unmatched",
        "GET",
        None,
        None,
        "404 Not Found",
        ("(unmatched)", "GET", "4xx", "allowed"),
    ),
    ("odd-method", "BREW", ITEMS, None, "200 OK", ("items", "other", "2xx", "allowed")),
    (
        "lower-method",
        "get",
        ITEMS,
        None,
        "200 OK",
        ("items", "other", "2xx", "allowed"),
    ),
    (
        "rate-limited",
        "POST",
        ITEMS,
        "rate-limited",
        "429 Too Many Requests",
        ("items", "POST", "4xx", "rate-limited"),
    ),
    ("status-600", "GET", ITEMS, None, "600 Odd", ("items", "GET", "other", "allowed")),
    ("status-empty", "GET", ITEMS, None, "", ("items", "GET", "other", "allowed")),
    (
        "status-zero",
        "GET",
        ITEMS,
        None,
        "099 Low",
        ("items", "GET", "other", "allowed"),
    ),
    (
        "informational",
        "GET",
        ITEMS,
        None,
        "101 Switching Protocols",
        ("items", "GET", "1xx", "allowed"),
    ),
]


@pytest.mark.parametrize(
    ("method", "route", "action", "status", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_leave_returns_missing_key(
    tally_module: Any,
    method: str,
    route: Route | None,
    action: str | None,
    status: str,
    expected: tuple[str, ...],
) -> None:
    decision = context.Decision("layer", action, "reason") if action else None
    values = [0.0] * SIZE
    tally = tally_module.RequestTally({}, BOUNDS, IN_FLIGHT)
    assert (
        tally.leave(
            values, CountingLock(), environ(method, route, decision), status, 0.005
        )
        == expected
    )
    assert values == [0.0] * SIZE


@pytest.mark.parametrize(
    ("duration", "bucket"),
    [
        (0.0, 3),
        (0.01, 3),
        (0.0100001, 4),
        (0.5, 5),
        (1.0, 5),
        (7.0, 6),
        (math.inf, 6),
        (-1.0, 3),
        (math.nan, 3),
    ],
    ids=[
        "zero",
        "on-first-bound",
        "above-first",
        "middle",
        "on-last-finite",
        "above-all",
        "inf",
        "negative",
        "nan",
    ],
)
def test_leave_counts_into_bucket(
    tally_module: Any, duration: float, bucket: int
) -> None:
    values = [0.0] * SIZE
    lock = CountingLock()
    tally = tally_module.RequestTally(
        {("items", "GET", "2xx", "allowed"): TABLE_SLOTS}, BOUNDS, IN_FLIGHT
    )
    tally.enter(values, lock)
    assert tally.leave(values, lock, environ(), "200 OK", duration) is None
    assert values[IN_FLIGHT] == 0.0
    assert values[1] == 1.0
    assert values[bucket] == 1.0
    assert sum(values[3:]) == 1.0
    assert lock.taken == 2


def test_leave_asks_for_decision_only(tally_module: Any) -> None:
    # The client-address layer counts its own fallbacks.
    class Client:
        reason: str | None = "missing"

    table = {
        ("items", "GET", "2xx", "allowed"): TABLE_SLOTS,
        ("items", "GET", "4xx", "banned"): TABLE_SLOTS,
    }
    tally = tally_module.RequestTally(table, BOUNDS, IN_FLIGHT)
    values = [0.0] * SIZE
    banned = environ(decision=context.Decision("access", "banned", "ban"))
    fallback = {**environ(), context.CLIENT: Client()}
    trusted = Client()
    trusted.reason = None
    plain = {**environ(), context.CLIENT: trusted}

    assert tally.leave(values, CountingLock(), banned, "403 Forbidden", 0.5) == 1
    assert tally.leave(values, CountingLock(), fallback, "200 OK", 0.5) is None
    assert tally.leave(values, CountingLock(), plain, "200 OK", 0.5) is None
    assert tally_module.MORE == 1
    assert values[1] == 3.0


def test_dropped_series_only_leaves_gauge(tally_module: Any) -> None:
    values = [0.0] * SIZE
    tally = tally_module.RequestTally(
        {("items", "GET", "2xx", "allowed"): (-1, -1)}, BOUNDS, IN_FLIGHT
    )
    tally.enter(values, CountingLock())
    assert tally.leave(values, CountingLock(), environ(), "200 OK", 0.5) is None
    assert values == [0.0] * SIZE


def test_table_is_shared_not_copied(tally_module: Any) -> None:
    table: dict[tuple[str, str, str, str], tuple[int, int]] = {}
    values = [0.0] * SIZE
    tally = tally_module.RequestTally(table, BOUNDS, IN_FLIGHT)
    key = tally.leave(values, CountingLock(), environ(), "200 OK", 0.5)
    table[key] = TABLE_SLOTS
    assert tally.leave(values, CountingLock(), environ(), "200 OK", 0.5) is None
    assert values[1] == 1.0


def test_threads_lose_no_counts(tally_module: Any) -> None:
    values = [0.0] * SIZE
    lock = threading.Lock()
    tally = tally_module.RequestTally(
        {("items", "GET", "2xx", "allowed"): TABLE_SLOTS}, BOUNDS, IN_FLIGHT
    )

    def work() -> None:
        for _ in range(5000):
            tally.enter(values, lock)
            tally.leave(values, lock, environ(), "200 OK", 0.05)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert values[1] == 20_000
    assert values[IN_FLIGHT] == 0.0


def test_tally_kernel_is_compiled() -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    assert _fast.load_kernel("tally").COMPILED is True


@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "BREW", "", "get"]),
    route=st.sampled_from([ITEMS, None, Route("a.b-c", "/x")]),
    action=st.sampled_from([None, "banned", "cached", "rate-limited"]),
    status=st.one_of(
        st.sampled_from(["200 OK", "304 Not Modified", "503 X"]), st.text(max_size=5)
    ),
    durations=st.lists(
        st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5
    ),
)
def test_twins_agree(
    method: str,
    route: Route | None,
    action: str | None,
    status: str,
    durations: list[float],
) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    decision = context.Decision("layer", action, "reason") if action else None
    results = []
    for mode in ("compiled", "python"):
        module = load_twin("tally", mode)
        table: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        values = [0.0] * SIZE
        tally = module.RequestTally(table, BOUNDS, IN_FLIGHT)
        keys = []
        for duration in durations:
            tally.enter(values, threading.Lock())
            key = tally.leave(
                values,
                threading.Lock(),
                environ(method, route, decision),
                status,
                duration,
            )
            if isinstance(key, tuple):
                table[key] = TABLE_SLOTS
                key = tally.leave(
                    values,
                    threading.Lock(),
                    environ(method, route, decision),
                    status,
                    duration,
                )
            keys.append(key)
        results.append((values, keys, sorted(table)))
    compiled, python = results
    assert compiled[1] == python[1]
    assert compiled[2] == python[2]
    for left, right in zip(compiled[0], python[0], strict=True):
        assert left == right or (math.isnan(left) and math.isnan(right))
