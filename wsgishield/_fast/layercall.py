"""Layer calls: the compiled kernel, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import load_kernel

__all__ = ["ClientAddressCall", "Entry", "RouteCall", "SecurityHeadersCall"]

_kernel = load_kernel("layercall")

ClientAddressCall = _kernel.ClientAddressCall
if TYPE_CHECKING:
    # Both bases behave alike; type checkers see the twin's.
    from ._layercall_py import Entry
else:
    Entry = _kernel.Entry
RouteCall = _kernel.RouteCall
SecurityHeadersCall = _kernel.SecurityHeadersCall
