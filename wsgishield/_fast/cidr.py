"""Longest-prefix matcher: compiled kernel or twin (see ``wsgishield._fast``)."""

from __future__ import annotations

from . import load_kernel

__all__ = ["NO_MATCH", "PrefixTable", "parse_host", "parse_network"]

_kernel = load_kernel("cidr")

NO_MATCH: int = _kernel.NO_MATCH
PrefixTable = _kernel.PrefixTable
parse_host = _kernel.parse_host
parse_network = _kernel.parse_network
