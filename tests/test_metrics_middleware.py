from __future__ import annotations

import gzip
import logging
import random
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from tests.support.metrics import sample_values, series_names
from tests.support.wsgi import call
from wsgishield import Shield, context, metrics
from wsgishield.errors import ConfigurationError
from wsgishield.middleware import MetricsMiddleware
from wsgishield.policy import load_policy
from wsgishield.problem import Problem

# The scrape endpoint serves loopback peers only, unless configured.
LOOPBACK = "127.0.0.1"

ROUTES = [
    {"id": "items", "path": "/items/{id}", "methods": ["GET", "POST"]},
    {"id": "login", "path": "/login", "methods": ["POST"]},
]

# (action, layer, reason, rule id, status) as the other layers record them.
DECISIONS = [
    ("denied-cidr", "access", "deny-list", "office-block", 403),
    ("banned", "access", "ban", "bans", 403),
    ("invalid", "request", "body-too-large", "items", 413),
    ("auth-failed", "auth", "expired", "items", 401),
    ("rate-limited", "ratelimit", "per-client", "items-per-ip", 429),
    ("cached", "cache", "fresh", "items", 200),
    ("unavailable", "ratelimit", "store-down", "items-per-ip", 503),
]


def ok_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def deciding_app(
    layer: str, action: str, reason: str, rule_id: str, status: int
) -> Callable[..., Iterable[bytes]]:
    problem = Problem(status, action, action.title())

    def app(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        context.record_decision(environ, layer, action, reason, rule_id)
        return problem(environ, start_response)

    return app


def shield(
    app: Callable[..., Iterable[bytes]],
    registry: metrics.MetricsRegistry,
    **options: Any,
) -> Shield:
    """A shield with client, route and metrics layers around ``app`` on ``registry``."""
    policy = load_policy(
        {"routes": ROUTES, "metrics": {"allow": ["loopback"], **options}}
    )
    built = Shield(app, policy)
    # Swap the metrics layer for one on the private registry.
    route_layer = built.layers[1]
    route_layer.app = MetricsMiddleware(
        app,
        allow=policy.metrics.allow,
        registry=registry,
        **options,  # type: ignore[union-attr]
    )
    return built


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> metrics.MetricsRegistry:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    return metrics.MetricsRegistry()


def test_layer_sits_after_routes() -> None:
    from wsgishield.middleware import RouteMiddleware
    from wsgishield.shield import LAYERS

    assert LAYERS.index(MetricsMiddleware) == LAYERS.index(RouteMiddleware) + 1


def test_policy_without_metrics_leaves_layer_off() -> None:
    built = Shield(ok_app, {"routes": ROUTES})
    assert not any(isinstance(layer, MetricsMiddleware) for layer in built.layers)


def test_policy_with_metrics_adds_layer() -> None:
    built = Shield(ok_app, {"metrics": {"allow": ["loopback"]}})
    assert any(isinstance(layer, MetricsMiddleware) for layer in built.layers)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        pytest.param({"allow": ["10.0.0.1/8"]}, "metrics.allow", id="host-bits-set"),
        pytest.param({"allow": ["nonsense"]}, "metrics.allow", id="not-a-network"),
        pytest.param(
            {"allow": ["loopback"], "path": "metrics"},
            "metrics.path",
            id="relative-path",
        ),
        pytest.param(
            {"allow": ["loopback"], "access_log_sample": 2.0},
            "metrics.access_log_sample",
            id="sample-above-one",
        ),
        pytest.param(
            {"allow": ["loopback"], "max_series": 10},
            "metrics.max_series",
            id="cap-too-small",
        ),
        pytest.param(
            {"allow": ["loopback"], "colour": "red"}, "metrics.colour", id="unknown-key"
        ),
    ],
)
def test_bad_policy_names_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Shield(ok_app, {"metrics": options})
    assert raised.value.key == key


def test_empty_allow_serves_no_path(registry: metrics.MetricsRegistry) -> None:
    layer = MetricsMiddleware(ok_app, allow=[], registry=registry)
    assert layer.path is None
    response = call(layer, "/metrics", remote_addr=LOOPBACK)
    assert response.status == "200 OK"
    assert response.body == b"ok"


def test_allowed_request_counts_one_series(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    before = sample_values(registry)
    call(app, "/items/42", remote_addr=LOOPBACK)
    after = sample_values(registry)

    changed = {key for key in after if after[key] != before.get(key, 0.0)}
    requests = {key for key in changed if key[0] == "wsgishield_http_requests_total"}
    assert requests == {
        (
            "wsgishield_http_requests_total",
            (
                ("decision", "allowed"),
                ("method", "GET"),
                ("route", "items"),
                ("status_class", "2xx"),
            ),
        )
    }
    assert not any(key[0] == "wsgishield_decisions_total" for key in changed)


@pytest.mark.parametrize(
    ("action", "layer", "reason", "rule_id", "status"),
    DECISIONS,
    ids=[decision[0] for decision in DECISIONS],
)
def test_decision_increments_exactly_its_series(
    registry: metrics.MetricsRegistry,
    action: str,
    layer: str,
    reason: str,
    rule_id: str,
    status: int,
) -> None:
    app = shield(deciding_app(layer, action, reason, rule_id, status), registry)
    before = sample_values(registry)
    call(app, "/items/7", method="POST", remote_addr=LOOPBACK)
    after = sample_values(registry)

    changed = {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if after[key] != before.get(key, 0.0)
    }
    status_class = f"{str(status)[0]}xx"
    request_key = (
        "wsgishield_http_requests_total",
        (
            ("decision", action),
            ("method", "POST"),
            ("route", "items"),
            ("status_class", status_class),
        ),
    )
    decision_key = (
        "wsgishield_decisions_total",
        (("action", action), ("layer", layer), ("reason", reason), ("rule", rule_id)),
    )
    counters = {
        key: delta for key, delta in changed.items() if key[0].endswith("_total")
    }
    assert counters == {request_key: 1.0, decision_key: 1.0}


def test_histogram_counts_decision_and_status(
    registry: metrics.MetricsRegistry,
) -> None:
    app = shield(
        deciding_app("ratelimit", "rate-limited", "per-client", "r1", 429), registry
    )
    call(app, "/login", method="POST", remote_addr=LOOPBACK)
    values = sample_values(registry)
    key = (
        "wsgishield_http_request_duration_seconds_count",
        (
            ("decision", "rate-limited"),
            ("method", "POST"),
            ("route", "login"),
            ("status_class", "4xx"),
        ),
    )
    assert values[key] == 1.0


def test_in_flight_returns_to_zero(registry: metrics.MetricsRegistry) -> None:
    seen: list[float] = []

    def app(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        seen.append(registry.value(registry.http_in_flight))
        return ok_app(environ, start_response)

    wrapped = shield(app, registry)
    call(wrapped, "/items/1", remote_addr=LOOPBACK)
    assert seen == [1.0]
    assert registry.value(registry.http_in_flight) == 0.0


def test_random_paths_and_methods_add_no_series(
    registry: metrics.MetricsRegistry,
) -> None:
    app = shield(ok_app, registry)
    generator = random.Random(8)
    # Warm every bounded label value once, so that only unbounded input
    # could add series afterwards.
    for method in ["GET", "BREW", "POST"]:
        call(app, "/nowhere", method=method, remote_addr=LOOPBACK)
    names_before = series_names(registry)
    count_before = registry.series_count

    alphabet = string.ascii_letters + string.digits + "/-._~%"
    for _ in range(10_000):
        path = "/" + "".join(generator.choices(alphabet, k=generator.randint(1, 40)))
        method = "".join(
            generator.choices(string.ascii_uppercase, k=generator.randint(1, 12))
        )
        call(app, path, method=method, remote_addr=LOOPBACK)

    assert registry.series_count == count_before
    assert series_names(registry) == names_before
    totals = sample_values(registry)
    unmatched = (
        "wsgishield_http_requests_total",
        (
            ("decision", "allowed"),
            ("method", "other"),
            ("route", "(unmatched)"),
            ("status_class", "2xx"),
        ),
    )
    assert totals[unmatched] >= 10_000 - 50


def test_series_cap_drops_and_counts(registry: metrics.MetricsRegistry) -> None:
    registry.max_series = registry.series_count + 3
    for number in range(10):
        registry.jwt_failures.inc(f"reason-{number}")
    values = sample_values(registry)
    kept = [key for key in values if key[0] == "wsgishield_jwt_failures_total"]
    assert len(kept) == 3
    dropped = (
        "wsgishield_metrics_series_dropped_total",
        (("metric", "wsgishield_jwt_failures"),),
    )
    assert values[dropped] == 7.0


def test_series_cap_keeps_requests_flowing(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry, max_series=100)
    registry.max_series = registry.series_count
    response = call(app, "/items/1", method="PUT", remote_addr=LOOPBACK)
    assert response.status == "200 OK"
    assert response.body == b"ok"
    assert registry.value(registry.http_in_flight) == 0.0


def test_app_exception_counts_500(registry: metrics.MetricsRegistry) -> None:
    def broken(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        raise RuntimeError("boom")

    app = shield(broken, registry)
    with pytest.raises(RuntimeError):
        call(app, "/items/1", remote_addr=LOOPBACK)
    key = (
        "wsgishield_http_requests_total",
        (
            ("decision", "allowed"),
            ("method", "GET"),
            ("route", "items"),
            ("status_class", "5xx"),
        ),
    )
    assert sample_values(registry)[key] == 1.0
    assert registry.value(registry.http_in_flight) == 0.0


def test_lazy_start_response_counts_on_close(registry: metrics.MetricsRegistry) -> None:
    def streaming(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    app = shield(streaming, registry)
    response = call(app, "/items/1", method="POST", remote_addr=LOOPBACK)
    assert response.status == "201 Created"
    assert response.body == b"ab"
    key = (
        "wsgishield_http_requests_total",
        (
            ("decision", "allowed"),
            ("method", "POST"),
            ("route", "items"),
            ("status_class", "2xx"),
        ),
    )
    assert sample_values(registry)[key] == 1.0


# --- The scrape endpoint ------------------------------------------------------


def test_scrape_from_loopback_succeeds(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    call(app, "/items/1", remote_addr=LOOPBACK)
    response = call(app, "/metrics", remote_addr=LOOPBACK)
    assert response.status == "200 OK"
    assert response.header("Content-Type").startswith("text/plain")
    assert response.header("Cache-Control") == "no-store"
    expected = (
        b'wsgishield_http_requests_total{decision="allowed",method="GET",'
        b'route="items",status_class="2xx"} 1.0'
    )
    assert expected in response.body


def test_scrape_is_never_counted(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    before = sample_values(registry)
    for _ in range(3):
        call(app, "/metrics", remote_addr=LOOPBACK)
    call(app, "/metrics", remote_addr="203.0.113.9")
    after = sample_values(registry)
    requests = {k: v for k, v in after.items() if k[0].startswith("wsgishield_http_")}
    assert requests == {
        k: v for k, v in before.items() if k[0].startswith("wsgishield_http_")
    }


@pytest.mark.parametrize(
    "remote_addr",
    ["203.0.113.9", "10.1.2.3", "::ffff:8.8.8.8", "2001:db8::1"],
    ids=["public-v4", "private-v4", "mapped-v6", "public-v6"],
)
def test_scrape_from_other_network_gets_404(
    registry: metrics.MetricsRegistry,
    remote_addr: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = shield(ok_app, registry)
    with caplog.at_level(logging.WARNING, logger="wsgishield.events"):
        response = call(app, "/metrics", remote_addr=remote_addr)
    assert response.status == "404 Not Found"
    assert response.header("Content-Type") == "application/problem+json"
    assert b"wsgishield_" not in response.body


def test_unix_socket_peer_counts_as_loopback(registry: metrics.MetricsRegistry) -> None:
    # The client layer treats a peer without an address as a local proxy on
    # a Unix socket, so that proxy must block the path itself (see
    # deploy/nginx).
    app = shield(ok_app, registry)
    response = call(app, "/metrics", remote_addr="")
    assert response.status == "200 OK"


def test_garbage_peer_without_client_layer_gets_404(
    registry: metrics.MetricsRegistry,
) -> None:
    layer = MetricsMiddleware(ok_app, allow=["loopback"], registry=registry)
    response = call(layer, "/metrics", remote_addr="garbage")
    assert response.status == "404 Not Found"


def test_spoofed_forwarded_header_cannot_scrape(
    registry: metrics.MetricsRegistry,
) -> None:
    app = shield(ok_app, registry)
    response = call(
        app,
        "/metrics",
        remote_addr="203.0.113.9",
        headers={"X-Forwarded-For": "127.0.0.1"},
    )
    assert response.status == "404 Not Found"


def test_scrape_gzip_when_accepted(registry: metrics.MetricsRegistry) -> None:
    # Without the default registry, whose CPU time moves between two scrapes.
    app = shield(ok_app, registry, include_default_registry=False)
    call(app, "/items/1", remote_addr=LOOPBACK)
    plain = call(app, "/metrics", remote_addr=LOOPBACK)
    response = call(
        app,
        "/metrics",
        headers={"Accept-Encoding": "gzip, deflate"},
        remote_addr=LOOPBACK,
    )
    assert response.header("Content-Encoding") == "gzip"
    assert "content-encoding" not in plain.header_names()
    assert gzip.decompress(response.body) == plain.body
    assert int(response.header("Content-Length")) == len(response.body)


def test_scrape_with_post_gets_405(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    response = call(app, "/metrics", method="POST", remote_addr=LOOPBACK)
    assert response.status == "405 Method Not Allowed"
    assert response.header("Allow") == "GET, HEAD"


def test_scrape_head_has_no_body(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    response = call(app, "/metrics", method="HEAD", remote_addr=LOOPBACK)
    assert response.status == "200 OK"
    assert response.body == b""
    assert int(response.header("Content-Length")) > 0


def test_scrape_openmetrics_negotiated(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    call(app, "/items/1", remote_addr=LOOPBACK)
    response = call(
        app,
        "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        remote_addr=LOOPBACK,
    )
    assert response.header("Content-Type").startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


def test_scrape_failure_is_503(
    registry: metrics.MetricsRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> tuple[bytes, str]:
        raise ValueError("corrupt metrics file entry at offset 8")

    monkeypatch.setattr(metrics, "exposition", fail)
    app = shield(ok_app, registry)
    with caplog.at_level(logging.ERROR, logger="wsgishield.metrics"):
        response = call(app, "/metrics", remote_addr=LOOPBACK)
    assert response.status == "503 Service Unavailable"
    assert response.header("Content-Type") == "application/problem+json"
    assert "collecting metrics failed" in caplog.text


def test_other_path_not_served(registry: metrics.MetricsRegistry) -> None:
    app = shield(ok_app, registry)
    for path in ["/metrics/", "/metrics.txt", "/METRICS", "//metrics"]:
        response = call(app, path, remote_addr=LOOPBACK)
        assert (path, response.status, response.body) == (path, "200 OK", b"ok")


def test_access_log_sample_emits_records(
    registry: metrics.MetricsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    app = shield(ok_app, registry, access_log_sample=1.0)
    with caplog.at_level(logging.INFO, logger="wsgishield.events.http"):
        call(app, "/items/5", remote_addr="127.0.0.3")
    records = [
        record for record in caplog.records if record.name == "wsgishield.events.http"
    ]
    assert len(records) == 1
    event = records[0].event  # type: ignore[attr-defined]
    assert event["event.action"] == "allowed"
    assert event["http.response.status_code"] == 200
    assert event["url.path"] == "/items/5"
    assert isinstance(event["event.duration"], int)


def test_access_log_off_by_default(
    registry: metrics.MetricsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    app = shield(ok_app, registry)
    with caplog.at_level(logging.DEBUG, logger="wsgishield.events"):
        call(app, "/items/5", remote_addr=LOOPBACK)
    assert not caplog.records


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/items/\x00", "GET"),
        ("/items/\xff\xfe", "GET"),
        ("/" + "a" * 100_000, "GET"),
        ("/metrics\x00", "GET"),
        ("/items/1", "G E T"),
        ("/items/1", "X" * 10_000),
        ("", ""),
    ],
    ids=[
        "nul",
        "latin-1",
        "huge-path",
        "metrics-nul",
        "spaced-method",
        "huge-method",
        "empty",
    ],
)
def test_hostile_request_is_counted_once(
    registry: metrics.MetricsRegistry, path: str, method: str
) -> None:
    app = shield(ok_app, registry)
    before = registry.series_count
    response = call(app, path, method=method, remote_addr=LOOPBACK)
    assert (response.status, response.body) == ("200 OK", b"ok")
    total = sum(
        value
        for key, value in sample_values(registry).items()
        if key[0] == "wsgishield_http_requests_total"
    )
    assert total == 1.0
    assert registry.series_count <= before + 2
