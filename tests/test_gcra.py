"""The GCRA bucket kernel: both twins return the same results."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from wsgishield import _fast

SECOND = 1_000_000
NOW = 1_700_000_000 * SECOND


@pytest.fixture
def gcra(kernel_mode: str):
    return load_twin("gcra", kernel_mode)


def test_compiled_kernel_loaded():
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from wsgishield._fast import gcra

    assert gcra.COMPILED, "the compiled GCRA kernel did not load; rebuild"


def test_fresh_bucket_admits_burst_then_denies(gcra):
    interval, tolerance = SECOND, 3 * SECOND  # 1/second, burst 3
    tat = 0
    remaining = []
    for _ in range(3):
        allowed, tat, left, retry, _reset = gcra.update(
            tat, NOW, interval, tolerance, 1
        )
        assert allowed
        assert retry == 0
        remaining.append(left)
    assert remaining == [2, 1, 0]

    allowed, stored, left, retry, reset = gcra.update(tat, NOW, interval, tolerance, 1)
    assert not allowed
    assert stored == tat
    assert left == 0
    assert retry == SECOND
    assert reset == 3 * SECOND


def test_denied_request_is_admitted_after_retry(gcra):
    interval, tolerance = SECOND, SECOND
    _, tat, *_ = gcra.update(0, NOW, interval, tolerance, 1)
    allowed, _, _, retry, _ = gcra.update(tat, NOW + 1, interval, tolerance, 1)
    assert not allowed
    assert gcra.update(tat, NOW + 1 + retry, interval, tolerance, 1)[0]
    assert not gcra.update(tat, NOW + retry, interval, tolerance, 1)[0]


def test_cost_takes_several_tokens(gcra):
    interval, tolerance = SECOND, 5 * SECOND
    allowed, tat, left, _, reset = gcra.update(0, NOW, interval, tolerance, 3)
    assert allowed
    assert left == 2
    assert reset == 3 * SECOND
    allowed, _, left, retry, _ = gcra.update(tat, NOW, interval, tolerance, 3)
    assert not allowed
    assert left == 2
    assert retry == SECOND


def test_bucket_refills_over_time(gcra):
    interval, tolerance = SECOND, 2 * SECOND
    tat = 0
    for _ in range(2):
        _, tat, *_ = gcra.update(tat, NOW, interval, tolerance, 1)
    allowed, _, left, _, _ = gcra.update(tat, NOW + 10 * SECOND, interval, tolerance, 1)
    assert allowed
    assert left == 1


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [
        (0, 1),
        (1, 1),
        (SECOND - 1, 1),
        (SECOND, 1),
        (SECOND + 1, 2),
        (86_400 * SECOND, 86_400),
    ],
    ids=["zero", "one-us", "under-one-s", "one-s", "just-over-one-s", "one-day"],
)
def test_retry_seconds_rounds_up(gcra, wait, seconds):
    assert gcra.retry_seconds(wait) == seconds


_times = st.integers(min_value=0, max_value=NOW + 10**12)


@settings(max_examples=400, deadline=None)
@given(
    tat=_times,
    offset=st.integers(min_value=0, max_value=10**12),
    interval=st.integers(min_value=1, max_value=86_400 * SECOND),
    burst=st.integers(min_value=1, max_value=10_000),
    cost=st.integers(min_value=1, max_value=10_000),
)
def test_twins_agree(tat, offset, interval, burst, cost):
    if _fast.NO_EXTENSIONS:
        return
    compiled = load_twin("gcra", "compiled")
    python = load_twin("gcra", "python")
    now = NOW - 10**12 + offset
    arguments = (tat, now, interval, burst * interval, cost)
    assert compiled.update(*arguments) == python.update(*arguments)
    assert compiled.retry_seconds(offset) == python.retry_seconds(offset)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.integers(min_value=0, max_value=3 * SECOND), min_size=1, max_size=60
    ),
    burst=st.integers(min_value=1, max_value=20),
)
def test_admissions_never_exceed_burst_plus_rate(steps, burst):
    gcra = load_twin("gcra", "python")
    interval = SECOND // 4
    now, tat, admitted = NOW, 0, 0
    for step in steps:
        now += step
        allowed, tat, *_ = gcra.update(tat, now, interval, burst * interval, 1)
        admitted += allowed
        elapsed = now - NOW
        assert admitted <= burst + elapsed // interval
