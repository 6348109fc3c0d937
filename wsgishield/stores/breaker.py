"""A circuit breaker for calls to a shared store.

After ``failure_threshold`` consecutive failures the breaker opens: calls
are refused at once for ``reset_seconds``, so no request waits on a store
that is down. Then it lets one probe call through (half-open); a success
closes it, a failure opens it again for another ``reset_seconds``. It thus
closes by itself within ``reset_seconds`` of the store coming back.

State changes happen lazily inside :meth:`allow`, :meth:`success` and
:meth:`failure`; there is no timer thread. One breaker is shared by the
threads of a process; each Gunicorn worker has its own.

With a metrics registry, each state change is counted in
``wsgishield_breaker_transitions_total{store,state}`` and the state is set
in ``wsgishield_breaker_state{store}`` (0 closed, 1 half-open, 2 open),
labelled with the breaker's name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..metrics import MetricsRegistry

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

logger = logging.getLogger("wsgishield.stores.breaker")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
# Values of wsgishield_breaker_state.
_STATE_VALUES = {CLOSED: 0.0, HALF_OPEN: 1.0, OPEN: 2.0}


class CircuitBreaker:
    """Consecutive-failure breaker with one probe call when half-open."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        registry: MetricsRegistry | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError(
                f"{name}.breaker_failures", failure_threshold, "expected at least 1"
            )
        if reset_seconds <= 0:
            raise ConfigurationError(
                f"{name}.breaker_reset_seconds", reset_seconds, "expected more than 0"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probe_started = 0.0
        self._lock = threading.Lock()
        self.registry = registry
        if registry is not None:
            registry.breaker_state.set(name, value=_STATE_VALUES[CLOSED])

    def allow(self) -> bool:
        """Tell whether a call may go to the store now."""
        if self.state == CLOSED:
            return True
        with self._lock:
            now = self.clock()
            if self.state == OPEN:
                if now - self._opened_at < self.reset_seconds:
                    return False
                self._set_state(HALF_OPEN)
                self._probe_started = now
                return True
            if self.state == HALF_OPEN:
                # One probe at a time; a probe that never reported back (its
                # thread died) is replaced after another reset period.
                if now - self._probe_started < self.reset_seconds:
                    return False
                self._probe_started = now
                return True
            return True

    def success(self) -> None:
        """Record a call that succeeded."""
        if self.state == CLOSED and self.failures == 0:
            return
        with self._lock:
            self.failures = 0
            if self.state != CLOSED:
                self._set_state(CLOSED)

    def failure(self) -> None:
        """Record a call that failed or timed out."""
        with self._lock:
            self.failures += 1
            if self.state == HALF_OPEN or (
                self.state == CLOSED and self.failures >= self.failure_threshold
            ):
                self._opened_at = self.clock()
                self._set_state(OPEN)

    def _set_state(self, state: str) -> None:
        level = logging.INFO if state == CLOSED else logging.WARNING
        logger.log(
            level,
            "circuit breaker %s: %s -> %s after %d consecutive failures",
            self.name, self.state, state, self.failures,
        )  # fmt: skip
        self.state = state
        if self.registry is not None:
            self.registry.breaker_transitions.inc(self.name, state)
            self.registry.breaker_state.set(self.name, value=_STATE_VALUES[state])
