"""Request tally, pure-Python twin of ``_tally_c`` with the same names and results.

See :class:`RequestTally`.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from ._tally_common import (
    ALLOWED,
    DECISION_KEY,
    HTTP_METHODS,
    MORE,
    OTHER,
    ROUTE_KEY,
    STATUS_CLASSES,
    UNMATCHED_ROUTE,
)

__all__ = ["COMPILED", "MORE", "RequestTally"]

COMPILED = False

_CLASS_BY_DIGIT = {str(index + 1): label for index, label in enumerate(STATUS_CLASSES)}


class RequestTally:
    """Count requests into a per-process value list, one lookup per request.

    ``table`` maps a label set ``(route, method, status class, decision)`` to
    the slots ``(counter, histogram)`` of its series, ``(-1, -1)`` when the
    series cap dropped it; the caller fills it. ``bounds`` are the histogram
    bucket bounds, ending with infinity. ``in_flight`` is the slot of the
    in-flight gauge. Updates of ``values`` happen under ``lock``.
    """

    __slots__ = ("bounds", "in_flight", "table")

    def __init__(
        self,
        table: dict[tuple[str, str, str, str], tuple[int, int]],
        bounds: tuple[float, ...],
        in_flight: int,
    ) -> None:
        self.table = table
        self.bounds = bounds
        self.in_flight = in_flight

    def enter(self, values: list[float], lock: Any) -> None:
        """Count a request into the in-flight gauge."""
        lock.acquire()
        try:
            values[self.in_flight] += 1.0
        finally:
            lock.release()

    def leave(
        self,
        values: list[float],
        lock: Any,
        environ: dict[str, Any],
        status: str,
        duration: float,
    ) -> tuple[str, str, str, str] | int | None:
        """Count a finished request and its duration, and leave the gauge.

        Returns ``None`` when that is all, :data:`MORE` when the request also
        carries a decision, or the label set when ``table`` has no slots for
        it yet. Nothing is counted in the last case; the caller adds the
        slots and calls again.
        """
        route = environ.get(ROUTE_KEY)
        method = environ.get("REQUEST_METHOD", "")
        decision = environ.get(DECISION_KEY)
        key = (
            route.id if route is not None else UNMATCHED_ROUTE,
            method if method in HTTP_METHODS else OTHER,
            _CLASS_BY_DIGIT.get(status[:1], OTHER),
            decision.action if decision is not None else ALLOWED,
        )
        slots = self.table.get(key)
        if slots is None:
            return key

        counter, histogram = slots
        bucket = histogram + 1 + bisect_left(self.bounds, duration)
        lock.acquire()
        try:
            values[self.in_flight] -= 1.0
            if counter >= 0:
                values[counter] += 1.0
                values[histogram] += duration
                values[bucket] += 1.0
        finally:
            lock.release()

        if decision is not None:
            return MORE
        return None
