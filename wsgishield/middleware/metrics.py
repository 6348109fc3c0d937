"""Metrics middleware: count every request and serve the Prometheus scrape.

It sits inside the client-address and route layers and outside every layer
that can respond to a request itself, so it sees the route rule, the decision a
layer recorded under ``wsgishield.decision`` and the final status. Per
request it records:

- ``wsgishield_http_requests_total`` and
  ``wsgishield_http_request_duration_seconds`` by route rule id (never the
  raw path; ``(unmatched)`` when no rule matched), method (``other`` for a
  non-standard one), status class and decision (``allowed`` when no layer
  decided);
- ``wsgishield_http_requests_in_flight``;
- ``wsgishield_decisions_total`` by layer, action, reason and rule, for
  every decision other than "allowed".

The other layers count their own events (rate-limit results, cache lookups,
token failures...) when the policy has a ``[metrics]`` section.

The latency runs until the application returns its response iterable, which
for Flask is after the body is built. A streamed body's send time is not
included.

Requests for ``path`` (``/metrics``) are served here and never counted.

.. warning::

   The scrape endpoint shows route names, rule ids and traffic volumes.
   ``allow`` is checked against the *resolved* client address, so a reverse
   proxy on the same host that is not in ``client.trusted_proxies`` makes
   every client look like loopback: either list the proxy as trusted, block
   ``path`` at the proxy (the ``deploy/nginx`` config does), or leave
   ``allow`` empty and scrape the separate listener that
   ``wsgishield.gunicorn`` starts on ``WSGISHIELD_METRICS_PORT``.
"""

from __future__ import annotations

import gzip
import logging
import random
from collections.abc import Iterable, Iterator
from time import perf_counter, perf_counter_ns
from typing import TYPE_CHECKING, Any

from .. import context, events, metrics
from .._fast.address import parse_address
from .._fast.tally import RequestTally
from ..errors import ConfigurationError
from ..networks import NetworkSet, expand_presets
from ..problem import PROBLEM_TYPE_BASE, Problem

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["MetricsMiddleware"]

logger = logging.getLogger("wsgishield.metrics")

_SCRAPE_METHODS = ("GET", "HEAD")
_DROPPED = (-1, -1)


class MetricsMiddleware:
    """Record request metrics and serve scrapes to allowed networks."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        path: str = "/metrics",
        allow: Iterable[str] = (),
        max_series: int = metrics.DEFAULT_MAX_SERIES,
        access_log_sample: float = 0.0,
        include_default_registry: bool = True,
        registry: metrics.MetricsRegistry = metrics.REGISTRY,
        problem_type_base: str = PROBLEM_TYPE_BASE,
    ) -> None:
        allow = list(allow)
        if not path.startswith("/"):
            raise ConfigurationError(
                "metrics.path", path, "expected a path starting with '/'"
            )
        if not 0.0 <= access_log_sample <= 1.0:
            raise ConfigurationError(
                "metrics.access_log_sample", access_log_sample, "expected 0 to 1"
            )
        if max_series < 1:
            raise ConfigurationError(
                "metrics.max_series", max_series, "expected at least 1"
            )
        try:
            self.allow = NetworkSet(expand_presets(allow))
        except ValueError as exc:
            raise ConfigurationError("metrics.allow", allow, str(exc)) from exc

        self.app = app
        # With no network allowed, the path is an ordinary API path.
        self.path = path if self.allow else None
        self.access_log_sample = access_log_sample
        self.include_default_registry = include_default_registry
        self.registry = registry
        registry.max_series = max_series

        self._requests = registry.http_requests
        self._durations = registry.http_request_duration
        self._decisions = registry.decisions_total
        self._bounds = self._durations.bounds
        in_flight = registry.http_in_flight.slot()
        if in_flight is None:
            raise ConfigurationError(
                "metrics.max_series", max_series, "too small for the built-in metrics"
            )
        self._in_flight = in_flight
        # (route id, method, status class, decision) -> (counter slot,
        # histogram slot). Every part is bounded, so this table is too.
        self._slots: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        self._tally = RequestTally(self._slots, self._bounds, in_flight)

        self._not_found = Problem(
            404, "not-found", "Not Found", type_base=problem_type_base
        )
        self._method_not_allowed = Problem(
            405,
            "method-not-allowed",
            "Method Not Allowed",
            headers=[("Allow", ", ".join(_SCRAPE_METHODS))],
            type_base=problem_type_base,
        )
        self._unavailable = Problem(
            503,
            "metrics-unavailable",
            "Metrics Unavailable",
            "The metrics could not be collected; the server log has the cause.",
            type_base=problem_type_base,
        )

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> MetricsMiddleware | None:
        settings = policy.metrics
        if settings is None:
            return None
        return cls(
            app,
            path=settings.path,
            allow=settings.allow,
            max_series=settings.max_series,
            access_log_sample=settings.access_log_sample,
            include_default_registry=settings.include_default_registry,
            problem_type_base=policy.problem_type_base,
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        # self.path is None when scrapes are off, which no PATH_INFO equals.
        if environ.get("PATH_INFO") == self.path:
            return self._scrape(environ, start_response)

        status: list[str] = []

        def capture(
            line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            status.append(line)
            return start_response(line, headers, exc_info)

        store = self.registry.store
        tally = self._tally
        tally.enter(store.values, store.lock)
        started = perf_counter()
        try:
            body = self.app(environ, capture)
        except BaseException:
            self._record(environ, "500", started)
            raise

        if not status:
            # The app calls start_response on the first iteration; count
            # the request when the server closes the body.
            return _RecordOnClose(self, environ, body, status, started)

        # The same steps as _record(), written out because every request
        # takes them: a method call here costs a measurable share.
        duration = perf_counter() - started
        outcome = tally.leave(store.values, store.lock, environ, status[-1], duration)
        if outcome is not None:
            self._finish(environ, status[-1], duration, outcome)
        if self.access_log_sample and random.random() < self.access_log_sample:
            self._log_access(environ, status[-1], duration)
        return body

    def _record(self, environ: WSGIEnvironment, status: str, started: float) -> None:
        duration = perf_counter() - started
        store = self.registry.store
        outcome = self._tally.leave(store.values, store.lock, environ, status, duration)
        if outcome is not None:
            self._finish(environ, status, duration, outcome)
        if self.access_log_sample and random.random() < self.access_log_sample:
            self._log_access(environ, status, duration)

    def _finish(
        self, environ: WSGIEnvironment, status: str, duration: float, outcome: Any
    ) -> None:
        """Add a new label set's slots, or count the decision."""
        if isinstance(outcome, tuple):
            self._allocate(outcome)
            store = self.registry.store
            outcome = self._tally.leave(
                store.values, store.lock, environ, status, duration
            )
            if outcome is None:
                return

        decision = environ.get(context.DECISION)
        if decision is not None:
            self._decisions.inc(
                decision.layer,
                decision.action,
                decision.reason,
                decision.rule_id or "none",
            )

    def _allocate(self, key: tuple[str, str, str, str]) -> tuple[int, int]:
        counter = self._requests.slot(*key)
        histogram = self._durations.slot(*key)
        # (-1, -1) marks a label set dropped by the series cap; it stays
        # dropped in this process. Every part of the key is bounded, so the
        # table stays small either way.
        slots = (
            _DROPPED if counter is None or histogram is None else (counter, histogram)
        )
        self._slots[key] = slots
        return slots

    def _log_access(
        self, environ: WSGIEnvironment, status: str, duration: float
    ) -> None:
        code = int(status[:3]) if status[:3].isdigit() else None
        decision = environ.get(context.DECISION)
        fields = events.request_fields(
            environ, status=code, duration_ns=int(duration * 1e9)
        )
        events.emit(
            "http",
            decision.action if decision is not None else "allowed",
            fields,
            level=logging.INFO,
            client=fields.get("client.ip", ""),
        )

    def _scrape(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if not self._scrape_allowed(environ):
            fields = events.request_fields(environ, status=404)
            client = fields.get("client.ip", "")
            events.emit("metrics", "scrape-denied", fields, client=client)
            return self._not_found(environ, start_response)

        if environ.get("REQUEST_METHOD") not in _SCRAPE_METHODS:
            return self._method_not_allowed(environ, start_response)

        started = perf_counter_ns()
        try:
            body, content_type = metrics.exposition(
                environ.get("HTTP_ACCEPT"),
                self.registry,
                include_default=self.include_default_registry,
            )
        except Exception:
            # A corrupt or vanished multiprocess file must not turn into a
            # 500 or crash the worker; the scrape gets a 503 problem instead.
            logger.exception("collecting metrics failed")
            return self._unavailable(environ, start_response)
        logger.debug("served a scrape in %d ns", perf_counter_ns() - started)

        headers = [("Content-Type", content_type), ("Cache-Control", "no-store")]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            # Prometheus asks for gzip. An exposition of 180 label sets
            # measured 380 kB plain and 15 kB at level 1.
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Vary", "Accept-Encoding"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [body]

    def _scrape_allowed(self, environ: WSGIEnvironment) -> bool:
        client = environ.get(context.CLIENT)
        if client is not None:
            return self.allow.contains(client.version, client.value)
        parsed = parse_address(environ.get("REMOTE_ADDR") or "")
        return parsed is not None and self.allow.contains(parsed[1], parsed[2])


class _RecordOnClose:
    """A response body that records its request when the server closes it."""

    def __init__(
        self,
        middleware: MetricsMiddleware,
        environ: WSGIEnvironment,
        body: Iterable[bytes],
        status: list[str],
        started: float,
    ) -> None:
        self._middleware = middleware
        self._environ = environ
        self._body = body
        self._status = status
        self._started = started
        self._recorded = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._recorded:
                self._recorded = True
                status = self._status[-1] if self._status else "500"
                self._middleware._record(self._environ, status, self._started)
