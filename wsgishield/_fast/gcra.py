"""GCRA bucket kernel: the compiled module, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel

__all__ = ["COMPILED", "MAX_EXACT", "MICROSECONDS", "retry_seconds", "update"]

_kernel = load_kernel("gcra")

COMPILED: bool = _kernel.COMPILED
MAX_EXACT: int = _kernel.MAX_EXACT
MICROSECONDS: int = _kernel.MICROSECONDS
retry_seconds = _kernel.retry_seconds
update = _kernel.update
