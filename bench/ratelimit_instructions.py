"""Count the instructions one Flask request costs with and without a limiter.

Instruction counts do not depend on how busy the machine is, so they
compare runs that timing cannot. Run from the repository root (needs
``valgrind`` and the ``bench`` extra)::

    python -m bench.ratelimit_instructions

For each variant, callgrind counts two whole processes that build the app
and send 200 warm-up requests, one of them followed by 1,000 measured
requests. The difference of the two totals divided by 1,000 is the cost
of one request. ``python -m bench.ratelimit_instructions VARIANT N`` is the
process that callgrind runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable

from bench.instructions import per_call

VARIANTS = ("bare", "shm", "memory", "flask-limiter")
WARM_UP = 200
MEASURED = 1000


def build(variant: str, directory: str) -> Callable[[], None]:
    """Return one request to the Flask app of ``variant``."""
    from bench.bench_ratelimit import (
        _call,
        _flask_app,
        _flask_limiter_app,
        _shield_app,
    )
    from wsgishield.stores.buckets_memory import MemoryBucketStore
    from wsgishield.stores.buckets_shm import SharedMemoryBucketStore

    if variant == "bare":
        return _call(_flask_app())
    if variant == "shm":
        path = os.path.join(directory, "table")
        return _shield_app(SharedMemoryBucketStore(slots=1 << 16, path=path))
    if variant == "memory":
        return _shield_app(MemoryBucketStore())
    return _flask_limiter_app("memory://")


def run_requests(variant: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        once = build(variant, directory)
        for _ in range(WARM_UP + count):
            once()


def main() -> None:
    per_request = per_call("bench.ratelimit_instructions", VARIANTS, MEASURED)
    bare = per_request["bare"]
    print("instructions per Flask request (callgrind)")
    for variant, count in per_request.items():
        added = count - bare
        print(f"  {variant:<14} {count:>9,}  added {added:>+9,} ({added / bare:+.1%})")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        run_requests(sys.argv[1], int(sys.argv[2]))
    else:
        main()
