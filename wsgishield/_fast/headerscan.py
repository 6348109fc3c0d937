"""Header size kernel: the compiled one, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel

__all__ = ["header_totals"]

_kernel = load_kernel("headerscan")

header_totals = _kernel.header_totals
