"""JSON pre-scan: the compiled kernel, or its twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel
from ._jsonscan_common import OK, TOO_DEEP, TOO_MANY_TOKENS, VERDICTS

__all__ = ["OK", "TOO_DEEP", "TOO_MANY_TOKENS", "VERDICTS", "scan_json"]

_kernel = load_kernel("jsonscan")

scan_json = _kernel.scan_json
