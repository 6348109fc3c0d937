"""Costs of the hardening layers, as ratios within one run.

- security headers: applying a profile to a typical response, and the whole
  headers middleware against the bare app;
- JSON pre-scan: compiled kernel against its twin, with throughput in MB/s;
- schema validation of a 1 KB body: through the shield against msgspec
  alone and against an app that reads and validates its body itself, and
  against marshmallow and pydantic (benchmark-only baselines).

Run: python -m pytest bench/bench_hardening.py --benchmark-only -q
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import marshmallow
import msgspec
import pydantic
import pytest

from tests.conftest import load_twin
from tests.support.wsgi import make_environ
from wsgishield import HAS_EXTENSIONS, Shield, context
from wsgishield.middleware import RequestLimitsMiddleware, SecurityHeadersMiddleware
from wsgishield.policy import RequestPolicy, RouteRequest
from wsgishield.routes import Route
from wsgishield.security_headers import HeaderProfile

RESPONSE_HEADERS = [("Content-Type", "application/json"), ("Content-Length", "17")]


def start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Any:
    return None


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", RESPONSE_HEADERS)
    return [b'{"status": "ok"}']


# Security headers.
@pytest.mark.benchmark(group="headers-profile")
def test_profile_apply(benchmark: Any) -> None:
    variant = HeaderProfile("api", hsts="max-age=31536000; includeSubDomains").variant(
        True, False
    )
    benchmark.extra_info["build"] = "compiled" if HAS_EXTENSIONS else "python"
    benchmark(variant.apply, RESPONSE_HEADERS)


@pytest.mark.benchmark(group="headers-middleware")
def test_headers_bare_app(benchmark: Any) -> None:
    environ = make_environ()
    benchmark(bare_app, environ, start_response)


@pytest.mark.benchmark(group="headers-middleware")
def test_headers_middleware(benchmark: Any) -> None:
    environ = make_environ()
    environ[context.SCHEME] = "https"
    wrapped = SecurityHeadersMiddleware(bare_app)
    benchmark(wrapped, environ, start_response)


# JSON pre-scan.
def sample_json(size: int) -> bytes:
    record = {
        "id": 12345,
        "name": 'Widget "deluxe" [large]',
        "tags": ["red", "green", "blue"],
        "price": 19.99,
        "stock": {"warehouse": "north", "count": 42, "reserved": False},
    }
    items = []
    total = 2
    while total < size:
        text = json.dumps(record)
        items.append(record)
        total += len(text) + 2
    return json.dumps(items).encode()


SCAN_BODY = sample_json(1024 * 1024)


@pytest.mark.parametrize("mode", ["compiled", "python"])
@pytest.mark.benchmark(group="jsonscan-1mib")
def test_jsonscan(benchmark: Any, mode: str) -> None:
    scan_json = load_twin("jsonscan", mode).scan_json
    result = benchmark(scan_json, SCAN_BODY, 64, 10_000_000)
    assert result == (0, len(SCAN_BODY))
    benchmark.extra_info["bytes"] = len(SCAN_BODY)
    # With --benchmark-disable the function ran once and has no statistics.
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["mb_per_s"] = round(len(SCAN_BODY) / median / 1e6, 1)


# Schema validation of a 1 KB body.
class Line(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    qty: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    price: float


class Order(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: int
    email: str
    lines: list[Line]
    note: str | None = None


class LineModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    sku: Annotated[str, pydantic.Field(min_length=1, max_length=32)]
    qty: Annotated[int, pydantic.Field(ge=1, le=1000)]
    price: float


class OrderModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    customer_id: int
    email: str
    lines: list[LineModel]
    note: str | None = None


class LineSchema(marshmallow.Schema):
    sku = marshmallow.fields.String(
        required=True, validate=marshmallow.validate.Length(1, 32)
    )
    qty = marshmallow.fields.Integer(
        required=True, validate=marshmallow.validate.Range(1, 1000)
    )
    price = marshmallow.fields.Float(required=True)


class OrderSchema(marshmallow.Schema):
    customer_id = marshmallow.fields.Integer(required=True)
    email = marshmallow.fields.String(required=True)
    lines = marshmallow.fields.List(
        marshmallow.fields.Nested(LineSchema), required=True
    )
    note = marshmallow.fields.String(allow_none=True, load_default=None)


def order_body() -> bytes:
    lines = [
        {"sku": f"SKU-{index:05d}", "qty": index + 1, "price": 9.5 + index}
        for index in range(18)
    ]
    body = json.dumps(
        {
            "customer_id": 42,
            "email": "buyer@example.com",
            "lines": lines,
            "note": "leave at door",
        }
    )
    return body.encode()


ORDER = order_body()
DECODER = msgspec.json.Decoder(Order)
ORDER_SCHEMA = OrderSchema()

ORDERS_ROUTE = {
    "id": "orders",
    "path": "/orders",
    "request": {"schema": f"{__name__}:Order"},
}


def validating_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Read and validate the JSON body with msgspec, as a bare app would."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        DECODER.decode(body)
    except msgspec.DecodeError:
        start_response("400 Bad Request", RESPONSE_HEADERS)
        return [b'{"status": "invalid"}']
    start_response("200 OK", RESPONSE_HEADERS)
    return [b'{"status": "ok"}']


def minimum_shield() -> Shield:
    """Build a shield with the layers that validation needs.

    They are client address, route and request limits.
    """
    return Shield(bare_app, policy={"routes": [ORDERS_ROUTE]})


def whole_shield() -> Shield:
    """Build the minimum shield plus security headers, as a typical policy has."""
    return Shield(bare_app, policy={"headers": {}, "routes": [ORDERS_ROUTE]})


def order_environ() -> dict[str, Any]:
    """Return the environ that Gunicorn 27 gives the app for the order POST.

    The keys, their order and the values are those of a real request that
    curl sent to Gunicorn 27.0.1. The server's own objects (socket, error
    stream, file wrapper, early hints callback) are stand-ins.
    """
    return {
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": object,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "gunicorn/27.0.1",
        "wsgi.input": io.BytesIO(ORDER),
        "gunicorn.socket": object(),
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": "",
        "RAW_URI": "/orders",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "api.example.com",
        "HTTP_USER_AGENT": "curl/7.88.1",
        "HTTP_ACCEPT": "*/*",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(ORDER)),
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "192.0.2.10",
        "REMOTE_PORT": "38764",
        "SERVER_NAME": "0.0.0.0",
        "SERVER_PORT": "8000",
        "PATH_INFO": "/orders",
        "SCRIPT_NAME": "",
        "wsgi.early_hints": lambda headers: None,
    }


def server_part(environ: dict[str, Any], start_response: Any) -> None:
    """Take a request and do nothing: what a variant costs besides the app."""


def test_order_body_is_about_1kb() -> None:
    assert 900 <= len(ORDER) <= 1100


# pytest-benchmark times each call of this group alone, after a setup that
# makes its arguments: for a WSGI variant, a fresh copy of the Gunicorn
# environ with a fresh BytesIO, as the server makes one before calling the
# app. Every variant, msgspec alone included, is timed the same way, so each
# carries the same cost of reading the clock.
VALIDATE_ROUNDS = 20_000


def time_each_call(benchmark: Any, function: Any, *args: Any) -> None:
    """Time ``function(*args)`` one call per round."""
    benchmark.pedantic(
        function,
        setup=lambda: (args, {}),
        rounds=VALIDATE_ROUNDS,
        warmup_rounds=1_000,
    )


def time_each_request(benchmark: Any, app: Any, base: dict[str, Any]) -> None:
    """Time ``app`` on a fresh copy of ``base`` per round, made before the clock starts."""

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(ORDER)
        return (environ, start_response), {}

    benchmark.pedantic(app, setup=setup, rounds=VALIDATE_ROUNDS, warmup_rounds=1_000)


@pytest.mark.benchmark(group="validate-1kb")
def test_validate_msgspec_alone(benchmark: Any) -> None:
    time_each_call(benchmark, DECODER.decode, ORDER)


@pytest.mark.benchmark(group="validate-1kb")
def test_validate_scan_and_schema(benchmark: Any) -> None:
    # The validation step the layer runs on a buffered body: pre-scan, then
    # the route's schema decoder.
    from wsgishield._fast.jsonscan import scan_json
    from wsgishield.schemas import BodySchema

    schema = BodySchema(Order)

    def run() -> Any:
        scan_json(ORDER, 64, 200_000)
        return schema.decode(ORDER)

    time_each_call(benchmark, run)


@pytest.mark.benchmark(group="validate-1kb")
def test_validate_through_request_layer(benchmark: Any) -> None:
    # The request limits layer alone, with the route already matched: checks,
    # buffering, pre-scan, decode and the fresh wsgi.input.
    layer = RequestLimitsMiddleware(
        bare_app,
        defaults=RequestPolicy(),
        routes={"orders": RouteRequest()},
        schemas={"orders": Order},
    )
    base = order_environ()
    base[context.ROUTE] = Route("orders", "/orders")
    time_each_request(benchmark, layer, base)


@pytest.mark.benchmark(group="validate-1kb")
def test_validate_self_validating_app(benchmark: Any) -> None:
    time_each_request(benchmark, validating_app, order_environ())


@pytest.mark.parametrize("stack", ["minimum", "whole"])
@pytest.mark.benchmark(group="validate-1kb")
def test_validate_through_shield(benchmark: Any, stack: str) -> None:
    shield = minimum_shield() if stack == "minimum" else whole_shield()
    time_each_request(benchmark, shield, order_environ())


@pytest.mark.benchmark(group="validate-1kb")
def test_validate_pydantic(benchmark: Any) -> None:
    time_each_call(benchmark, OrderModel.model_validate_json, ORDER)


@pytest.mark.benchmark(group="validate-1kb")
def test_validate_marshmallow(benchmark: Any) -> None:
    benchmark.pedantic(
        lambda: ORDER_SCHEMA.load(json.loads(ORDER)), rounds=2_000, warmup_rounds=100
    )


# A request without a body: the checks every GET pays.
@pytest.mark.benchmark(group="request-layer-get")
def test_get_bare_app(benchmark: Any) -> None:
    environ = make_environ("GET", "/items", headers=BROWSER_HEADERS)
    benchmark(bare_app, environ, start_response)


@pytest.mark.benchmark(group="request-layer-get")
def test_get_request_layer(benchmark: Any) -> None:
    environ = make_environ("GET", "/items", headers=BROWSER_HEADERS)
    layer = RequestLimitsMiddleware(bare_app)
    benchmark(layer, environ, start_response)


BROWSER_HEADERS = {
    "Host": "api.example.com",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
    "Accept": "application/json",
    "Accept-Language": "en-GB,en;q=0.5",
    "Accept-Encoding": "gzip, deflate, br",
    "Authorization": "Bearer " + "x" * 200,
    "Connection": "keep-alive",
}


# Interleaved A/B ratios: steadier than separate pytest-benchmark runs.
def test_headers_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.conftest import interleaved, report

    environ = make_environ()
    environ[context.SCHEME] = "https"
    wrapped = SecurityHeadersMiddleware(bare_app)
    variant = HeaderProfile("api", hsts="max-age=31536000").variant(True, False)
    medians = interleaved(
        {
            "bare app": lambda: bare_app(environ, start_response),
            "app + headers layer": lambda: wrapped(environ, start_response),
            "profile apply alone": lambda: variant.apply(RESPONSE_HEADERS),
        },
        number=5000,
    )
    with capsys.disabled():
        print("\n" + report("security headers per response", medians, "bare app"))


def test_jsonscan_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.conftest import interleaved, report

    body = sample_json(64 * 1024)
    compiled = load_twin("jsonscan", "compiled").scan_json
    twin = load_twin("jsonscan", "python").scan_json
    medians = interleaved(
        {
            "compiled": lambda: compiled(body, 64, 10_000_000),
            "twin": lambda: twin(body, 64, 10_000_000),
        },
        rounds=11,
        number=20,
    )
    with capsys.disabled():
        print("\n" + report(f"pre-scan of {len(body)} bytes", medians, "compiled"))
        for name, seconds in medians.items():
            print(f"  {name:<34} {len(body) / seconds / 1e6:9.1f} MB/s")


def test_validation_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    """The validation budget: a 1 KB body through the shield against msgspec.

    (a) msgspec alone decodes bytes already in memory. (b) is a bare app
    that reads its body by CONTENT_LENGTH and decodes it with msgspec. (c)
    is the minimum shield, (d) the shield with security headers too. Every
    WSGI variant gets a fresh copy of a Gunicorn environ with a fresh
    BytesIO, as a server makes for each request; (s) is that part alone,
    with an app that does nothing, so (c) - (s) is the time spent in the
    shield and its app.
    """
    from bench.conftest import interleaved, report
    from wsgishield._fast.jsonscan import scan_json
    from wsgishield.schemas import BodySchema

    schema = BodySchema(Order)
    layer = RequestLimitsMiddleware(
        bare_app,
        defaults=RequestPolicy(),
        routes={"orders": RouteRequest()},
        schemas={"orders": Order},
    )
    minimum = minimum_shield()
    whole = whole_shield()
    base = order_environ()
    routed = dict(base)
    routed[context.ROUTE] = Route("orders", "/orders")

    def through(app: Any, environ: dict[str, Any]) -> Any:
        copy = dict(environ)
        copy["wsgi.input"] = io.BytesIO(ORDER)
        return app(copy, start_response)

    medians = interleaved(
        {
            "(a) msgspec alone": lambda: DECODER.decode(ORDER),
            "(b) app validating itself": lambda: through(validating_app, base),
            "(c) minimum shield": lambda: through(minimum, base),
            "(d) whole shield": lambda: through(whole, base),
            "(e) pydantic": lambda: OrderModel.model_validate_json(ORDER),
            "pre-scan + schema": lambda: (
                scan_json(ORDER, 64, 200_000),
                schema.decode(ORDER),
            ),
            "request layer, route matched": lambda: through(layer, routed),
            "(s) the server's part alone": lambda: through(server_part, base),
        },
        number=1000,
    )
    alone = medians["(a) msgspec alone"]
    app_validating = medians["(b) app validating itself"]
    server = medians["(s) the server's part alone"]
    with capsys.disabled():
        print(
            "\n" + report(f"validate {len(ORDER)} bytes", medians, "(a) msgspec alone")
        )
        for name in ("(c) minimum shield", "(d) whole shield"):
            value = medians[name]
            print(f"  {name} / (b): x{value / app_validating:6.2f}")
            print(f"  ({name[1]}) - (s), against (a): x{(value - server) / alone:6.2f}")


def test_shield_layers_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    # The same 1 KB JSON POST through shields that enable one more layer each,
    # so the differences show what each layer adds to the request.
    from bench.conftest import interleaved, report

    orders = {"id": "orders", "path": "/orders"}
    validated = ORDERS_ROUTE
    stacks = {
        "bare app": bare_app,
        "+ client address": Shield(bare_app, policy={}),
        "+ route": Shield(bare_app, policy={"routes": [orders]}),
        "+ security headers": Shield(
            bare_app, policy={"headers": {}, "routes": [orders]}
        ),
        "+ request limits and schema": Shield(
            bare_app, policy={"headers": {}, "routes": [validated]}
        ),
        "+ metrics": Shield(
            bare_app, policy={"headers": {}, "metrics": {}, "routes": [validated]}
        ),
    }
    base = order_environ()
    variants = {"msgspec alone": lambda: DECODER.decode(ORDER)}
    variants["the server's part alone"] = lambda: through(server_part)

    def through(app: Any) -> Any:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(ORDER)
        return app(environ, start_response)

    for name, app in stacks.items():
        variants[name] = lambda app=app: through(app)
    medians = interleaved(variants, number=1000)
    with capsys.disabled():
        print("\n" + report("shield layers, cumulative", medians, "msgspec alone"))


def test_get_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    # The checks every request without a body pays: method, target length,
    # header count and size.
    from bench.conftest import interleaved, report

    environ = make_environ("GET", "/items", headers=BROWSER_HEADERS)
    layer = RequestLimitsMiddleware(bare_app)
    medians = interleaved(
        {
            "bare app": lambda: bare_app(environ, start_response),
            "behind request limits": lambda: layer(environ, start_response),
        },
        number=5000,
    )
    with capsys.disabled():
        print("\n" + report("GET with 7 headers", medians, "bare app"))
