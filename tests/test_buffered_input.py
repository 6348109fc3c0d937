"""BufferedInput, the ``wsgi.input`` of a buffered body, reads as BytesIO does."""

from __future__ import annotations

import io
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from tests.support.wsgi import make_environ
from wsgishield import _fast
from wsgishield.middleware import RequestLimitsMiddleware

MODES = ["compiled", "python"]


def twin(mode: str) -> ModuleType:
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    return load_twin("requestgate", mode)


@pytest.fixture
def gate(kernel_mode: str) -> ModuleType:
    return twin(kernel_mode)


def outcome(function: Any, *args: Any) -> tuple[str, Any]:
    """Return a call's value, or the type of the exception it raised."""
    try:
        value = function(*args)
    except Exception as exc:  # the error type is the result
        return "raised", type(exc)
    if isinstance(value, memoryview):
        value = bytes(value)
    return "value", value


SIZES = st.one_of(st.none(), st.integers(-3, 40))
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["read", "read1", "readline", "readlines"]), SIZES),
        st.tuples(st.just("readinto"), st.integers(0, 40)),
        st.tuples(st.just("seek"), st.integers(-50, 50), st.sampled_from([0, 1, 2, 3])),
        st.tuples(
            st.sampled_from(
                ["tell", "getvalue", "next", "close", "readable", "seekable"]
            )
        ),
    ),
    max_size=12,
)


def apply(stream: Any, operation: tuple[Any, ...]) -> tuple[str, Any]:
    name, *args = operation
    if name == "readinto":
        buffer = bytearray(args[0])
        result = outcome(stream.readinto, buffer)
        return (
            result if result[0] == "raised" else ("value", (result[1], bytes(buffer)))
        )
    if name == "next":
        return outcome(next, stream)
    if name in ("read", "read1", "readline", "readlines") and args[0] == -1:
        return outcome(getattr(stream, name))
    return outcome(getattr(stream, name), *args)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=60).map(lambda raw: raw.replace(b"\x00", b"\n")),
    operations=OPERATIONS,
)
def test_reads_as_bytesio(mode: str, data: bytes, operations: list[Any]) -> None:
    expected = io.BytesIO(data)
    stream = twin(mode).BufferedInput(data)
    for operation in operations:
        assert apply(stream, operation) == apply(expected, operation), operation
        assert stream.closed == expected.closed


def test_whole_read_shares_the_body(gate: ModuleType) -> None:
    body = b'{"id": 1}'
    assert gate.BufferedInput(body).read() is body


def test_iteration_and_context(gate: ModuleType) -> None:
    with gate.BufferedInput(b"a\nbc\n\nd") as stream:
        assert list(stream) == [b"a\n", b"bc\n", b"\n", b"d"]
    assert stream.closed
    with pytest.raises(ValueError, match="closed file"):
        stream.read()


def test_refuses_writes_and_descriptors(gate: ModuleType) -> None:
    stream = gate.BufferedInput(b"abc")
    with pytest.raises(io.UnsupportedOperation):
        stream.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        stream.fileno()
    assert stream.writable() is False
    assert stream.isatty() is False
    assert stream.read() == b"abc"


def test_needs_bytes(gate: ModuleType) -> None:
    with pytest.raises(TypeError):
        gate.BufferedInput(bytearray(b"abc"))


def test_bytearray_body_buffered(gate: ModuleType) -> None:
    # A wsgi.input that returns a bytearray breaks PEP 3333 but worked with
    # the BytesIO that BufferedInput replaced.
    environ = make_environ("POST", "/")
    limits = gate.RequestGate(
        methods={"POST"},
        max_url_bytes=64,
        max_headers=6,
        max_header_bytes=400,
        max_body=1000,
        content_types=[],
        decompress=False,
        json_max_depth=3,
        json_max_tokens=40,
    )
    outcome = gate.check_body(environ, limits, bytearray(b'{"a": 1}'), True, False)

    assert outcome[0] == gate.BUFFERED
    assert environ["wsgi.input"].read() == b'{"a": 1}'
    assert environ["CONTENT_LENGTH"] == "8"


def test_oversized_positions_raise(gate: ModuleType) -> None:
    stream = gate.BufferedInput(b"abc")
    with pytest.raises(OverflowError):
        stream.read(1 << 80)
    stream.seek(2)
    with pytest.raises(OverflowError):
        stream.seek((1 << 63) - 2, 1)
    assert stream.tell() == 2


def test_app_reads_buffered_body_by_lines() -> None:
    # cgi-style apps read the fresh wsgi.input by lines, and Werkzeug reads
    # it by size. Both get the body unchanged.
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        seen.append(stream.readline())
        seen.append(stream.read(3))
        seen.append(stream.readlines())
        stream.seek(0)
        seen.append(stream.read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    body = b'["a",\n"b",\n"c"]'
    layer = RequestLimitsMiddleware(app)
    environ = make_environ(
        "POST", "/", body=body, headers={"Content-Type": "application/json"}
    )
    layer(environ, lambda status, headers, exc_info=None: None)
    assert seen == [b'["a",\n', b'"b"', [b",\n", b'"c"]'], body]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "operation",
    [
        ("seek", 0, 1.0),
        ("seek", 0, 1 << 40),
        ("closed seek", 1.0),
        ("closed seek", 1 << 80),
        ("closed readinto", b"abc"),
        ("closed readinto", memoryview(bytearray(3)).toreadonly()),
        ("closed iter",),
        ("readinto1", 2),
    ],
    ids=[
        "float-whence",
        "huge-whence",
        "closed-float-offset",
        "closed-huge-offset",
        "closed-bytes-target",
        "closed-read-only-target",
        "closed-iter",
        "readinto1",
    ],
)
def test_argument_errors_as_bytesio(mode: str, operation: tuple[Any, ...]) -> None:
    # BytesIO converts and checks its arguments before it checks that it
    # is open, takes no float whence, and iterates over itself when closed.
    def run(stream: Any) -> tuple[str, Any]:
        name, *args = operation
        if name.startswith("closed "):
            stream.close()
            name = name.removeprefix("closed ")
        if name == "iter":
            return outcome(lambda: iter(stream) is stream)
        if name == "readinto1":
            buffer = bytearray(args[0])
            return outcome(lambda: (stream.readinto1(buffer), bytes(buffer)))
        if name == "readinto":
            return outcome(stream.readinto, *args)
        return outcome(stream.seek, *args)

    expected = run(io.BytesIO(b"abc"))
    assert run(twin(mode).BufferedInput(b"abc")) == expected
