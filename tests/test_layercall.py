"""The layer call kernel and its twin: the client address and route layers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from tests.support.servers import REPOSITORY
from tests.support.wsgi import EchoApp, call, make_environ
from wsgishield import Shield, _fast, context
from wsgishield.middleware import ClientAddressMiddleware, RouteMiddleware
from wsgishield.routes import Route, RouteTable

TRUSTED = ["10.0.0.0/8"]


class Recorder:
    """A WSGI app that keeps what the layers stored in each environ."""

    KEYS = (
        context.CLIENT,
        context.CLIENT_IP,
        context.SCHEME,
        context.ROUTE,
        "REMOTE_ADDR",
        "wsgi.url_scheme",
    )

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.seen.append({key: environ.get(key) for key in self.KEYS})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


@pytest.fixture
def kernel(kernel_mode: str) -> ModuleType:
    return load_twin("layercall", kernel_mode)


def client_layer(kernel: ModuleType, app: Any, **options: Any) -> Any:
    layer = ClientAddressMiddleware(app, **options)
    layer.fast_call = kernel.ClientAddressCall(layer)
    return layer


def request(peer: str, **headers: str) -> dict[str, Any]:
    environ = make_environ("GET", "/", remote_addr=peer)
    for name, value in headers.items():
        environ["HTTP_" + name.upper()] = value
    return environ


def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    return None


def test_client_call_resolves_and_stores(kernel: ModuleType) -> None:
    app = Recorder()
    layer = client_layer(kernel, app, trusted_proxies=TRUSTED, set_remote_addr=True)
    environ = request(
        "10.0.0.5", X_FORWARDED_FOR="203.0.113.9", X_FORWARDED_PROTO="https"
    )

    layer.fast_call(environ, start_response)

    seen = app.seen[0]
    assert seen[context.CLIENT_IP] == "203.0.113.9"
    assert seen[context.CLIENT].peer == "10.0.0.5"
    assert seen[context.SCHEME] == "https"
    assert seen["REMOTE_ADDR"] == "203.0.113.9"
    assert seen["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("trusted", [[], TRUSTED], ids=["no-proxy", "proxy"])
def test_client_call_hits_resolver_memo(
    kernel: ModuleType, trusted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = client_layer(kernel, Recorder(), trusted_proxies=trusted)
    resolver = layer.resolver
    environ = request("10.0.0.5", X_FORWARDED_FOR="203.0.113.9")
    layer.fast_call(dict(environ), start_response)
    key = tuple(environ.get(name) for name in resolver.memo_key_names)
    assert key in resolver._memo

    def fail(*args: Any) -> Any:
        raise AssertionError("a memoised request was resolved again")

    monkeypatch.setattr(resolver, "_resolve", fail)
    layer.fast_call(dict(environ), start_response)


def test_client_call_unhashable_value_resolves(kernel: ModuleType) -> None:
    app = Recorder()
    layer = client_layer(kernel, app)
    environ = request("192.0.2.1")
    environ["wsgi.url_scheme"] = ["not", "hashable"]

    layer.fast_call(environ, start_response)

    assert app.seen[0][context.CLIENT_IP] == "192.0.2.1"
    assert layer.resolver._memo == {}


def test_client_call_counts_fallbacks(kernel: ModuleType) -> None:
    counted: list[str] = []

    class Counts:
        def inc(self, reason: str) -> None:
            counted.append(reason)

    layer = ClientAddressMiddleware(Recorder(), trusted_proxies=TRUSTED)
    layer._fallbacks = Counts()  # type: ignore[assignment]
    layer.fast_call = kernel.ClientAddressCall(layer)

    for _ in range(2):
        layer.fast_call(request("10.0.0.5"), start_response)

    assert counted == ["missing", "missing"]


def test_client_call_traces(kernel: ModuleType) -> None:
    layer = client_layer(kernel, Recorder())
    trace: list[tuple[str, str, Any]] = []
    environ = request("192.0.2.1")
    environ[context.TRACE] = trace

    layer.fast_call(environ, start_response)

    assert trace[0][:2] == ("client", "192.0.2.1")


def test_client_call_accepts_dict_subclass(kernel: ModuleType) -> None:
    class Environ(dict[str, Any]):
        pass

    app = Recorder()
    layer = client_layer(kernel, app)

    layer.fast_call(Environ(request("192.0.2.1")), start_response)

    assert app.seen[0][context.CLIENT_IP] == "192.0.2.1"


ROUTES = [
    Route("health", "/health", ["GET"]),
    Route("admin", "/admin/**"),
    Route("item", "/items/{id}", ["GET", "PUT"]),
]


def route_layer(kernel: ModuleType, app: Any) -> Any:
    layer = RouteMiddleware(app, routes=RouteTable(ROUTES, cache_size=8))
    layer.fast_call = kernel.RouteCall(layer)
    return layer


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/health", "health"),
        ("HEAD", "/health", "health"),
        ("POST", "/health", None),
        ("GET", "//admin/./x", "admin"),
        ("DELETE", "/public/../admin/x", "admin"),
        ("PUT", "/items/7", "item"),
        ("GET", "/items/7/extra", None),
        ("GET", "", None),
    ],
)
def test_route_call_matches(
    kernel: ModuleType, method: str, path: str, expected: str | None
) -> None:
    app = Recorder()
    layer = route_layer(kernel, app)

    # The second request takes the memo.
    for _ in range(2):
        layer.fast_call(make_environ(method, path), start_response)

    for seen in app.seen:
        route = seen[context.ROUTE]
        assert (route.id if route else None) == expected


def test_route_call_without_method_or_path(kernel: ModuleType) -> None:
    app = Recorder()
    layer = route_layer(kernel, app)
    environ = make_environ("GET", "/health")
    del environ["REQUEST_METHOD"], environ["PATH_INFO"]

    layer.fast_call(environ, start_response)

    assert app.seen[0][context.ROUTE] is None


def test_route_call_traces(kernel: ModuleType) -> None:
    layer = route_layer(kernel, Recorder())
    trace: list[tuple[str, str, Any]] = []
    environ = make_environ("GET", "/nowhere")
    environ[context.TRACE] = trace

    layer.fast_call(environ, start_response)

    assert trace == [("route", "(none)", None)]


def test_layer_app_swap_reaches_fast_call() -> None:
    first, second = Recorder(), Recorder()
    layer = RouteMiddleware(first, routes=RouteTable(ROUTES))

    layer.app = second
    call(layer, "/health")

    assert first.seen == []
    assert len(second.seen) == 1


def test_shield_calls_fast_calls() -> None:
    shield = Shield(EchoApp(), policy={"routes": [{"id": "a", "path": "/a"}]})
    client, route = shield.layers

    if _fast.NO_EXTENSIONS:
        assert shield.fast_call.__self__ is client.fast_call
    else:
        assert shield.fast_call is client.fast_call
        assert client.fast_call.app is route.fast_call


def test_swapping_a_hop_for_an_app_and_back() -> None:
    # The request limits hop follows the route hop. Replacing it by a plain
    # app, then restoring it, sends requests to the layer's current app.
    recorder = Recorder()
    shield = Shield(recorder, policy={"routes": [{"id": "a", "path": "/a"}]})
    gated = Shield(
        recorder, policy={"routes": [{"id": "a", "path": "/a"}], "request": {}}
    )
    route_layer = gated.layers[1]
    limits = route_layer.app

    other = Recorder()
    route_layer.app = other
    call(gated, "/a")
    assert (len(other.seen), len(recorder.seen)) == (1, 0)

    route_layer.app = limits
    assert call(gated, "/a", method="BREW").status.startswith("405")
    call(shield, "/a")
    assert (len(other.seen), len(recorder.seen)) == (1, 1)


def test_python_subclass_of_a_hop_is_called() -> None:
    # A compiled hop passes requests to a compiled hop by a C method call.
    # A Python subclass may override __call__, so it is called as an app.
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    compiled = load_twin("layercall", "compiled")
    calls: list[str] = []

    class CountingRouteCall(compiled.RouteCall):  # type: ignore[misc, name-defined]
        def __call__(self, environ: Any, start_response: Any) -> Any:
            calls.append(environ["PATH_INFO"])
            return super().__call__(environ, start_response)

    route = RouteMiddleware(Recorder(), routes=RouteTable(ROUTES))
    route.fast_call = CountingRouteCall(route)
    client = ClientAddressMiddleware(route)

    call(client, "/health")
    assert calls == ["/health"]


def test_entry_calls_any_fast_call() -> None:
    # Entry runs fast_call for any environ: a dict goes to a compiled first
    # hop directly, anything else through the call.
    recorder = Recorder()
    layer = RouteMiddleware(recorder, routes=RouteTable(ROUTES))

    class Environ(dict):  # type: ignore[type-arg]
        pass

    call(layer, "/health")
    layer(Environ(make_environ("GET", "/health")), lambda *args: None)
    layer.fast_call = recorder
    call(layer, "/health")
    assert [seen[context.ROUTE] is not None for seen in recorder.seen] == [
        True,
        True,
        False,
    ]


# An app that unhooks the layer running its request, then raises: the
# headers hop must still be alive to send the 500. A hop freed mid-call
# reads freed memory, which the debug allocator fills, so the child
# crashes or prints another status.
UNHOOK_SCRIPT = """
import gc

from tests.support.wsgi import call
from wsgishield.middleware import RouteMiddleware, SecurityHeadersMiddleware
from wsgishield.routes import RouteTable


def ok(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


def unhook_entry(environ, start_response):
    layer.fast_call = ok
    raise RuntimeError("app failed")


def unhook_hop(environ, start_response):
    outer.app = ok
    gc.collect()
    raise RuntimeError("app failed")


layer = SecurityHeadersMiddleware(unhook_entry)
print(call(layer, "/").status)

outer = RouteMiddleware(SecurityHeadersMiddleware(unhook_hop), routes=RouteTable([]))
print(call(outer, "/").status)
print(call(outer, "/").status)
"""


def run_child(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child interpreter, so that a crash fails one test."""
    environ = dict(os.environ, PYTHONMALLOC="debug", PYTHONPATH=str(REPOSITORY))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPOSITORY,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_app_unhooking_its_layer_mid_request() -> None:
    child = run_child(UNHOOK_SCRIPT)

    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[:3] == [
        "500 Internal Server Error",
        "500 Internal Server Error",
        "200 OK",
    ]


# Layers wrapped in a loop recurse without end. The twin hits the
# interpreter's recursion limit. Compiled hops call each other in C, so the
# loop must still pass through a Python call, or the C stack overflows.
LOOP_SCRIPT = """
from tests.support.wsgi import make_environ
from wsgishield.middleware import ClientAddressMiddleware, RouteMiddleware
from wsgishield.routes import RouteTable


def ok(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


def request(app):
    try:
        return b"".join(app(make_environ("GET", "/"), lambda *args: None))
    except RecursionError:
        return "RecursionError"


layer = RouteMiddleware(ok, routes=RouteTable([]))
layer.app = layer
print(request(layer))

inner = RouteMiddleware(ok, routes=RouteTable([]))
outer = ClientAddressMiddleware(inner)
inner.app = outer
print(request(outer))
inner.app = ok
print(request(outer))
"""


def test_layers_in_a_loop_raise_recursion_error() -> None:
    child = run_child(LOOP_SCRIPT)

    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[:3] == [
        "RecursionError",
        "RecursionError",
        "b'ok'",
    ]


def test_layer_call_compiled_loaded() -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from wsgishield._fast import layercall

    assert layercall.RouteCall is load_twin("layercall", "compiled").RouteCall


# The compiled calls and the twins store the same values for random requests.
PEERS = st.sampled_from(["10.0.0.5", "203.0.113.66", "", "unix:/run/x", "::1"])
FORWARDED_FOR = st.none() | st.sampled_from(
    ["203.0.113.9", "198.51.100.7, 10.0.0.9", "bogus", " , ", "2001:db8::1"]
)
PROTOS = st.none() | st.sampled_from(["https", "http", "gopher", "https, http"])


@settings(max_examples=300, deadline=None)
@given(
    requests=st.lists(
        st.tuples(PEERS, FORWARDED_FOR, PROTOS, st.sampled_from(["http", "https"])),
        min_size=1,
        max_size=6,
    ),
    trusted=st.sampled_from([[], TRUSTED, ["loopback", *TRUSTED]]),
    set_remote_addr=st.booleans(),
)
def test_client_calls_agree(
    requests: list[tuple[str, str | None, str | None, str]],
    trusted: list[str],
    set_remote_addr: bool,
) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    seen = []
    for mode in ("python", "compiled"):
        app = Recorder()
        kernel = load_twin("layercall", mode)
        layer = client_layer(
            kernel, app, trusted_proxies=trusted, set_remote_addr=set_remote_addr
        )
        for peer, forwarded_for, proto, scheme in requests:
            environ = make_environ("GET", "/", remote_addr=peer, scheme=scheme)
            if forwarded_for is not None:
                environ["HTTP_X_FORWARDED_FOR"] = forwarded_for
            if proto is not None:
                environ["HTTP_X_FORWARDED_PROTO"] = proto
            layer.fast_call(environ, start_response)
        seen.append(app.seen)

    assert seen[0] == seen[1]


@settings(max_examples=200, deadline=None)
@given(
    https=st.booleans(),
    authorization=st.booleans(),
    identity=st.booleans(),
    route_id=st.sampled_from([None, "docs", "other"]),
    app_headers=st.lists(
        st.sampled_from(
            [
                ("Content-Type", "text/html"),
                ("Cache-Control", "max-age=60"),
                ("Server", "gunicorn"),
                ("X-Frame-Options", "SAMEORIGIN"),
            ]
        ),
        max_size=4,
        unique=True,
    ),
)
def test_headers_calls_agree(
    https: bool,
    authorization: bool,
    identity: bool,
    route_id: str | None,
    app_headers: list[tuple[str, str]],
) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from wsgishield.middleware import SecurityHeadersMiddleware
    from wsgishield.policy import RouteHeaders

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", list(app_headers))
        return [b"ok"]

    responses = []
    for mode in ("python", "compiled"):
        layer = SecurityHeadersMiddleware(
            app, routes={"docs": RouteHeaders(profile="html")}
        )
        layer.fast_call = load_twin("layercall", mode).SecurityHeadersCall(layer)
        environ = make_environ(
            "GET",
            "/",
            scheme="https" if https else "http",
            subject="alice" if identity else None,
        )
        environ[context.SCHEME] = "https" if https else "http"
        if authorization:
            environ["HTTP_AUTHORIZATION"] = "Bearer x"
        if route_id is not None:
            environ[context.ROUTE] = Route(route_id, "/")
        response = call(layer, environ)
        responses.append((response.status, response.headers, response.body))

    assert responses[0] == responses[1]


HEADER_NAMES = ["Content-Type", "content-type", "Server", "X-Request-Id", "ETag"]


@settings(max_examples=60, deadline=None)
@given(
    responses=st.lists(
        st.tuples(
            st.lists(
                st.tuples(st.sampled_from(HEADER_NAMES), st.just("v")), max_size=3
            ),
            st.sampled_from(["list", "tuple", "list items"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_headers_calls_agree_over_repeats(
    responses: list[tuple[list[tuple[str, str]], str]],
) -> None:
    # One layer handles many responses, so the compiled call's usual path
    # (names it has already seen as unwatched) runs after the first ones.
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    from wsgishield.middleware import SecurityHeadersMiddleware

    def headers_of(items: list[tuple[str, str]], shape: str) -> Any:
        if shape == "tuple":
            return tuple(items)
        if shape == "list items":
            return [list(item) for item in items]
        return list(items)

    def replay(queue: list[tuple[list[tuple[str, str]], str]]) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            items, shape = queue.pop(0)
            start_response("200 OK", headers_of(items, shape))
            return [b"ok"]

        return app

    sent: dict[str, list[Any]] = {}
    for mode in ("python", "compiled"):
        app = replay(list(responses))
        layer = SecurityHeadersMiddleware(app)
        layer.fast_call = load_twin("layercall", mode).SecurityHeadersCall(layer)
        sent[mode] = []
        for _ in responses:
            environ = make_environ("GET", "/")
            environ[context.SCHEME] = "https"
            sent[mode].append([tuple(pair) for pair in call(layer, environ).headers])

    assert sent["compiled"] == sent["python"]


def test_headers_call_accepts_dict_subclass(kernel: ModuleType) -> None:
    # An environ that is not a dict takes the twin's code, which calls the
    # compiled variants' apply() from Python.
    from wsgishield.middleware import SecurityHeadersMiddleware

    class Environ(dict[str, Any]):
        pass

    layer = SecurityHeadersMiddleware(Recorder())
    layer.fast_call = kernel.SecurityHeadersCall(layer)

    response = call(layer, Environ(make_environ("GET", "/")))

    assert response.status_code == 200
    assert response.header("X-Content-Type-Options") == "nosniff"


def test_headers_call_sends_500_on_app_error(kernel: ModuleType) -> None:
    from wsgishield.middleware import SecurityHeadersMiddleware

    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    layer = SecurityHeadersMiddleware(broken)
    layer.fast_call = kernel.SecurityHeadersCall(layer)

    response = call(layer, make_environ("HEAD", "/"))

    assert response.status_code == 500
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.body == b""
