"""Pure-Python twin of the GCRA bucket kernel (``_gcra_c.pyx``).

GCRA (the generic cell rate algorithm) is a token bucket stored as one
number per key: the theoretical arrival time (TAT), the moment at which the
bucket would be full again. With an emission interval ``T`` (the time one
token takes to refill) and a tolerance ``tau = burst * T``, a request of
``cost`` tokens arriving at ``now`` is admitted when::

    max(tat, now) + cost * T - tau <= now

and then moves the TAT to ``max(tat, now) + cost * T``. A key with no stored
TAT has a full bucket, so a store may forget every key whose TAT has passed.

Both modules expose the same names and pass the same tests; see
``wsgishield._fast`` for how one of them is selected.
"""

from __future__ import annotations

from ._gcra_common import MAX_EXACT, MICROSECONDS

__all__ = ["COMPILED", "MAX_EXACT", "MICROSECONDS", "retry_seconds", "update"]

COMPILED = False


def update(
    tat: int, now: int, interval: int, tolerance: int, cost: int
) -> tuple[bool, int, int, int, int]:
    """Apply one request of ``cost`` tokens to a bucket at time ``now``.

    ``tat`` is the stored theoretical arrival time, or 0 (or any time in the
    past) for a full bucket; ``interval`` and ``tolerance`` are ``T`` and
    ``tau`` above, all in microseconds. Returns ``(allowed, tat, remaining,
    retry_after, reset_after)``: the TAT to store when the request is
    admitted (the old one, at least ``now``, when it is not), the whole
    tokens left, the microseconds until this cost would be admitted (0 when
    admitted) and the microseconds until the bucket is full again.
    """
    base = tat if tat > now else now
    new_tat = base + cost * interval
    allow_at = new_tat - tolerance

    if allow_at > now:
        remaining = (now + tolerance - base) // interval
        return False, base, remaining, allow_at - now, base - now

    remaining = (now + tolerance - new_tat) // interval
    return True, new_tat, remaining, 0, new_tat - now


def retry_seconds(retry_after: int) -> int:
    """Round a wait in microseconds up to whole seconds, never below 1.

    A client that waits this many seconds is admitted (``Retry-After`` must
    not send it back too early), and ``Retry-After: 0`` would invite a retry
    loop.
    """
    seconds = -(-retry_after // MICROSECONDS)
    return seconds if seconds > 1 else 1
