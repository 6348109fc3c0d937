"""Count instructions per call with callgrind, for the ``*_instructions`` scripts.

Instruction counts do not depend on how busy the machine is, so they
compare runs that timing cannot. For each variant, callgrind counts two
whole processes of ``python -m MODULE VARIANT N``: one with N = 0, one with
N = ``measured``. Both build the variant and make the same warm-up calls,
so the difference of their totals divided by ``measured`` is the cost of
one call.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable


def count_instructions(module: str, variant: str, count: int) -> int:
    """Return callgrind's total for ``python -m module variant count``."""
    with tempfile.TemporaryDirectory() as directory:
        output = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/callgrind.out",
                sys.executable,
                "-m",
                module,
                variant,
                str(count),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    match = re.search(r"Collected : (\d+)", output)
    if match is None:
        raise RuntimeError(f"no instruction count in callgrind's output: {output}")
    return int(match.group(1))


def per_call(module: str, variants: Iterable[str], measured: int) -> dict[str, int]:
    """Return the instructions of one call of each variant."""
    counts = {}
    for variant in variants:
        baseline = count_instructions(module, variant, 0)
        total = count_instructions(module, variant, measured)
        counts[variant] = (total - baseline) // measured
    return counts
