"""Constants shared by the GCRA bucket kernel and its twin.

Every time and duration in the kernel is an integer count of microseconds.
Integers keep the memory, shared-memory and Redis stores in exact agreement:
the Lua script in ``wsgishield/lua/gcra.lua`` runs on doubles, which hold
every integer below 2**53 exactly, and a Unix time in microseconds stays
below 2**53 until the year 2255.
"""

from __future__ import annotations

MICROSECONDS = 1_000_000

# The largest value any stored time or interval may take (2**53 - 1), so that
# the Lua twin computes with exact integers too.
MAX_EXACT = 9_007_199_254_740_991
