"""Count the instructions of validating a 1 KB JSON body, with and without the shield.

Run from the repository root (needs ``valgrind`` and the ``bench`` extra)::

    python -m bench.validation_instructions

The variants are those of ``test_validation_ratio`` in
``bench/bench_hardening.py``. They are msgspec alone, the server's part
alone, an app that reads and validates its body itself, the request limits
layer alone, the minimum shield and the whole shield. The server's part is
a fresh copy of the Gunicorn environ and a fresh ``BytesIO``, given to an
app that does nothing. Each
process makes 200 warm-up calls; see ``bench.instructions`` for how one
call is counted. ``python -m bench.validation_instructions VARIANT N`` is
the process that callgrind runs.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any

from bench.instructions import per_call

VARIANTS = (
    "msgspec",
    "server",
    "app-validating",
    "request-layer",
    "minimum",
    "whole",
)
WARM_UP = 200
MEASURED = 2000


def build(variant: str) -> Callable[[], Any]:
    """Return one call of ``variant``."""
    from bench.bench_hardening import (
        DECODER,
        ORDER,
        Order,
        bare_app,
        minimum_shield,
        order_environ,
        server_part,
        start_response,
        validating_app,
        whole_shield,
    )
    from wsgishield import context
    from wsgishield.middleware import RequestLimitsMiddleware
    from wsgishield.policy import RequestPolicy, RouteRequest
    from wsgishield.routes import Route

    if variant == "msgspec":
        return lambda: DECODER.decode(ORDER)
    base = order_environ()
    apps: dict[str, Callable[[], Any]] = {
        "server": lambda: server_part,
        "app-validating": lambda: validating_app,
        "minimum": minimum_shield,
        "whole": whole_shield,
    }
    if variant == "request-layer":
        base[context.ROUTE] = Route("orders", "/orders")
        app: Any = RequestLimitsMiddleware(
            bare_app,
            defaults=RequestPolicy(),
            routes={"orders": RouteRequest()},
            schemas={"orders": Order},
        )
    else:
        app = apps[variant]()

    def through() -> Any:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(ORDER)
        return app(environ, start_response)

    return through


def run_calls(variant: str, count: int) -> None:
    once = build(variant)
    for _ in range(WARM_UP + count):
        once()


def main() -> None:
    counts = per_call("bench.validation_instructions", VARIANTS, MEASURED)
    alone = counts["msgspec"]
    server = counts["server"]
    print("instructions per call (callgrind)")
    for variant, count in counts.items():
        line = f"  {variant:<15} {count:>8,}  x{count / alone:5.2f} of msgspec alone"
        if variant not in ("msgspec", "server"):
            line += f", without the server's part x{(count - server) / alone:5.2f}"
        print(line)


if __name__ == "__main__":
    if len(sys.argv) == 3:
        run_calls(sys.argv[1], int(sys.argv[2]))
    else:
        main()
