"""The request gate kernel and its twin: outcomes, environ updates, agreement."""

from __future__ import annotations

import io
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.apps.schemas import NewOrder
from tests.conftest import load_twin
from tests.support.wsgi import EchoApp, call, make_environ
from wsgishield import _fast, context
from wsgishield._fast import requestgate
from wsgishield._fast._requestgate_common import (
    BODY_TOO_LARGE,
    BUFFERED,
    CONFLICTING_FRAMING,
    DECODE_FAILED,
    HEADERS_TOO_LARGE,
    INVALID_CONTENT_LENGTH,
    JSON_TOO_DEEP,
    JSON_TOO_MANY_TOKENS,
    LENGTH_REQUIRED,
    METHOD_NOT_ALLOWED,
    NO_BODY,
    READ_BODY,
    STREAMED,
    TRANSFER_CODING_NOT_CHUNKED,
    UNSUPPORTED_CONTENT_CODING,
    UNSUPPORTED_MEDIA_TYPE,
    URI_TOO_LONG,
)
from wsgishield.middleware import RequestLimitsMiddleware
from wsgishield.policy import RequestPolicy, RouteRequest
from wsgishield.routes import Route

DECODE = msgspec.json.Decoder(NewOrder).decode
ORDER = b'{"customerId": 7, "items": [{"sku": "A-1", "qty": 2}]}'
JSON = {"Content-Type": "application/json"}

LIMITS: dict[str, Any] = {
    "methods": {"GET", "HEAD", "POST", "PUT"},
    "max_url_bytes": 64,
    "max_headers": 6,
    "max_header_bytes": 400,
    "max_body": 1000,
    "content_types": [],
    "decompress": True,
    "json_max_depth": 3,
    "json_max_tokens": 40,
}


def make_gate(kernel: ModuleType, **changes: Any) -> Any:
    return kernel.RequestGate(**{**LIMITS, **changes})


@pytest.fixture
def kernel(kernel_mode: str) -> ModuleType:
    return load_twin("requestgate", kernel_mode)


def post(body: bytes, **options: Any) -> dict[str, Any]:
    return make_environ("POST", "/orders", body=body, **options)


# Each case: gate changes, environ, expected (outcome, detail).
CASES = [
    pytest.param({}, make_environ("GET", "/"), (NO_BODY, None), id="get"),
    pytest.param(
        {}, make_environ("BREW", "/"), (METHOD_NOT_ALLOWED, None), id="method"
    ),
    pytest.param(
        {},
        make_environ("GET", "/", query="q" * 70),
        (URI_TOO_LONG, None),
        id="query-too-long",
    ),
    pytest.param(
        {},
        make_environ("GET", "/a", extra={"RAW_URI": "/" + "%20" * 30}),
        (URI_TOO_LONG, None),
        id="raw-uri-too-long",
    ),
    pytest.param(
        {},
        make_environ("GET", "/", extra={"RAW_URI": "", "REQUEST_URI": "x" * 65}),
        (URI_TOO_LONG, None),
        id="empty-raw-uri-falls-back",
    ),
    pytest.param(
        {},
        make_environ("GET", "/", headers={f"X-{n}": "v" for n in range(7)}),
        (HEADERS_TOO_LARGE, None),
        id="header-count",
    ),
    pytest.param(
        {},
        make_environ("GET", "/", headers={"X-Big": "v" * 400}),
        (HEADERS_TOO_LARGE, None),
        id="header-size",
    ),
    pytest.param(
        {},
        post(b"abc", headers={"Transfer-Encoding": "chunked"}),
        (CONFLICTING_FRAMING, None),
        id="length-and-transfer-coding",
    ),
    pytest.param(
        {},
        post(b"abc", chunked=True, headers={"Transfer-Encoding": "gzip"}),
        (TRANSFER_CODING_NOT_CHUNKED, None),
        id="transfer-coding-not-chunked",
    ),
    pytest.param(
        {},
        post(b"abc", chunked=True, terminated=False),
        (LENGTH_REQUIRED, None),
        id="chunked-unterminated",
    ),
    *[
        pytest.param(
            {},
            post(b"abc", content_length=text),
            (INVALID_CONTENT_LENGTH, None),
            id=f"content-length-{name}",
        )
        for name, text in [
            ("plus", "+3"),
            ("space", " 3"),
            ("list", "3, 3"),
            ("underscore", "0_3"),
            ("arabic-digit", "٣"),
            ("hex", "0x3"),
            ("16-digits", "1" * 16),
        ]
    ],
    pytest.param(
        {},
        post(b"x", content_length="1001"),
        (BODY_TOO_LARGE, None),
        id="length-over-limit",
    ),
    pytest.param(
        {},
        post(b"x", content_length="000000000000001"),
        (STREAMED, 1),
        id="15-digits-with-zeros",
    ),
    pytest.param({}, post(b"text"), (STREAMED, 4), id="streamed"),
    pytest.param(
        {}, post(b"text", chunked=True), (STREAMED, None), id="streamed-chunked"
    ),
    pytest.param(
        {"content_types": ["application/json"]},
        post(b"text", headers={"Content-Type": "text/plain"}),
        (UNSUPPORTED_MEDIA_TYPE, None),
        id="media-type",
    ),
    pytest.param(
        {"content_types": ["image/*"]},
        post(b"x", headers={"Content-Type": "Image/PNG; q=1"}),
        (STREAMED, 1),
        id="media-type-wildcard",
    ),
    pytest.param(
        {"decode": DECODE},
        post(b"x", headers={"Content-Type": "text/plain"}),
        (UNSUPPORTED_MEDIA_TYPE, None),
        id="schema-needs-json",
    ),
    pytest.param(
        {"decompress": False},
        post(b"x", headers={"Content-Encoding": "gzip"}),
        (UNSUPPORTED_CONTENT_CODING, None),
        id="coding-not-enabled",
    ),
    pytest.param(
        {},
        post(b"x", headers={"Content-Encoding": "br"}),
        (UNSUPPORTED_CONTENT_CODING, None),
        id="coding-unknown",
    ),
    pytest.param(
        {},
        post(b"x", headers={"Content-Encoding": " Identity "}),
        (STREAMED, 1),
        id="coding-identity",
    ),
    pytest.param(
        {},
        post(b"[1]", chunked=True, headers=JSON),
        (READ_BODY, (None, None, None, True, False)),
        id="json-chunked",
    ),
    pytest.param(
        {},
        post(b"[1]", headers={**JSON, "Content-Encoding": "GZIP"}),
        (READ_BODY, (3, "gzip", None, True, False)),
        id="json-compressed",
    ),
    pytest.param(
        {},
        post(b"[1]", stream=io.BytesIO(b"[1"), headers=JSON),
        (READ_BODY, (3, None, b"[1", True, False)),
        id="json-short-read",
    ),
    pytest.param(
        {},
        post(b"[[[[1]]]]", headers=JSON),
        (JSON_TOO_DEEP, 3),
        id="json-too-deep",
    ),
    pytest.param(
        {},
        post(b"[" + b"1," * 40 + b"1]", headers=JSON),
        (JSON_TOO_MANY_TOKENS, 79),
        id="json-too-many-tokens",
    ),
    pytest.param(
        {"decode": DECODE},
        make_environ("DELETE", "/orders"),
        (METHOD_NOT_ALLOWED, None),
        id="schema-route-method",
    ),
    pytest.param(
        {"decode": DECODE},
        make_environ("GET", "/orders"),
        (NO_BODY, None),
        id="schema-route-get",
    ),
]


@pytest.mark.parametrize(("changes", "environ", "expected"), CASES)
def test_admit_outcomes(
    kernel: ModuleType,
    changes: dict[str, Any],
    environ: dict[str, Any],
    expected: tuple[int, Any],
) -> None:
    gate = make_gate(kernel, **changes)
    environ = fresh(environ)

    assert kernel.admit(environ, gate) == expected


def test_admit_buffers_json_body(kernel: ModuleType) -> None:
    gate = make_gate(kernel, json_max_depth=64, json_max_tokens=1000)
    environ = post(ORDER, headers=JSON)

    assert kernel.admit(environ, gate) == (BUFFERED, None)

    assert environ["wsgi.input"].read() == ORDER
    assert environ["CONTENT_LENGTH"] == str(len(ORDER))
    assert environ["wsgi.input_terminated"] is True
    assert context.BODY not in environ


def test_admit_decodes_schema_body(kernel: ModuleType) -> None:
    gate = make_gate(kernel, decode=DECODE, json_max_depth=64)
    environ = post(ORDER, headers=JSON)

    assert kernel.admit(environ, gate) == (BUFFERED, None)

    assert environ[context.BODY] == DECODE(ORDER)
    assert environ["wsgi.input"].read() == ORDER


def test_admit_writes_exact_content_length(kernel: ModuleType) -> None:
    gate = make_gate(kernel)
    environ = post(b"[1]", content_length="003", headers=JSON)

    assert kernel.admit(environ, gate) == (BUFFERED, None)

    assert environ["CONTENT_LENGTH"] == "3"


def test_admit_reports_decode_failure(kernel: ModuleType) -> None:
    gate = make_gate(kernel, decode=DECODE)
    body = b'{"customerId": "x", "items": []}'
    environ = post(body, headers=JSON)

    outcome, (error, seen) = kernel.admit(environ, gate)

    assert outcome == DECODE_FAILED
    assert isinstance(error, msgspec.ValidationError)
    assert seen == body
    assert context.BODY not in environ


def test_admit_schema_reads_empty_body(kernel: ModuleType) -> None:
    gate = make_gate(kernel, decode=DECODE)
    environ = post(b"", headers=JSON)

    outcome, (error, seen) = kernel.admit(environ, gate)

    assert outcome == DECODE_FAILED
    assert isinstance(error, msgspec.DecodeError)
    assert seen == b""


def test_admit_accepts_dict_subclass(kernel: ModuleType) -> None:
    class Environ(dict[str, Any]):
        pass

    gate = make_gate(kernel, decode=DECODE, json_max_depth=64)
    environ = Environ(post(ORDER, headers=JSON))

    assert kernel.admit(environ, gate) == (BUFFERED, None)
    assert environ[context.BODY] == DECODE(ORDER)


def test_admit_with_keys_not_str(kernel: ModuleType) -> None:
    class Key(str):
        pass

    gate = make_gate(kernel, max_url_bytes=5000)
    environ = post(b"[1]")
    del environ["CONTENT_LENGTH"]
    environ[Key("CONTENT_LENGTH")] = "3"
    environ[Key("CONTENT_TYPE")] = "application/json"
    environ[7] = "not a header"
    assert any(type(key) is Key for key in environ)

    assert kernel.admit(environ, gate) == (BUFFERED, None)
    assert environ["wsgi.input"].read() == b"[1]"


def test_check_body_outcomes(kernel: ModuleType) -> None:
    gate = make_gate(kernel, decode=DECODE, json_max_depth=64, json_max_tokens=1000)

    environ = post(b"")
    assert kernel.check_body(environ, gate, ORDER, True, True) == (BUFFERED, None)
    assert environ["CONTENT_LENGTH"] == str(len(ORDER))
    assert environ[context.BODY] == DECODE(ORDER)

    deep = b"[" * 65 + b"]" * 65
    assert kernel.check_body(post(b""), gate, deep, True, False) == (
        JSON_TOO_DEEP,
        64,
    )
    # A body that is not JSON skips the pre-scan, and without validation
    # nothing decodes it.
    assert kernel.check_body(post(b""), gate, deep, False, False) == (BUFFERED, None)


def test_body_type_memo(kernel: ModuleType) -> None:
    gate = make_gate(kernel, content_types=["application/json", "image/*"])

    assert gate.body_type("Application/Problem+JSON; x=1") == (True, False)
    assert gate.body_type("image/png") == (False, True)
    assert gate.body_type("text/plain") == (False, False)
    assert set(gate.body_types) == {
        "Application/Problem+JSON; x=1",
        "image/png",
        "text/plain",
    }


def test_gate_precomputes_limits(kernel: ModuleType) -> None:
    gate = make_gate(kernel, content_types=["application/json", "image/*"])

    assert gate.methods == frozenset(LIMITS["methods"])
    assert gate.content_types == frozenset({"application/json"})
    assert gate.type_prefixes == ("image/",)
    assert gate.validated_methods == frozenset()
    assert make_gate(kernel, decode=DECODE).validated_methods == {
        "POST",
        "PUT",
        "PATCH",
    }


def test_request_gate_compiled_loaded() -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")

    assert requestgate.admit is load_twin("requestgate", "compiled").admit


# The compiled kernel and the twin agree on random requests and limits.
def fresh(environ: dict[str, Any]) -> dict[str, Any]:
    """Copy an environ with a fresh input stream over the same bytes."""
    copy = dict(environ)
    stream = environ.get("wsgi.input")
    if isinstance(stream, io.BytesIO):
        copy["wsgi.input"] = io.BytesIO(stream.getvalue())
    return copy


def outcome_of(
    admit: Callable[[dict[str, Any], Any], tuple[int, Any]],
    gate: Any,
    environ: dict[str, Any],
) -> tuple[Any, ...]:
    """Run one admit and describe everything it returned or changed."""
    try:
        outcome, detail = admit(environ, gate)
    except Exception as exc:  # both twins must raise alike
        return ("raised", type(exc), str(exc))
    if outcome == DECODE_FAILED:
        error, body = detail
        detail = (type(error), str(error), body)
    stream = environ.get("wsgi.input")
    rest = stream.read() if stream is not None else None
    others = {key: value for key, value in environ.items() if key != "wsgi.input"}
    return outcome, detail, rest, others


# Repeated entries weight the samples towards requests that pass the early
# checks, so that the body outcomes come up often too.
REQUEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "method": st.sampled_from(
        ["GET", "HEAD", "BREW"] + ["POST"] * 6 + ["PUT", "PATCH"]
    ),
    "path": st.sampled_from(["/", "/orders", "/orders", "/a" * 40]),
    "query": st.sampled_from(["", "", "", "a=1", "q" * 70]),
    "raw_uri": st.sampled_from([None, None, None, "", "/orders", "/" + "x" * 80]),
    "headers": st.dictionaries(
        st.sampled_from(["X-A", "X-B", "Accept", "User-Agent"]),
        st.text(max_size=60),
        max_size=3,
    ),
    "content_type": st.sampled_from(
        [
            None,
            "",
            "application/json",
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "text/plain",
            "image/png",
        ]
    ),
    # "body" sends the length of the body, and None sends it chunked.
    "content_length": st.sampled_from(["body", "body", "body", None])
    | st.sampled_from(["", "0", "3", "003", "+3", "٣", "1" * 16, "99999"])
    | st.integers(0, 1200).map(str),
    "transfer_encoding": st.sampled_from([None] * 8 + ["chunked", " Chunked ", "gzip"]),
    "content_encoding": st.sampled_from(
        [None, None, None, "", "identity", "gzip", "x-gzip", "deflate", "br"]
    ),
    "terminated": st.booleans(),
    "body": st.binary(max_size=64)
    | st.sampled_from(
        [
            ORDER,
            ORDER,
            b"[" * 10 + b"]" * 10,
            b"[1,2,3,4,5,6]",
            b'{"customerId": 1}',
        ]
    ),
    "short_by": st.sampled_from([0, 0, 0, 1, 3]),
}
REQUESTS = st.fixed_dictionaries(REQUEST_FIELDS)
# Requests that pass every check before the body, so that the body outcomes
# (buffered, pre-scan and decode rejections) come up in most examples.
JSON_REQUESTS = st.fixed_dictionaries(
    {
        **REQUEST_FIELDS,
        "method": st.sampled_from(["POST", "PUT", "PATCH"]),
        "path": st.just("/orders"),
        "query": st.just(""),
        "raw_uri": st.none(),
        "headers": st.just({}),
        "content_type": st.sampled_from(
            ["application/json", "Application/JSON; charset=utf-8"]
        ),
        "content_length": st.sampled_from(["body", "body", "0003"]),
        "transfer_encoding": st.none(),
        "content_encoding": st.sampled_from([None, "identity"]),
        "short_by": st.sampled_from([0, 0, 0, 0, 1]),
    }
)

GATE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "methods": st.sampled_from(
        [{"GET", "HEAD", "POST", "PUT", "PATCH"}] * 6 + [{"GET", "HEAD"}]
    ),
    "max_url_bytes": st.sampled_from([16] + [500] * 6),
    "max_headers": st.sampled_from([2] + [20] * 6),
    "max_header_bytes": st.sampled_from([100] + [4000] * 6),
    "max_body": st.sampled_from([2, 100, 1000, 1000]),
    "content_types": st.sampled_from(
        [[], [], ["application/json"], ["image/*", "application/json"]]
    ),
    "decompress": st.booleans(),
    "json_max_depth": st.sampled_from([1, 4, 64, 64]),
    "json_max_tokens": st.sampled_from([3, 10, 1000, 1000]),
    "decode": st.sampled_from([None, DECODE]),
}
GATES = st.fixed_dictionaries(GATE_FIELDS)
OPEN_GATES = st.fixed_dictionaries(
    {
        **GATE_FIELDS,
        "methods": st.just({"POST", "PUT", "PATCH"}),
        "max_url_bytes": st.just(500),
        "max_headers": st.just(20),
        "max_header_bytes": st.just(4000),
        "max_body": st.just(1000),
        "content_types": st.just([]),
    }
)


def build_environ(request: dict[str, Any]) -> dict[str, Any]:
    headers = dict(request["headers"])
    if request["content_type"] is not None:
        headers["Content-Type"] = request["content_type"]
    if request["transfer_encoding"] is not None:
        headers["Transfer-Encoding"] = request["transfer_encoding"]
    if request["content_encoding"] is not None:
        headers["Content-Encoding"] = request["content_encoding"]
    body = request["body"]
    length = request["content_length"]
    if length == "body":
        length = str(len(body))
    extra = {} if request["raw_uri"] is None else {"RAW_URI": request["raw_uri"]}
    return make_environ(
        request["method"],
        request["path"],
        query=request["query"],
        headers=headers,
        body=body,
        # A server's stream may end early: the short read path.
        stream=io.BytesIO(body[: max(0, len(body) - request["short_by"])]),
        content_length=length,
        chunked=length is None,
        terminated=request["terminated"],
        extra=extra,
    )


def assert_twins_agree(request: dict[str, Any], limits: dict[str, Any]) -> None:
    compiled = load_twin("requestgate", "compiled")
    python = load_twin("requestgate", "python")
    environ = build_environ(request)

    expected = outcome_of(python.admit, python.RequestGate(**limits), fresh(environ))
    found = outcome_of(compiled.admit, compiled.RequestGate(**limits), fresh(environ))

    assert found == expected


@settings(max_examples=1500, deadline=None)
@given(request=REQUESTS, limits=GATES)
def test_admit_twins_agree(request: dict[str, Any], limits: dict[str, Any]) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    assert_twins_agree(request, limits)


@settings(max_examples=500, deadline=None)
@given(request=JSON_REQUESTS, limits=OPEN_GATES)
def test_admit_twins_agree_on_bodies(
    request: dict[str, Any], limits: dict[str, Any]
) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    assert_twins_agree(request, limits)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200)
    | st.sampled_from([ORDER, b"[" * 70 + b"]" * 70, b'"' + b"[" * 80]),
    json_body=st.booleans(),
    validate=st.booleans(),
    limits=GATES,
)
def test_check_body_twins_agree(
    body: bytes, json_body: bool, validate: bool, limits: dict[str, Any]
) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    base = post(b"", headers=JSON)
    results = []
    for mode in ("python", "compiled"):
        kernel = load_twin("requestgate", mode)
        gate = kernel.RequestGate(**limits)
        results.append(
            outcome_of(
                lambda environ, gate, kernel=kernel: kernel.check_body(
                    environ, gate, body, json_body, validate
                ),
                gate,
                fresh(base),
            )
        )

    assert results[0] == results[1]


# The request limits layer gives the same responses through the compiled
# call and the twin's.
def limits_layer(mode: str) -> tuple[Any, EchoApp]:
    app = EchoApp()
    layer = RequestLimitsMiddleware(
        app,
        defaults=RequestPolicy(max_body=1000, json_max_depth=4, json_max_tokens=40),
        routes={"orders": RouteRequest()},
        schemas={"orders": NewOrder},
    )
    layer.fast_call = load_twin("requestgate", mode).RequestLimitsCall(layer)
    return layer, app


@settings(max_examples=400, deadline=None)
@given(request=REQUESTS | JSON_REQUESTS, routed=st.booleans(), traced=st.booleans())
def test_request_limits_calls_agree(
    request: dict[str, Any], routed: bool, traced: bool
) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    environ = build_environ(request)
    environ[context.ROUTE] = Route("orders", "/orders") if routed else None
    results = []
    for mode in ("python", "compiled"):
        layer, app = limits_layer(mode)
        copy = fresh(environ)
        if traced:
            copy[context.TRACE] = []
        response = call(layer, copy)
        results.append(
            (
                response.status,
                response.headers,
                response.body,
                app.seen,
                copy.get(context.TRACE),
                copy.get(context.BODY),
            )
        )

    assert results[0] == results[1]
