"""Helpers shared by the metrics tests: call a WSGI app, read a registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsgishield import metrics

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def call(
    app: Callable[..., Iterable[bytes]],
    path: str,
    *,
    method: str = "GET",
    remote_addr: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[str, dict[str, str], bytes]:
    """Run one request through ``app``; return status, headers and body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": remote_addr,
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        **(headers or {}),
    }
    response: dict[str, Any] = {}

    def start_response(
        status: str, header_list: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        response["status"] = status
        response["headers"] = dict(header_list)

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return response["status"], response["headers"], data


def sample_values(registry: metrics.MetricsRegistry) -> dict[SampleKey, float]:
    """Every sample the registry would expose, keyed by name and sorted labels."""
    values: dict[SampleKey, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def series_names(registry: metrics.MetricsRegistry) -> set[SampleKey]:
    return set(sample_values(registry))
