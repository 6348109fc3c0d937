"""Address parser: the compiled kernel, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel

__all__ = ["format_address", "parse_address"]

_kernel = load_kernel("address")

parse_address = _kernel.parse_address
format_address = _kernel.format_address
