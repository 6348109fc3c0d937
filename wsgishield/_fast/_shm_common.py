"""Layout of the shared-memory bucket table, shared by the kernel and its twin.

The table is one file mapped by every worker: a header, then ``slots``
slots of 16 bytes (an unsigned 64-bit key hash, 0 for an empty slot, and
the bucket's signed 64-bit TAT in microseconds of ``CLOCK_MONOTONIC``).
A key lives in one of ``PROBE_WINDOW`` slots after its hash's home slot; a
slot whose TAT has passed holds a full bucket and may be taken by any key.
"""

from __future__ import annotations

from ._gcra_common import MICROSECONDS

#: Written last when a table is initialized: "WSGSHM01" read little-endian.
MAGIC = 0x31304D4853475357
HEADER_BYTES = 128
#: Offset of the process-shared mutex inside the header.
MUTEX_OFFSET = 64
SLOT_BYTES = 16
#: Slots searched per key: two 64-byte cache lines.
PROBE_WINDOW = 8
#: Policies one request may carry in one table update.
MAX_POLICIES = 32

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
#: Mixed into a policy's hash to name its shared overflow bucket.
OVERFLOW_SALT = 0x9E3779B97F4A7C15


def state_item(prefix: str, remaining: int, reset_after: int) -> str:
    """Format one item of the ``RateLimit`` field: ``"id";r=N;t=SECONDS``.

    ``prefix`` is the policy's ``"id";r=`` text; a negative remaining count
    is sent as 0 and the reset time is rounded up to whole seconds.
    """
    if remaining < 0:
        remaining = 0
    return f"{prefix}{remaining};t={-(-reset_after // MICROSECONDS)}"
