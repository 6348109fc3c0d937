"""Policy section of the metrics layer (see :mod:`wsgishield.metrics`)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ._options import STRUCT_OPTIONS as _STRUCT_OPTIONS

__all__ = [
    "MetricsPolicy",
]


class MetricsPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Prometheus metrics and their scrape endpoint (see
    :mod:`wsgishield.middleware.metrics`)."""

    #: Path of the scrape endpoint the shield serves itself. Scrapes are
    #: never counted in the request metrics.
    path: Annotated[str, msgspec.Meta(pattern=r"^/[!-~]{0,255}$")] = "/metrics"
    #: CIDRs or presets (``loopback``, ``private``) whose clients may scrape
    #: ``path``; others get 404. Empty: the shield serves no scrape endpoint,
    #: and scrapes go to the listener ``wsgishield.gunicorn`` starts on
    #: ``WSGISHIELD_METRICS_PORT``.
    allow: list[str] = []
    #: Label sets per process across all wsgishield metrics; new ones beyond
    #: this are dropped and counted.
    max_series: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 5000
    #: Share of allowed requests logged as access events (0 to 1).
    access_log_sample: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    #: Also expose prometheus-client's default registry (process and Python
    #: metrics) when not in multiprocess mode.
    include_default_registry: bool = True
