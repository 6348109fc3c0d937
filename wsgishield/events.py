"""Security events: one structured log record per decision other than "allowed".

Events go to named loggers under ``wsgishield.events`` (``.access``,
``.ratelimit``, ``.auth``, ``.http`` for sampled access records...). The
library never installs handlers; the deployment chooses the format, and
:class:`wsgishield.logging.EcsJsonFormatter` writes one JSON document per
line. Each record carries the event as a flat mapping of Elastic Common
Schema field names in ``record.event``.

Every key of an event is a field of ECS 8.11 listed in
``wsgishield/data/ecs-fields.txt`` (:data:`ECS_FIELDS`). A key outside that
list is moved under ``labels.`` as ECS custom labels, whose values are
strings. ``event.category``, ``event.type`` and ``event.outcome`` follow from
the action unless the caller sets them.

Repeats are rate-limited per (logger, action, client), so a flood from one
client costs a handful of records per second. The number of suppressed
records is reported in ``labels.suppressed`` of the next record that passes,
and in ``wsgishield_events_suppressed_total``.

.. warning::

   Pass identifiers, never secrets. Tokens go in as :func:`fingerprint`
   values; query strings go through :func:`redact_query`, which
   :func:`request_fields` and :func:`emit` apply to ``url.query``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote

from . import context, metrics
from ._fast.address import parse_address

__all__ = [
    "ECS_FIELDS",
    "ECS_VERSION",
    "SENSITIVE_NAMES",
    "EventLimiter",
    "emit",
    "fingerprint",
    "redact_query",
    "request_fields",
]

ECS_VERSION = "8.11.0"

# At most this many records per (logger, action, client) key per second.
DEFAULT_EVENTS_PER_SECOND = 5
# Keys remembered by the limiter; the oldest are dropped beyond this.
MAX_LIMITER_KEYS = 10_000
# Longer paths and query strings are cut, so one request cannot make a
# multi-kilobyte log line.
MAX_LOGGED_TEXT = 512

#: Query parameter and label names whose values are never logged. A name
#: matches when it contains one of these, ignoring case (``access_token``,
#: ``X-Api-Key``).
SENSITIVE_NAMES = (
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "key",
    "session",
    "cookie",
    "signature",
    "sig",
    "code",
    "credential",
    "jwt",
)
REDACTED = "[redacted]"


def _load_ecs_fields() -> dict[str, str]:
    text = (resources.files("wsgishield") / "data" / "ecs-fields.txt").read_text(
        "utf-8"
    )
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, kind = line.split("\t")
            fields[name] = kind
    return fields


#: ECS field name to ECS type, for every field an event may carry
#: (``labels.*`` keys are allowed under ``labels``).
ECS_FIELDS: dict[str, str] = _load_ecs_fields()

# (event.category, event.type, event.outcome) per action. ECS allows only
# its own values in these three fields; see the "ECS Categorization Fields"
# page of the ECS reference.
_CATEGORIZATION: dict[str, tuple[list[str], list[str], str]] = {
    "denied-cidr": (["network"], ["denied"], "failure"),
    "banned": (["network"], ["denied"], "failure"),
    "invalid": (["web"], ["denied"], "failure"),
    "auth-failed": (["authentication"], ["info"], "failure"),
    "rate-limited": (["web"], ["denied"], "failure"),
    "cached": (["web"], ["access"], "success"),
    "unavailable": (["web"], ["error"], "failure"),
    "allowed": (["web"], ["access"], "success"),
}
_DEFAULT_CATEGORIZATION = (["web"], ["info"], "unknown")


def _is_sensitive(name: str) -> bool:
    lowered = name.lower()
    if lowered.endswith("fingerprint"):
        return False
    return any(word in lowered for word in SENSITIVE_NAMES)


def fingerprint(secret: str | bytes) -> str:
    """Return a short stable identifier of a token, safe to log.

    The first 16 hex digits (64 bits) of its SHA-256: enough to tell tokens
    apart in an investigation, useless to recover or replay the token.
    """
    data = (
        secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
    )
    return hashlib.sha256(data).hexdigest()[:16]


def redact_query(query: str, sensitive: Iterable[str] | None = None) -> str:
    """Return ``query`` with the values of sensitive parameters replaced.

    Parameter names match :data:`SENSITIVE_NAMES` (or ``sensitive``) by
    substring, ignoring case. The result is cut to 512 characters.
    """
    if not query:
        return ""
    words = (
        tuple(word.lower() for word in sensitive)
        if sensitive is not None
        else SENSITIVE_NAMES
    )
    pairs = []
    for name, value in parse_qsl(query[: MAX_LOGGED_TEXT * 4], keep_blank_values=True):
        lowered = name.lower()
        if any(word in lowered for word in words):
            value = REDACTED
        pairs.append(f"{quote(name, safe='')}={quote(value, safe='[]')}")
    return "&".join(pairs)[:MAX_LOGGED_TEXT]


def request_fields(
    environ: Mapping[str, Any],
    *,
    rule_id: str | None = None,
    user_id: str | None = None,
    status: int | None = None,
    duration_ns: int | None = None,
) -> dict[str, Any]:
    """Build the ECS fields that describe one request from its environ.

    ``client.ip`` and ``source.ip`` are Elasticsearch ``ip`` fields, which
    reject a document with anything else in them, so they are set only to
    parsed addresses.
    """
    fields: dict[str, Any] = {
        "url.path": str(environ.get("PATH_INFO", ""))[:MAX_LOGGED_TEXT],
        "http.request.method": str(environ.get("REQUEST_METHOD", ""))[:32],
    }
    peer = _address(environ.get("REMOTE_ADDR"))
    client = environ.get(context.CLIENT)
    client_ip = environ.get(context.CLIENT_IP) or peer
    if client_ip:
        fields["client.ip"] = client_ip
    source_ip = getattr(client, "peer", None) or peer
    if source_ip:
        fields["source.ip"] = source_ip
    query = environ.get("QUERY_STRING")
    if query:
        fields["url.query"] = redact_query(query)
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        fields["user_agent.original"] = agent[:MAX_LOGGED_TEXT]

    decision = environ.get(context.DECISION)
    rule_id = rule_id or (decision.rule_id if decision is not None else None)
    if rule_id:
        fields["rule.id"] = rule_id
    if decision is not None:
        fields["event.reason"] = decision.reason
    if user_id:
        fields["user.id"] = user_id
    if status is not None:
        fields["http.response.status_code"] = status
    if duration_ns is not None:
        fields["event.duration"] = duration_ns
    return fields


def _address(text: object) -> str | None:
    parsed = parse_address(text) if isinstance(text, str) else None
    return parsed[0] if parsed is not None else None


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


def _normalize(kind: str, action: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return the event with ECS defaults, custom keys under ``labels.`` and
    sensitive values removed."""
    category, types, outcome = _CATEGORIZATION.get(action, _DEFAULT_CATEGORIZATION)
    event: dict[str, Any] = {
        "event.kind": "event",
        "event.category": category,
        "event.type": types,
        "event.outcome": outcome,
        "event.action": action,
        "event.module": "wsgishield",
        "event.dataset": f"wsgishield.{kind}",
    }
    for name, value in fields.items():
        if name.startswith("labels."):
            label = name[len("labels.") :]
            event[name] = REDACTED if _is_sensitive(label) else str(value)
        elif name in ECS_FIELDS:
            event[name] = value
        else:
            label = name.replace(".", "_")
            event["labels." + label] = REDACTED if _is_sensitive(label) else str(value)
    if "url.query" in event:
        event["url.query"] = redact_query(str(event["url.query"]))
    return event


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
    ``url.path``...); :func:`request_fields` builds the usual ones. Returns
    ``False`` when the event was rate-limited or the logger is disabled.
    """
    logger = logging.getLogger(f"wsgishield.events.{kind}")
    if not logger.isEnabledFor(level):
        return False
    suppressed = (limiter or _limiter).allow((kind, action, client))
    if suppressed is None:
        metrics.EVENTS_SUPPRESSED.inc(kind, action)
        return False
    event = _normalize(kind, action, fields)
    if suppressed:
        event["labels.suppressed"] = str(suppressed)
    metrics.EVENTS.inc(kind, action)
    logger.log(
        level,
        "%s %s from %s",
        kind,
        action,
        event.get("client.ip") or client or "unknown client",
        extra={"event": event},
    )
    return True
