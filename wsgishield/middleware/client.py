"""Client address middleware: resolve the real client once per request.

It stores the result under ``wsgishield.client_ip`` (canonical text),
``wsgishield.client`` (:class:`~wsgishield.client.ClientAddress`, with the
peer, the source and any fallback reason) and ``wsgishield.scheme``. With a
metrics registry, it counts each fallback in
``wsgishield_client_address_fallbacks_total{reason}``.

.. warning::

   Trust only proxies that you run and that overwrite or append to the
   forwarding header. See :mod:`wsgishield.client` for the rules, and prefer
   the reverse proxy's own module (nginx ``realip``) when you do not need the
   address resolved in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import metrics
from .._fast.layercall import ClientAddressCall
from ..client import REASONS, ClientAddressResolver, Source
from ._chain import WrappingLayer

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ..policy import Policy
    from ..routes import RouteTable

__all__ = ["ClientAddressMiddleware"]


class ClientAddressMiddleware(WrappingLayer):
    """Resolve the client address and scheme, then call the wrapped app.

    Calling the layer runs its request path, ``layercall.ClientAddressCall``
    in ``wsgishield._fast``.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        trusted_proxies: Iterable[str] = (),
        source: Source = "x-forwarded-for",
        hops: int = 0,
        max_header_bytes: int = 8192,
        cloudflare_ranges: str | None = None,
        forwarded_proto: bool = True,
        set_remote_addr: bool = False,
        registry: metrics.MetricsRegistry | None = None,
    ) -> None:
        self.app = app
        self.resolver = ClientAddressResolver(
            trusted_proxies=trusted_proxies,
            source=source,
            hops=hops,
            max_header_bytes=max_header_bytes,
            cloudflare_ranges=cloudflare_ranges,
            forwarded_proto=forwarded_proto,
        )
        self.set_remote_addr = set_remote_addr
        # Counting is on when a registry is given; from_policy gives one
        # when the policy has a [metrics] section.
        self._fallbacks: metrics.Counts | None = None
        if registry is not None:
            self._fallbacks = metrics.Counts(registry.client_address_fallbacks, REASONS)
        self.fast_call = ClientAddressCall(self)

    @classmethod
    def from_policy(
        cls, app: WSGIApplication, policy: Policy, routes: RouteTable
    ) -> ClientAddressMiddleware:
        settings = policy.client
        return cls(
            app,
            trusted_proxies=settings.trusted_proxies,
            source=settings.source,
            hops=settings.hops,
            max_header_bytes=settings.max_header_bytes,
            cloudflare_ranges=settings.cloudflare_ranges,
            forwarded_proto=settings.forwarded_proto,
            set_remote_addr=settings.set_remote_addr,
            registry=metrics.REGISTRY if policy.metrics is not None else None,
        )
