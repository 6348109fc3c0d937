"""Client-address layer and address parser benchmarks.

Run: ``python -m pytest bench/bench_client.py --benchmark-only -s``. Besides
pytest-benchmark's table, each ratio test prints an interleaved A/B
measurement (see ``bench/conftest.py``).
"""

from __future__ import annotations

import importlib
import ipaddress
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from bench.conftest import interleaved, report
from wsgishield import Shield

ADDRESSES = {
    "ipv4": "203.0.113.9",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "ipv6-bracket-port": "[2001:db8::1]:443",
}

compiled = importlib.import_module("wsgishield._fast._address_c")
twin = importlib.import_module("wsgishield._fast._address_py")

PARSERS = {
    "compiled": compiled.parse_address,
    "twin": twin.parse_address,
    "ipaddress": ipaddress.ip_address,
}


@pytest.mark.parametrize("kind", list(ADDRESSES))
@pytest.mark.parametrize("parser", list(PARSERS))
def test_parse_address(benchmark: Any, parser: str, kind: str) -> None:
    text = ADDRESSES[kind]
    if parser == "ipaddress" and kind == "ipv6-bracket-port":
        text = "2001:db8::1"  # ipaddress cannot strip brackets or ports
    benchmark.group = f"parse {kind}"
    benchmark(PARSERS[parser], text)


def test_parse_address_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    for kind, text in ADDRESSES.items():
        plain = "2001:db8::1" if kind == "ipv6-bracket-port" else text
        medians = interleaved(
            {
                "compiled": lambda text=text: compiled.parse_address(text),
                "twin": lambda text=text: twin.parse_address(text),
                "ipaddress.ip_address": lambda plain=plain: ipaddress.ip_address(plain),
            }
        )
        with capsys.disabled():
            print("\n" + report(f"parse {kind}", medians, "compiled"))


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def request_environ() -> dict[str, Any]:
    return EnvironBuilder(
        path="/items/7",
        headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.5"},
    ).get_environ()


def call(app: Any, environ: dict[str, Any]) -> None:
    response = app(dict(environ), lambda status, headers, exc_info=None: None)
    for _ in response:
        pass
    close = getattr(response, "close", None)
    if close is not None:
        close()


BARE = flask_app()
SHIELDED = flask_app()
SHIELDED.wsgi_app = Shield(  # type: ignore[method-assign]
    SHIELDED.wsgi_app, {"client": {"trusted_proxies": ["10.0.0.0/8"]}}
)
ENVIRON = request_environ()


@pytest.mark.parametrize("variant", ["bare", "shield"])
def test_flask_request(benchmark: Any, variant: str) -> None:
    app = BARE if variant == "bare" else SHIELDED
    benchmark.group = "flask request"
    benchmark(call, app, ENVIRON)


def test_shield_overhead_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    layer = Shield(
        lambda environ, start_response: [],
        {"client": {"trusted_proxies": ["10.0.0.0/8"]}},
    )
    medians = interleaved(
        {
            "bare flask": lambda: call(BARE, ENVIRON),
            "flask + shield (client layer)": lambda: call(SHIELDED, ENVIRON),
            "shield layer alone": lambda: layer(dict(ENVIRON), None),
            "dict(environ) copy alone": lambda: dict(ENVIRON),
        },
        number=500,
    )
    with capsys.disabled():
        print("\n" + report("request through Flask", medians, "bare flask"))
