"""Security events: one structured log record per decision other than "allowed".

Events go to named loggers under ``wsgishield.events`` (``.access``,
``.ratelimit``, ``.auth``, ...). The library never installs handlers; the
deployment chooses the format (see ``wsgishield.logging`` for a JSON
formatter). Each record carries the event as a flat mapping of Elastic Common
Schema field names in ``record.event``.

Repeats are rate-limited per (logger, action, client), so a flood from one
client costs a handful of records per second. The number of suppressed
records is reported in ``labels.suppressed`` of the next record that passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["EventLimiter", "emit"]

# At most this many records per (logger, action, client) key per second.
DEFAULT_EVENTS_PER_SECOND = 5
# Keys remembered by the limiter; the oldest are dropped beyond this.
MAX_LIMITER_KEYS = 10_000


class EventLimiter:
    """A per-key budget of records per second, bounded in memory."""

    def __init__(
        self,
        per_second: int = DEFAULT_EVENTS_PER_SECOND,
        max_keys: int = MAX_LIMITER_KEYS,
    ) -> None:
        self.per_second = per_second
        self.max_keys = max_keys
        self._windows: dict[tuple[str, ...], list[int]] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, ...], now: float | None = None) -> int | None:
        """Return how many records were suppressed before this one, or ``None``
        when this one must be suppressed too."""
        second = int(time.monotonic() if now is None else now)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self.max_keys:
                    del self._windows[next(iter(self._windows))]
                # [second, records this second, suppressed since last record]
                window = self._windows[key] = [second, 0, 0]
            if window[0] != second:
                window[0] = second
                window[1] = 0
            if window[1] >= self.per_second:
                window[2] += 1
                return None
            window[1] += 1
            suppressed, window[2] = window[2], 0
            return suppressed


_limiter = EventLimiter()


def emit(
    kind: str,
    action: str,
    fields: Mapping[str, Any],
    *,
    client: str = "",
    level: int = logging.WARNING,
    limiter: EventLimiter | None = None,
) -> bool:
    """Log one security event on ``wsgishield.events.<kind>``.

    ``fields`` are ECS field names with values (``client.ip``, ``rule.id``,
    ``url.path``...). Returns ``False`` when the event was rate-limited.
    """
    logger = logging.getLogger(f"wsgishield.events.{kind}")
    if not logger.isEnabledFor(level):
        return False
    suppressed = (limiter or _limiter).allow((kind, action, client))
    if suppressed is None:
        return False
    event = {"event.kind": "event", "event.action": action, **fields}
    if suppressed:
        event["labels.suppressed"] = suppressed
    logger.log(level, "%s %s", kind, action, extra={"event": event})
    return True
