"""Metrics and event-log overhead per allowed request, against
prometheus-flask-exporter on the same Flask app.

Run: ``python -m pytest bench/bench_metrics.py --benchmark-only -s``.

Both libraries run in prometheus-client's multiprocess mode, as they would
under Gunicorn: ``PROMETHEUS_MULTIPROC_DIR`` is set before anything imports
prometheus-client, and every value goes to a memory-mapped file. Requests go
straight into the WSGI callable with a prepared environ, so no socket or
HTTP parsing hides the difference.

Variants:

``flask``
    the bare app;
``shield-no-metrics``
    client-address and route layers only;
``shield-metrics``
    the same plus the metrics layer (access records off, the default);
``shield-metrics-access-log``
    the metrics layer logging 1 % of allowed requests as JSON events to a
    null stream;
``flask-exporter``
    prometheus-flask-exporter's ``GunicornInternalPrometheusMetrics``
    (request counter and latency histogram by path template, method and
    status);
``wsgi-shield-no-metrics``, ``wsgi-shield-metrics``
    the two shields around a bare WSGI callable instead of Flask. Flask's
    own ~45 us and its noise on a shared machine hide a difference of a
    few microseconds, so this pair measures the metrics layer itself.
"""

from __future__ import annotations

import os
import tempfile

# Multiprocess mode is chosen when prometheus-client is first imported.
_MULTIPROC = tempfile.mkdtemp(prefix="wsgishield-bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _MULTIPROC

import io  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from bench.conftest import interleaved, report  # noqa: E402
from flask import Flask  # noqa: E402
from prometheus_client import values  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from wsgishield import Shield  # noqa: E402
from wsgishield.logging import json_handler  # noqa: E402

ROUTES = [{"id": "items", "path": "/items/{id}", "methods": ["GET"]}]


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def shielded(metrics_section: dict[str, Any] | None) -> Flask:
    app = make_app()
    policy: dict[str, Any] = {"routes": ROUTES}
    if metrics_section is not None:
        policy["metrics"] = metrics_section
    app.wsgi_app = Shield(app.wsgi_app, policy)  # type: ignore[method-assign]
    return app


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"id":42}']


def shielded_bare(metrics_section: dict[str, Any] | None) -> Shield:
    policy: dict[str, Any] = {"routes": ROUTES}
    if metrics_section is not None:
        policy["metrics"] = metrics_section
    return Shield(bare_wsgi, policy)


def exported() -> Flask:
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    app = make_app()
    GunicornInternalPrometheusMetrics(app)
    return app


def caller(app: Any) -> Callable[[], Iterable[bytes]]:
    environ = EnvironBuilder(
        path="/items/42", environ_base={"REMOTE_ADDR": "198.51.100.7"}
    ).get_environ()

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        pass

    def call() -> Iterable[bytes]:
        body = app(dict(environ), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return body

    return call


@pytest.fixture(scope="module")
def variants() -> dict[str, Callable[[], Iterable[bytes]]]:
    if not getattr(values.ValueClass, "_multiprocess", False):
        pytest.fail("prometheus-client was imported before multiprocess mode was set")
    events_logger = logging.getLogger("wsgishield.events")
    events_logger.addHandler(json_handler(io.StringIO()))
    events_logger.setLevel(logging.INFO)
    built = {
        "flask": caller(make_app()),
        "shield-no-metrics": caller(shielded(None)),
        "shield-metrics": caller(shielded({"allow": ["loopback"]})),
        "shield-metrics-access-log": caller(
            shielded({"allow": ["loopback"], "access_log_sample": 0.01})
        ),
        "flask-exporter": caller(exported()),
        "wsgi-shield-no-metrics": caller(shielded_bare(None)),
        "wsgi-shield-metrics": caller(shielded_bare({"allow": ["loopback"]})),
    }
    for call in built.values():
        call()
    return built


@pytest.mark.parametrize(
    "variant",
    [
        "flask",
        "shield-no-metrics",
        "shield-metrics",
        "shield-metrics-access-log",
        "flask-exporter",
        "wsgi-shield-no-metrics",
        "wsgi-shield-metrics",
    ],
)
def test_request(
    benchmark: Any, variants: dict[str, Callable[[], Any]], variant: str
) -> None:
    benchmark.group = "allowed request, multiprocess mode"
    benchmark(variants[variant])


def test_overhead_interleaved(
    benchmark: Any,
    variants: dict[str, Callable[[], Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    medians = interleaved(variants, rounds=15, number=2000)
    shield_cost = medians["shield-metrics"] - medians["shield-no-metrics"]
    logged_cost = medians["shield-metrics-access-log"] - medians["shield-no-metrics"]
    exporter_cost = medians["flask-exporter"] - medians["flask"]
    layer_cost = medians["wsgi-shield-metrics"] - medians["wsgi-shield-no-metrics"]
    benchmark.extra_info.update(
        {
            "metrics_overhead_us": round(shield_cost * 1e6, 3),
            "metrics_access_log_overhead_us": round(logged_cost * 1e6, 3),
            "flask_exporter_overhead_us": round(exporter_cost * 1e6, 3),
            "metrics_layer_bare_wsgi_us": round(layer_cost * 1e6, 3),
        }
    )
    with capsys.disabled():
        print("\n" + report("allowed request, multiprocess mode", medians, "flask"))
        print(f"  wsgishield metrics overhead            {shield_cost * 1e6:7.3f} us")
        print(f"  wsgishield metrics + 1 % access log    {logged_cost * 1e6:7.3f} us")
        print(f"  prometheus-flask-exporter overhead     {exporter_cost * 1e6:7.3f} us")
        print(f"  metrics layer around bare WSGI         {layer_cost * 1e6:7.3f} us")
    benchmark.pedantic(variants["shield-metrics"], rounds=1, iterations=1)
