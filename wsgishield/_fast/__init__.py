"""Compiled hot paths and their pure-Python twins.

Every kernel ``NAME`` ships as ``_NAME_c.pyx`` (compiled with Cython) and
``_NAME_py.py`` (its twin, with the same names and the same results). The
compiled module is used unless ``WSGISHIELD_NO_EXTENSIONS`` is set to a
non-empty value other than ``0``. A normal build that cannot import a compiled
kernel falls back to the twin with a ``RuntimeWarning``, never silently, and
``HAS_EXTENSIONS`` then reads ``False``.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from types import ModuleType

__all__ = ["HAS_EXTENSIONS", "KERNELS", "NO_EXTENSIONS", "load_kernel"]

KERNELS = (
    "address",
    "cidr",
    "gcra",
    "headerscan",
    "jsonscan",
    "layercall",
    "requestgate",
    "shm",
    "tally",
)

NO_EXTENSIONS = os.environ.get("WSGISHIELD_NO_EXTENSIONS", "") not in ("", "0")


@functools.cache
def load_kernel(name: str) -> ModuleType:
    """Import the compiled kernel ``name``, or its twin when extensions are off."""
    twin = importlib.import_module(f"wsgishield._fast._{name}_py")
    if NO_EXTENSIONS:
        return twin
    try:
        return importlib.import_module(f"wsgishield._fast._{name}_c")
    except ImportError as exc:
        warnings.warn(
            f"compiled kernel {name!r} failed to import ({exc}); using the "
            "pure-Python twin. Rebuild the package, or set "
            "WSGISHIELD_NO_EXTENSIONS=1 to select the twins on purpose.",
            RuntimeWarning,
            stacklevel=2,
        )
        return twin


HAS_EXTENSIONS: bool = all(load_kernel(name).COMPILED for name in KERNELS)
