from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import threading
import zlib
from typing import Any

import flask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from tests.support.wsgi import EchoApp, call, make_environ
from wsgishield import ConfigurationError, Shield, _fast, context
from wsgishield.middleware import RequestLimitsMiddleware
from wsgishield.policy import load_policy
from wsgishield.request_limits import (
    READ_SIZE,
    BodyIncomplete,
    BodyTooLarge,
    LimitedInput,
    header_totals,
    media_type,
    parse_content_length,
    request_target_length,
)
from wsgishield.routes import RouteTable

MIB = 1024 * 1024
POLICY = {"request": {"max_body": MIB}}
JSON = {"Content-Type": "application/json"}


class CountingStream:
    """An input of ``size`` bytes made on demand, counting what was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.position
        size = min(size, self.size - self.position)
        self.position += size
        return b"x" * size

    def readline(self, size: int = -1) -> bytes:
        return self.read(min(size, 100) if size and size > 0 else 100)


def body_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


# Body sizes around the 1 MiB limit, for each way an app reads wsgi.input.
@pytest.mark.parametrize("read", ["all", "chunks", "lines"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [MIB - 1, MIB], ids=["limit-minus-1", "limit"])
def test_body_within_limit_passes_unchanged(
    size: int, chunked: bool, read: str
) -> None:
    app = EchoApp(read)
    body = body_of(size)

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=body, chunked=chunked),
    )

    assert response.status_code == 200
    assert hashlib.sha256(app.seen[0]).digest() == hashlib.sha256(body).digest()


@pytest.mark.parametrize("read", ["all", "chunks", "lines", "none"])
@pytest.mark.parametrize("size", [MIB + 1, 50 * MIB], ids=["limit-plus-1", "50-mib"])
def test_chunked_body_over_limit_is_413(size: int, read: str) -> None:
    app = EchoApp(read)
    stream = CountingStream(size)

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", stream=stream, chunked=True),
    )

    if read == "none":
        # The app never read the body, so nothing oversize reached it.
        assert response.status_code == 200
        assert app.seen == [b""]
    else:
        assert response.status_code == 413
        assert json.loads(response.body)["status"] == 413
    # Memory stays within the limit plus one read.
    assert stream.position <= MIB + 1 + READ_SIZE


@pytest.mark.parametrize("size", [MIB + 1, 50 * MIB], ids=["limit-plus-1", "50-mib"])
def test_length_over_limit_is_413_unread(size: int) -> None:
    app = EchoApp()
    stream = CountingStream(size)

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", stream=stream, content_length=str(size)),
    )

    assert response.status_code == 413
    assert app.seen == []
    assert stream.position == 0


@pytest.mark.parametrize("read", ["all", "chunks", "lines"])
def test_length_longer_than_body_is_400(read: str) -> None:
    app = EchoApp(read)

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=b"x" * 500, content_length="1000"),
    )

    assert response.status_code == 400
    assert json.loads(response.body)["type"].endswith("invalid-body")


def test_short_length_reads_declared_bytes() -> None:
    # HTTP framing: the bytes after Content-Length belong to the next request
    # on the connection, which the server parses (see the Gunicorn tests).
    app = EchoApp()

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=b"x" * 20, content_length="10"),
    )

    assert response.status_code == 200
    assert app.seen == [b"x" * 10]


class OverlongStream:
    """An input that ignores the requested size and never ends, as no server should."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads > 50:
            raise AssertionError("read past the declared length")
        return self.chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


@pytest.mark.parametrize(
    "headers", [JSON, {"Content-Type": "text/plain"}], ids=["json", "streamed"]
)
def test_overlong_input_read_keeps_declared_bytes(headers: dict[str, str]) -> None:
    # A read that returns more than the declared length must not leave a
    # negative remainder, which made the body loop read on without end.
    app = EchoApp()
    environ = make_environ("POST", "/", body=b"[1, 2]", headers=headers)
    environ["wsgi.input"] = OverlongStream(b"[1, 2]  [3, 4]")

    response = call(Shield(app, policy=POLICY), environ)

    assert response.status_code == 200
    assert app.seen == [b"[1, 2]"]


class BadChunkStream:
    """An input that fails as Gunicorn's does on a malformed chunk size line."""

    def read(self, size: int = -1) -> bytes:
        raise ValueError("invalid chunk size")

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


@pytest.mark.parametrize(
    "headers", [JSON, {"Content-Type": "text/plain"}], ids=["json", "streamed"]
)
def test_server_read_error_is_400(headers: dict[str, str]) -> None:
    app = EchoApp()
    environ = make_environ("POST", "/", body=b"[1]", chunked=True, headers=headers)
    environ["wsgi.input"] = BadChunkStream()

    response = call(Shield(app, policy=POLICY), environ)

    assert response.status_code == 400
    assert response.json()["type"].endswith("invalid-body")


@pytest.mark.parametrize("mode", ["compiled", "python"])
def test_sized_body_read_error_is_400(mode: str) -> None:
    # The gate reads a sized JSON body in one call. An error from the
    # server's input there gets the same 400 as on the middleware's reads.
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    app = EchoApp()
    layer = RequestLimitsMiddleware(app)
    layer.fast_call = load_twin("requestgate", mode).RequestLimitsCall(layer)
    environ = make_environ("POST", "/", body=b"[1]", headers=JSON)
    environ["wsgi.input"] = BadChunkStream()

    response = call(layer, environ)

    assert response.status_code == 400
    assert response.json()["type"].endswith("invalid-body")
    assert app.seen == []


def test_lying_length_json_is_400_before_app() -> None:
    app = EchoApp()

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=b"[1, 2]", content_length="100", headers=JSON),
    )

    assert response.status_code == 400
    assert app.seen == []


def test_app_catching_body_error_still_gets_413() -> None:
    def forgiving(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"partial data accepted"]
        start_response("200 OK", [])
        return [b"whole"]

    response = call(
        Shield(forgiving, policy=POLICY),
        make_environ("POST", "/", stream=CountingStream(MIB + 1), chunked=True),
    )

    assert response.status_code == 413
    assert b"partial" not in response.body


def test_app_raising_body_error_gets_413() -> None:
    def strict(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b""]

    response = call(
        Shield(strict, policy=POLICY),
        make_environ("POST", "/", stream=CountingStream(2 * MIB), chunked=True),
    )

    assert response.status_code == 413


def test_app_wrapping_body_error_gets_413() -> None:
    def parser(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            raise ValueError("could not parse the upload") from exc
        start_response("200 OK", [])
        return [b""]

    response = call(
        Shield(parser, policy=POLICY),
        make_environ("POST", "/", stream=CountingStream(2 * MIB), chunked=True),
    )

    assert response.status_code == 413


def test_app_error_without_body_error_propagates() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read()
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call(Shield(broken, policy=POLICY), make_environ("POST", "/", body=b"abc"))


def test_legacy_write_before_body_error_propagates() -> None:
    def streaming(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started ")
        environ["wsgi.input"].read()
        return [b"done"]

    with pytest.raises(BodyTooLarge):
        call(
            Shield(streaming, policy=POLICY),
            make_environ("POST", "/", stream=CountingStream(MIB + 1), chunked=True),
        )


def test_held_status_sent_on_return() -> None:
    def lazy(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Type", "text/plain")])
        yield b"made"

    response = call(Shield(lazy, policy=POLICY), make_environ("POST", "/", body=b"abc"))

    assert response.status_code == 201
    assert response.body == b"made"


def test_chunked_without_terminated_input_is_411() -> None:
    app = EchoApp()

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=b"hello", chunked=True, terminated=False),
    )

    assert response.status_code == 411
    assert app.seen == []


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        pytest.param({"CONTENT_LENGTH": "5"}, "both", id="length-and-chunked"),
        pytest.param(
            {"HTTP_TRANSFER_ENCODING": "gzip, chunked"}, "chunked", id="other-coding"
        ),
    ],
)
def test_ambiguous_framing_is_400(extra: dict[str, str], detail: str) -> None:
    environ = make_environ("POST", "/", body=b"hello", chunked=True)
    environ.update(extra)

    response = call(Shield(EchoApp(), policy=POLICY), environ)

    assert response.status_code == 400
    assert detail in json.loads(response.body)["detail"]


@pytest.mark.parametrize(
    "value", ["abc", "-1", "+5", "5, 5", " 5", "5_0", "1" * 20, "\uff15"]
)
def test_invalid_content_length_is_400(value: str) -> None:
    app = EchoApp()

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=b"hello", content_length=value),
    )

    assert response.status_code == 400
    assert app.seen == []


def test_flask_chunked_oversize_is_413() -> None:
    flask_app = flask.Flask(__name__)
    flask_app.config["MAX_CONTENT_LENGTH"] = None
    received: list[int] = []

    @flask_app.post("/upload")
    def upload() -> str:
        received.append(len(flask.request.get_data()))
        return "ok"

    wrapped = Shield(flask_app.wsgi_app, policy=POLICY)

    over = call(
        wrapped, make_environ("POST", "/upload", body=body_of(MIB + 1), chunked=True)
    )
    within = call(
        wrapped, make_environ("POST", "/upload", body=body_of(MIB), chunked=True)
    )

    assert over.status_code == 413
    assert within.status_code == 200
    # Flask saw the whole body within the limit, never an empty or cut one.
    assert received[-1] == MIB


def test_flask_chunked_json_reaches_view() -> None:
    flask_app = flask.Flask(__name__)

    @flask_app.post("/items")
    def items() -> dict[str, Any]:
        return {"count": len(flask.request.get_json())}

    response = call(
        Shield(flask_app.wsgi_app, policy=POLICY),
        make_environ("POST", "/items", body=b"[1, 2, 3]", chunked=True, headers=JSON),
    )

    assert response.status_code == 200
    assert json.loads(response.body) == {"count": 3}


# Methods, target length, headers.
def test_method_not_allowed_lists_route_methods() -> None:
    policy = {
        "request": {},
        "routes": [
            {"id": "items", "path": "/items", "request": {"methods": ["GET", "POST"]}}
        ],
    }

    response = call(Shield(EchoApp(), policy=policy), make_environ("DELETE", "/items"))

    assert response.status_code == 405
    assert response.header("Allow") == "GET, HEAD, POST"


def test_head_allowed_with_get() -> None:
    policy = {
        "routes": [{"id": "items", "path": "/items", "request": {"methods": ["GET"]}}]
    }

    response = call(Shield(EchoApp(), policy=policy), make_environ("HEAD", "/items"))

    assert response.status_code == 200


def test_trace_rejected_by_default() -> None:
    response = call(Shield(EchoApp(), policy=POLICY), make_environ("TRACE", "/"))

    assert response.status_code == 405
    assert "TRACE" not in (response.header("Allow") or "")


@pytest.mark.parametrize(
    ("environ_extra", "expected"),
    [
        pytest.param({"RAW_URI": "/a?" + "q" * 8190}, 414, id="raw-uri-over"),
        pytest.param({"RAW_URI": "/" + "a" * 8191}, 200, id="raw-uri-at-limit"),
        pytest.param(
            {"PATH_INFO": "/" + "a" * 8000, "QUERY_STRING": "b" * 200},
            414,
            id="parts-over",
        ),
        pytest.param({"PATH_INFO": "/" + "a" * 100}, 200, id="short"),
    ],
)
def test_uri_length(environ_extra: dict[str, str], expected: int) -> None:
    environ = make_environ("GET", "/")
    environ.update(environ_extra)

    response = call(Shield(EchoApp(), policy=POLICY), environ)

    assert response.status_code == expected


def test_too_many_headers_is_431() -> None:
    headers = {f"X-Custom-{index}": "1" for index in range(101)}

    response = call(
        Shield(EchoApp(), policy=POLICY), make_environ("GET", "/", headers=headers)
    )

    assert response.status_code == 431


def test_header_bytes_over_limit_is_431() -> None:
    headers = {"X-Big": "v" * 40_000}

    response = call(
        Shield(EchoApp(), policy=POLICY), make_environ("GET", "/", headers=headers)
    )

    assert response.status_code == 431


def test_header_totals_count_content_headers() -> None:
    environ = make_environ(
        "POST", "/", body=b"abc", headers={"Content-Type": "text/plain", "X-A": "b"}
    )

    count, size = header_totals(environ)

    assert count == 3
    assert size == len("CONTENT_TYPE") + 10 + len("CONTENT_LENGTH") + 1 + 3 + 1 + 3 * 4


def test_request_target_length_prefers_raw_uri() -> None:
    assert request_target_length({"RAW_URI": "/a%20b", "PATH_INFO": "/a b"}) == 6
    assert request_target_length({"PATH_INFO": "/a", "QUERY_STRING": "x=1"}) == 6
    assert request_target_length({"PATH_INFO": "/a"}) == 2


# Content types and codings.
@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        pytest.param("application/json", 200, id="exact"),
        pytest.param("Application/JSON; charset=utf-8", 200, id="case-and-parameters"),
        pytest.param("image/png", 200, id="wildcard"),
        pytest.param("text/plain", 415, id="other"),
        pytest.param("", 415, id="missing"),
    ],
)
def test_content_types(content_type: str, expected: int) -> None:
    policy = {"request": {"content_types": ["application/json", "image/*"]}}
    body = b"[1]" if "json" in content_type.lower() else b"data"

    response = call(
        Shield(EchoApp(), policy=policy),
        make_environ("POST", "/", body=body, headers={"Content-Type": content_type}),
    )

    assert response.status_code == expected


def test_content_type_not_checked_without_body() -> None:
    policy = {"request": {"content_types": ["application/json"]}}

    response = call(
        Shield(EchoApp(), policy=policy), make_environ("POST", "/", body=b"")
    )

    assert response.status_code == 200


def test_compressed_body_rejected_unless_enabled() -> None:
    body = gzip.compress(b"hello")

    response = call(
        Shield(EchoApp(), policy=POLICY),
        make_environ("POST", "/", body=body, headers={"Content-Encoding": "gzip"}),
    )

    assert response.status_code == 415
    assert response.header("Accept-Encoding") == "identity"


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("x-gzip", gzip.compress, id="x-gzip"),
        pytest.param("deflate", zlib.compress, id="deflate"),
    ],
)
def test_compressed_body_reaches_app_inflated(coding: str, compress: Any) -> None:
    app = EchoApp()
    original = json.dumps({"items": list(range(500))}).encode()
    policy = {"request": {"decompress": True}}

    response = call(
        Shield(app, policy=policy),
        make_environ(
            "POST",
            "/",
            body=compress(original),
            headers={"Content-Encoding": coding, "Content-Type": "application/json"},
        ),
    )

    assert response.status_code == 200
    assert app.seen == [original]
    assert app.environ["CONTENT_LENGTH"] == str(len(original))
    assert "HTTP_CONTENT_ENCODING" not in app.environ


@pytest.mark.parametrize(
    ("policy", "size"),
    [
        pytest.param(
            {"decompress": True, "max_inflate_ratio": 100}, 500_000, id="ratio"
        ),
        pytest.param(
            {"decompress": True, "max_body": 10_000, "max_inflate_ratio": 10_000},
            20_000,
            id="inflated-size",
        ),
    ],
)
def test_compression_bomb_is_413(policy: dict[str, Any], size: int) -> None:
    app = EchoApp()
    bomb = gzip.compress(b"\0" * size)

    response = call(
        Shield(app, policy={"request": policy}),
        make_environ("POST", "/", body=bomb, headers={"Content-Encoding": "gzip"}),
    )

    assert response.status_code == 413
    assert app.seen == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not gzip at all", id="corrupt"),
        pytest.param(gzip.compress(b"hello world" * 10)[:-6], id="truncated"),
        pytest.param(gzip.compress(b"hello") + b"trailing", id="trailing-data"),
        pytest.param(b"", id="empty"),
    ],
)
def test_invalid_compressed_body_is_400(body: bytes) -> None:
    app = EchoApp()

    response = call(
        Shield(app, policy={"request": {"decompress": True}}),
        make_environ(
            "POST",
            "/",
            body=body,
            content_length=str(len(body)) if body else "1",
            headers={"Content-Encoding": "gzip"},
        ),
    )

    assert response.status_code == 400
    assert app.seen == []


def test_unknown_content_coding_is_415() -> None:
    response = call(
        Shield(EchoApp(), policy={"request": {"decompress": True}}),
        make_environ("POST", "/", body=b"x", headers={"Content-Encoding": "br"}),
    )

    assert response.status_code == 415
    assert response.header("Accept-Encoding") == "gzip, deflate"


# JSON pre-scan.
BOMB = b"[" * 100_000 + b"]" * 100_000


def test_json_bomb_is_400() -> None:
    app = EchoApp()

    response = call(
        Shield(app, policy=POLICY), make_environ("POST", "/", body=BOMB, headers=JSON)
    )

    assert response.status_code == 400
    assert json.loads(response.body)["type"].endswith("invalid-json")
    assert app.seen == []


def test_json_bomb_in_128k_thread_stack() -> None:
    app = EchoApp()
    wrapped = Shield(app, policy=POLICY)
    results: list[int] = []

    def serve() -> None:
        results.append(
            call(
                wrapped, make_environ("POST", "/", body=BOMB, headers=JSON)
            ).status_code
        )
        results.append(
            call(
                wrapped, make_environ("POST", "/", body=b"[[1]]", headers=JSON)
            ).status_code
        )

    previous = threading.stack_size(128 * 1024)
    try:
        worker = threading.Thread(target=serve)
        worker.start()
        worker.join(60)
    finally:
        threading.stack_size(previous)

    assert results == [400, 200]


def test_json_bomb_never_reaches_flask() -> None:
    flask_app = flask.Flask(__name__)

    @flask_app.post("/")
    def index() -> str:
        flask.request.get_json()
        return "parsed"

    response = call(
        Shield(flask_app.wsgi_app, policy=POLICY),
        make_environ("POST", "/", body=BOMB, headers=JSON),
    )

    assert response.status_code == 400


def test_json_depth_per_route() -> None:
    policy = {
        "request": {"json_max_depth": 64},
        "routes": [{"id": "flat", "path": "/flat", "request": {"json_max_depth": 2}}],
    }
    wrapped = Shield(EchoApp(), policy=policy)
    body = b"[[[1]]]"

    flat = call(wrapped, make_environ("POST", "/flat", body=body, headers=JSON))
    other = call(wrapped, make_environ("POST", "/other", body=body, headers=JSON))

    assert flat.status_code == 400
    assert other.status_code == 200


def test_json_token_limit_is_400() -> None:
    body = json.dumps(list(range(1001))).encode()

    response = call(
        Shield(EchoApp(), policy={"request": {"json_max_tokens": 1000}}),
        make_environ("POST", "/", body=body, headers=JSON),
    )

    assert response.status_code == 400
    assert "tokens" in json.loads(response.body)["detail"]


def test_json_body_reaches_app_unchanged() -> None:
    app = EchoApp()
    body = b'{"a": [1, 2, {"b": "\\"]"}]}'

    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", "/", body=body, headers=JSON, chunked=True),
    )

    assert response.status_code == 200
    assert app.seen == [body]
    assert app.environ["CONTENT_LENGTH"] == str(len(body))
    assert "HTTP_TRANSFER_ENCODING" not in app.environ


# Decisions, events and configuration.
def test_rejection_records_decision_and_event(caplog: pytest.LogCaptureFixture) -> None:
    policy = {
        "request": {},
        "routes": [{"id": "upload", "path": "/upload", "request": {"max_body": 10}}],
    }
    # A client of its own, so the event limiter has not seen it this second.
    environ = make_environ(
        "POST", "/upload", body=b"x" * 11, remote_addr="198.51.100.91"
    )

    with caplog.at_level(logging.WARNING, logger="wsgishield.events.request"):
        response = call(Shield(EchoApp(), policy=policy), environ)

    assert response.status_code == 413
    assert environ[context.DECISION] == context.Decision(
        "request", "invalid", "body-too-large", "upload"
    )
    events = [record.event for record in caplog.records]  # type: ignore[attr-defined]
    assert events[-1]["event.reason"] == "body-too-large"
    assert events[-1]["rule.id"] == "upload"
    assert events[-1]["http.response.status_code"] == 413


def test_decision_names_route_without_override() -> None:
    policy = {
        "request": {"max_body": 10},
        "routes": [{"id": "plain", "path": "/plain"}],
    }
    environ = make_environ("POST", "/plain", body=b"x" * 11)

    response = call(Shield(EchoApp(), policy=policy), environ)

    assert response.status_code == 413
    assert environ[context.DECISION].rule_id == "plain"


def test_details_never_echo_input() -> None:
    huge = "A" * 10_000
    responses = [
        call(
            Shield(EchoApp(), policy=POLICY),
            make_environ("POST", "/", body=b"x", content_length=huge),
        ),
        call(Shield(EchoApp(), policy=POLICY), make_environ("GET", "/" + huge * 2)),
        call(Shield(EchoApp(), policy=POLICY), make_environ(huge[:20], "/")),
    ]

    for response in responses:
        assert response.status_code in (400, 405, 414)
        assert len(response.body) < 400


def test_layer_off_without_request_section() -> None:
    policy = load_policy({})

    assert (
        RequestLimitsMiddleware.from_policy(EchoApp(), policy, RouteTable([])) is None
    )


def test_head_rejection_has_no_body() -> None:
    response = call(
        Shield(EchoApp(), policy={"request": {"methods": ["POST"]}}),
        make_environ("HEAD", "/"),
    )

    assert response.status_code == 405
    assert response.body == b""


def test_bad_schema_reference_names_key() -> None:
    policy = {
        "routes": [
            {
                "id": "x",
                "path": "/x",
                "request": {"schema": "tests.apps.schemas:Missing"},
            }
        ]
    }

    with pytest.raises(ConfigurationError) as raised:
        Shield(EchoApp(), policy=policy)

    assert raised.value.key == "routes.x.request.schema"


# The limited input on its own.
@pytest.mark.parametrize(
    "text",
    ["0", "1", "1048576", "000123"],
)
def test_parse_content_length_valid(text: str) -> None:
    assert parse_content_length(text) == int(text)


def test_limited_input_stops_one_byte_past_limit() -> None:
    stream = CountingStream(10 * MIB)
    limited = LimitedInput(stream, 100)

    with pytest.raises(BodyTooLarge):
        limited.read(10**9)

    assert stream.position == 101
    assert isinstance(limited.error, BodyTooLarge)


def test_limited_input_never_reads_past_length() -> None:
    stream = io.BytesIO(b"abcdefgh")
    limited = LimitedInput(stream, 100, length=4)

    assert limited.read() == b"abcd"
    assert limited.read() == b""
    assert stream.tell() == 4


def test_limited_input_short_body_raises() -> None:
    limited = LimitedInput(io.BytesIO(b"abc"), 100, length=5)

    assert limited.read(3) == b"abc"
    with pytest.raises(BodyIncomplete):
        limited.read(2)


def test_limited_input_readlines_and_iteration() -> None:
    limited = LimitedInput(io.BytesIO(b"a\nb\nc"), 100)

    assert limited.readlines() == [b"a\n", b"b\n", b"c"]


# The header size kernel and its twin.
HEADER_CASES = [
    pytest.param({}, (0, 0), id="empty"),
    pytest.param({"HTTP_HOST": "a"}, (1, 4 + 1 + 4), id="one"),
    pytest.param(
        {"CONTENT_TYPE": "", "CONTENT_LENGTH": ""}, (0, 0), id="empty-content"
    ),
    pytest.param({"CONTENT_LENGTH": "10"}, (1, 14 + 2 + 4), id="content-length"),
    pytest.param({"HTTP_": "x"}, (1, 0 + 1 + 4), id="bare-prefix"),
    pytest.param(
        {"HTTPX": "x", "http_host": "y", "REMOTE_ADDR": "z"}, (0, 0), id="not-headers"
    ),
    pytest.param({"HTTP_X_N": 5, 1: "x"}, (1, 3 + 4), id="non-str"),
]


@pytest.mark.parametrize(("environ", "expected"), HEADER_CASES)
def test_header_totals_twins(
    kernel_mode: str, environ: dict[Any, Any], expected: Any
) -> None:
    totals = load_twin("headerscan", kernel_mode).header_totals

    assert totals(environ) == expected


def test_header_totals_accepts_mapping(kernel_mode: str) -> None:
    from types import MappingProxyType

    totals = load_twin("headerscan", kernel_mode).header_totals

    assert totals(MappingProxyType({"HTTP_A": "b"})) == (1, 1 + 1 + 4)


@settings(max_examples=200, deadline=None)
@given(
    environ=st.dictionaries(
        st.one_of(
            st.sampled_from(["CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_"]),
            st.text(max_size=8),
        ).map(lambda key: key if key.startswith(("HTTP", "CONTENT")) else "HTTP_" + key)
        | st.text(max_size=6),
        st.text(max_size=10) | st.integers(),
        max_size=12,
    )
)
def test_header_totals_twins_agree(environ: dict[str, Any]) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    compiled = load_twin("headerscan", "compiled").header_totals(environ)
    python = load_twin("headerscan", "python").header_totals(environ)
    assert compiled == python


def test_header_kernel_compiled_loaded() -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from wsgishield._fast import headerscan

    assert headerscan.header_totals is load_twin("headerscan", "compiled").header_totals


def test_media_type_memo_is_bounded() -> None:
    from wsgishield._fast import _requestgate_common as rules

    for index in range(1000):
        assert media_type(f"Application/X-{index}; q=1") == f"application/x-{index}"
    assert media_type("x" * 500 + "/json") == "x" * 500 + "/json"

    assert len(rules._media_types) <= rules.MAX_MEMOISED_TYPES
    assert all(len(key) <= 128 for key in rules._media_types)


def test_content_type_memo_is_bounded() -> None:
    layer = RequestLimitsMiddleware(EchoApp())
    limits = layer.default

    for index in range(1000):
        assert limits.body_type(f"Application/X-{index}+JSON") == (True, True)
    assert limits.body_type("text/plain; " + "x" * 500) == (False, True)

    assert len(limits.body_types) <= 256
    assert all(len(key) <= 128 for key in limits.body_types)


def test_content_type_memo_keeps_route_verdicts() -> None:
    policy = {
        "request": {"content_types": ["application/json"]},
        "routes": [
            {
                "id": "upload",
                "path": "/upload",
                "request": {"content_types": ["image/*"]},
            }
        ],
    }
    app = Shield(EchoApp(), policy=policy)

    for _ in range(2):
        image = call(
            app,
            make_environ(
                "POST", "/upload", body=b"x", headers={"Content-Type": "image/png"}
            ),
        )
        json_body = call(
            app,
            make_environ(
                "POST",
                "/upload",
                body=b"{}",
                headers={"Content-Type": "application/json"},
            ),
        )
        other = call(
            app,
            make_environ(
                "POST", "/other", body=b"x", headers={"Content-Type": "image/png"}
            ),
        )

        assert image.status_code == 200
        assert json_body.status_code == 415
        assert other.status_code == 415


# Random hostile requests: never an exception, a 500 or a changed body.
FUZZ_POLICY = {
    "headers": {},
    "request": {"max_body": 2048, "decompress": True, "json_max_depth": 8},
    "routes": [
        {
            "id": "orders",
            "path": "/orders",
            "request": {"schema": "tests.apps.schemas:NewOrder"},
        },
    ],
}
FUZZ_APP = EchoApp()
FUZZ_SHIELD = Shield(FUZZ_APP, policy=FUZZ_POLICY)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "BREW"]),
    path=st.sampled_from(["/", "/orders", "/orders/", "//orders", "/other"]),
    body=st.binary(max_size=3000)
    | st.sampled_from([b"[" * 50, b'{"customerId": 1, "items": []}', b"{}"]),
    content_type=st.sampled_from(
        ["", "application/json", "text/plain", "application/x+json; charset=x", "a"]
    ),
    content_length=st.none() | st.sampled_from(["", "0", "-1", "10", "99999", "x"]),
    chunked=st.booleans(),
    terminated=st.booleans(),
    encoding=st.sampled_from(["", "gzip", "deflate", "br", "identity", "gzip, gzip"]),
)
def test_hostile_requests_never_fail(
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    content_length: str | None,
    chunked: bool,
    terminated: bool,
    encoding: str,
) -> None:
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    # A server's wsgi.input ends where the framing says the body ends.
    framed = body
    if not chunked and content_length is not None:
        framed = body[: int(content_length)] if content_length.isdigit() else b""
    stream = io.BytesIO(framed)
    environ = make_environ(
        method,
        path,
        body=body,
        stream=stream,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        terminated=terminated,
        remote_addr="192.0.2.200",
    )
    FUZZ_APP.seen.clear()

    response = call(FUZZ_SHIELD, environ)

    assert response.status_code in (200, 400, 405, 411, 413, 415, 422)
    assert "x-content-type-options" in response.header_names()
    if response.status_code != 200 or not FUZZ_APP.seen:
        return
    seen = FUZZ_APP.seen[0]
    if encoding in ("", "identity"):
        # The app got the body as framed: whole, never cut by a limit.
        assert seen == framed
    assert len(seen) <= 2048


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(make_environ("GET", "/"), "no body", id="no-body"),
        pytest.param(make_environ("POST", "/", body=b"x"), "streamed", id="streamed"),
        pytest.param(
            make_environ("POST", "/", body=b"[1]", headers=JSON), "buffered", id="json"
        ),
    ],
)
def test_allowed_request_traced(environ: dict[str, Any], expected: str) -> None:
    trace: list[tuple[str, str, Any]] = []
    environ[context.TRACE] = trace

    response = call(Shield(EchoApp(), policy=POLICY), environ)

    assert response.status_code == 200
    assert ("request", "allowed", expected) in trace


def test_header_and_target_limits_per_route() -> None:
    policy = {
        "request": {},
        "routes": [
            {
                "id": "tight",
                "path": "/tight",
                "request": {"max_url_bytes": 64, "max_headers": 2},
            }
        ],
    }
    wrapped = Shield(EchoApp(), policy=policy)
    headers = {"X-A": "1", "X-B": "2", "X-C": "3"}

    assert (
        call(wrapped, make_environ("GET", "/tight", query="q" * 80)).status_code == 414
    )
    assert (
        call(wrapped, make_environ("GET", "/tight", headers=headers)).status_code == 431
    )
    assert (
        call(wrapped, make_environ("GET", "/other", query="q" * 80)).status_code == 200
    )
    assert (
        call(wrapped, make_environ("GET", "/other", headers=headers)).status_code == 200
    )
