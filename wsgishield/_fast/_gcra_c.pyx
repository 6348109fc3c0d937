# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled GCRA bucket kernel: the same names and results as ``_gcra_py``.

See the twin for the algorithm. All arithmetic runs on C ``int64`` values,
which the twin's Python integers match exactly for every valid input (times
and intervals below 2**53).
"""

from libc.stdint cimport int64_t

from ._gcra_common import MAX_EXACT, MICROSECONDS

__all__ = ["COMPILED", "MAX_EXACT", "MICROSECONDS", "retry_seconds", "update"]

COMPILED = True

cdef int64_t _MICROSECONDS = MICROSECONDS


cdef inline int64_t _floor_div(int64_t a, int64_t b) noexcept:
    # C division truncates toward zero; Python's floors. The remaining
    # count is never negative for valid input, but stay exact if it were.
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


def update(int64_t tat, int64_t now, int64_t interval, int64_t tolerance, int64_t cost):
    """Apply one request of ``cost`` tokens to a bucket at time ``now``.

    ``tat`` is the stored theoretical arrival time, or 0 (or any time in the
    past) for a full bucket; ``interval`` and ``tolerance`` are ``T`` and
    ``tau``, all in microseconds. Returns ``(allowed, tat, remaining,
    retry_after, reset_after)``: the TAT to store when the request is
    admitted (the old one, at least ``now``, when it is not), the whole
    tokens left, the microseconds until this cost would be admitted (0 when
    admitted) and the microseconds until the bucket is full again.
    """
    cdef int64_t base = tat if tat > now else now
    cdef int64_t new_tat = base + cost * interval
    cdef int64_t allow_at = new_tat - tolerance

    if allow_at > now:
        return (False, base, _floor_div(now + tolerance - base, interval),
                allow_at - now, base - now)
    return (True, new_tat, _floor_div(now + tolerance - new_tat, interval),
            0, new_tat - now)


def retry_seconds(int64_t retry_after):
    """Round a wait in microseconds up to whole seconds, never below 1."""
    cdef int64_t seconds = _floor_div(-retry_after, _MICROSECONDS)
    seconds = -seconds
    return seconds if seconds > 1 else 1
