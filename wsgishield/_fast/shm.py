"""Shared-memory bucket table: the compiled module or its twin."""

from __future__ import annotations

from . import load_kernel

__all__ = ["COMPILED", "Admission", "SharedTable", "key_hash", "monotonic_microseconds"]

_kernel = load_kernel("shm")

COMPILED: bool = _kernel.COMPILED
Admission = _kernel.Admission
SharedTable = _kernel.SharedTable
key_hash = _kernel.key_hash
monotonic_microseconds = _kernel.monotonic_microseconds
