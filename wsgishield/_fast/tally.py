"""Request tally: the compiled kernel, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel

__all__ = ["RequestTally"]

_kernel = load_kernel("tally")

RequestTally = _kernel.RequestTally
