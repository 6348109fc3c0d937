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

import atexit
import os
import shutil
import tempfile

# Multiprocess mode is chosen when prometheus-client is first imported.
_MULTIPROC = tempfile.mkdtemp(prefix="wsgishield-bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _MULTIPROC
atexit.register(shutil.rmtree, _MULTIPROC, ignore_errors=True)

import io  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip(
    "prometheus_flask_exporter", reason="the baseline: pip install 'wsgishield[bench]'"
)

from flask import Flask  # noqa: E402
from prometheus_client import values  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.conftest import interleaved, report  # noqa: E402
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
        pytest.fail(
            "prometheus-client was imported before multiprocess mode was set; "
            "run bench/bench_metrics.py on its own"
        )
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


def paired_overhead(
    base: Callable[[], Any],
    variant: Callable[[], Any],
    rounds: int = 41,
    number: int = 1000,
) -> float:
    """Return the median over rounds of (variant - base) seconds per call.

    Each round times the two back to back, so both see the same noise from
    the other core. The median of the per-round differences is steadier
    than the difference of two medians when the base itself costs ~45 us.
    """
    differences = []
    for index in range(rounds):
        # Alternate which one runs first, so neither always gets the warmer
        # or the quieter half of a round.
        order = (base, variant) if index % 2 == 0 else (variant, base)
        timings = {}
        for function in order:
            started = time.perf_counter()
            for _ in range(number):
                function()
            timings[function] = (time.perf_counter() - started) / number
        differences.append(timings[variant] - timings[base])
    return statistics.median(differences)


PAIRS = {
    "wsgishield metrics layer (Flask app)": ("shield-no-metrics", "shield-metrics"),
    "wsgishield metrics + 1 % access log": (
        "shield-no-metrics",
        "shield-metrics-access-log",
    ),
    "prometheus-flask-exporter": ("flask", "flask-exporter"),
    "wsgishield metrics layer (bare WSGI)": (
        "wsgi-shield-no-metrics",
        "wsgi-shield-metrics",
    ),
}


def test_overhead_interleaved(
    benchmark: Any,
    variants: dict[str, Callable[[], Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    medians = interleaved(variants, rounds=15, number=2000)
    overheads = {
        label: paired_overhead(variants[base], variants[variant])
        for label, (base, variant) in PAIRS.items()
    }
    benchmark.extra_info.update(
        {label: round(value * 1e6, 3) for label, value in overheads.items()}
    )
    with capsys.disabled():
        print("\n" + report("allowed request, multiprocess mode", medians, "flask"))
        print("overhead per request (median of paired rounds)")
        for label, value in overheads.items():
            print(f"  {label:<40} {value * 1e6:7.3f} us")
    benchmark.pedantic(variants["shield-metrics"], rounds=1, iterations=1)
