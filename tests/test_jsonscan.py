from __future__ import annotations

import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from wsgishield import _fast
from wsgishield._fast import jsonscan
from wsgishield._fast._jsonscan_common import OK, TOO_DEEP, TOO_MANY_TOKENS

BOMB = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def scan(kernel_mode: str):
    return load_twin("jsonscan", kernel_mode).scan_json


CASES = [
    pytest.param(b"", 64, 100, (OK, 0), id="empty"),
    pytest.param(b"{}", 64, 100, (OK, 2), id="empty-object"),
    pytest.param(b"[[[]]]", 3, 100, (OK, 6), id="depth-at-limit"),
    pytest.param(b"[[[[]]]]", 3, 100, (TOO_DEEP, 3), id="depth-over-limit"),
    pytest.param(b'{"a":{"b":[1]}}', 2, 100, (TOO_DEEP, 10), id="mixed-nesting"),
    pytest.param(b'["[[[[[[", "{{{{"]', 1, 100, (OK, 18), id="brackets-in-strings"),
    pytest.param(b'["\\"[[[["]', 1, 100, (OK, 10), id="escaped-quote"),
    pytest.param(b'["\\\\", [[1]]]', 2, 100, (TOO_DEEP, 8), id="escaped-backslash"),
    pytest.param(b"[1, 2, 3]", 64, 4, (OK, 9), id="tokens-at-limit"),
    pytest.param(b"[1, 2, 3]", 64, 3, (TOO_MANY_TOKENS, 7), id="tokens-over-limit"),
    pytest.param(b'{"k": "v"}', 64, 3, (OK, 10), id="keys-count"),
    pytest.param(b"[true,false,null,-1.5e3]", 64, 5, (OK, 24), id="scalars"),
    pytest.param(b"]]]][", 1, 100, (OK, 5), id="unbalanced-closers"),
    pytest.param(b'["unterminated', 64, 100, (OK, 14), id="unterminated-string"),
    pytest.param(b'"\\', 64, 100, (OK, 2), id="trailing-backslash"),
    pytest.param(BOMB, 64, 1_000_000, (TOO_DEEP, 64), id="nesting-bomb"),
    # The compiled kernel skips the scan when the length and the count of
    # "[" and "{" bytes already prove both limits; these sit at its edges.
    pytest.param(b"[[1]]", 2, 5, (OK, 5), id="bounds-at-both-limits"),
    pytest.param(b"[[1]]", 2, 4, (OK, 5), id="length-over-token-limit"),
    pytest.param(b"[][][]", 1, 100, (OK, 6), id="openers-over-depth-limit"),
    pytest.param(
        b"[" + b"1," * 200 + b"[]]",
        64,
        100,
        (TOO_MANY_TOKENS, 199),
        id="tokens-over-limit-long-body",
    ),
    pytest.param(
        b"[" * 300 + b"]" * 300,
        299,
        10_000,
        (TOO_DEEP, 299),
        id="depth-over-past-first-block",
    ),
    pytest.param(
        b'["' + b"{" * 600 + b'"]', 1, 10_000, (OK, 604), id="openers-only-in-string"
    ),
    pytest.param(
        b'"' + b"x" * 1000 + b'"', 0, 10_000, (OK, 1002), id="long-string-no-openers"
    ),
]


@pytest.mark.parametrize(("data", "max_depth", "max_tokens", "expected"), CASES)
def test_scan_table(scan, data, max_depth, max_tokens, expected) -> None:
    assert scan(data, max_depth, max_tokens) == expected


def test_scan_bomb_in_small_thread_stack(kernel_mode: str) -> None:
    scan_json = load_twin("jsonscan", kernel_mode).scan_json
    results: list[tuple[int, int]] = []
    previous = threading.stack_size(128 * 1024)
    try:
        worker = threading.Thread(
            target=lambda: results.append(scan_json(BOMB, 64, 10**6))
        )
        worker.start()
        worker.join(30)
    finally:
        threading.stack_size(previous)
    assert results == [(TOO_DEEP, 64)]


def test_compiled_kernel_loaded() -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    assert load_twin("jsonscan", "compiled").COMPILED is True
    assert jsonscan.scan_json is load_twin("jsonscan", "compiled").scan_json


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    max_depth=st.integers(0, 8),
    max_tokens=st.integers(0, 40),
)
def test_twins_agree_on_any_bytes(data: bytes, max_depth: int, max_tokens: int) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    compiled = load_twin("jsonscan", "compiled").scan_json(data, max_depth, max_tokens)
    python = load_twin("jsonscan", "python").scan_json(data, max_depth, max_tokens)
    assert compiled == python


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _tokens(value: object) -> int:
    if isinstance(value, list):
        return 1 + sum(_tokens(item) for item in value)
    if isinstance(value, dict):
        return 1 + sum(1 + _tokens(item) for item in value.values())
    return 1


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=json_values, indent=st.sampled_from([None, 1]))
def test_scan_matches_decoded_shape(kernel_mode: str, value: object, indent) -> None:
    scan_json = load_twin("jsonscan", kernel_mode).scan_json
    data = json.dumps(value, indent=indent).encode()
    depth, tokens = _depth(value), _tokens(value)

    assert scan_json(data, depth, tokens) == (OK, len(data))
    if depth:
        assert scan_json(data, depth - 1, tokens)[0] == TOO_DEEP
    assert scan_json(data, depth, tokens - 1)[0] in (TOO_MANY_TOKENS, TOO_DEEP)


@pytest.mark.parametrize(
    "wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"]
)
def test_scan_accepts_buffers(scan, wrap) -> None:
    assert scan(wrap(b"[[1]]"), 1, 10) == (TOO_DEEP, 1)
    assert scan(wrap(b""), 1, 10) == (OK, 0)
