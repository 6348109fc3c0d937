"""Layer calls: the compiled kernel, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel

__all__ = ["ClientAddressCall", "RouteCall", "SecurityHeadersCall"]

_kernel = load_kernel("layercall")

ClientAddressCall = _kernel.ClientAddressCall
RouteCall = _kernel.RouteCall
SecurityHeadersCall = _kernel.SecurityHeadersCall
