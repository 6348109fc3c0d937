"""Build the compiled kernels in ``wsgishield/_fast``, unless told not to.

Every ``wsgishield/_fast/*.pyx`` file becomes one extension module. Set
``WSGISHIELD_NO_EXTENSIONS=1`` to build and install the pure-Python twins
only; the build log states which mode was built.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("WSGISHIELD_NO_EXTENSIONS", "") not in ("", "0")


def compiled_kernels() -> list[Extension]:
    from Cython.Build import cythonize

    sources = sorted(Path("wsgishield/_fast").glob("*.pyx"))
    extensions = [
        Extension(
            "wsgishield._fast." + source.stem,
            [str(source)],
            extra_compile_args=["-O3"],
        )
        for source in sources
    ]
    return cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True},
        quiet=True,
    )


if NO_EXTENSIONS:
    print(
        "wsgishield build mode: pure Python (WSGISHIELD_NO_EXTENSIONS is set)",
        file=sys.stderr,
    )
    setup(ext_modules=[])
else:
    print("wsgishield build mode: compiled Cython kernels", file=sys.stderr)
    setup(ext_modules=compiled_kernels())
