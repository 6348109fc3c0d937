"""Rate-limit policies: rates, bucket keys and the all-or-nothing decision.

A :class:`Limit` is one named policy compiled for the request path: a rate
(``10/second``), a burst, and the parts of the request its bucket is kept
per (client address, verified identity, API key, route). The bucket math is
GCRA in :mod:`wsgishield._fast.gcra`; the stores in ``wsgishield.stores``
keep one theoretical arrival time per bucket and call :func:`decide`, or
run the same rules in Lua (Redis) or in C (shared memory).

Every policy of one request is checked and consumed together: the request is
admitted only when every enforced policy admits it, and a denied request
consumes nothing. Shadow policies never deny; they consume when the request
is admitted and they would have admitted it too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from . import context
from ._fast.address import format_address, parse_address
from ._fast.gcra import MAX_EXACT, MICROSECONDS, update
from .errors import ConfigurationError

__all__ = [
    "KEY_PARTS",
    "BucketResult",
    "KeyBuilder",
    "Limit",
    "Outcome",
    "decide",
    "parse_rate",
    "unspent",
]

KEY_PARTS = ("ip", "identity", "api-key", "route")

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")

# Key parts longer than this (or with characters that would break a Redis
# key or hash tag) are replaced by a digest, so a client cannot grow keys.
_MAX_PLAIN_PART = 64
_PLAIN_PART = re.compile(r"^[A-Za-z0-9_.:/@-]*$")
_POLICY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


def parse_rate(text: str) -> tuple[int, int]:
    """Parse ``"10/second"`` or ``"100/5 minutes"`` into (count, period in µs).

    Raises ``ValueError`` naming what was expected.
    """
    match = _RATE.match(text.lower())
    if match is None or match.group(3) not in _UNITS:
        raise ValueError(
            "expected COUNT/UNIT or COUNT/N UNIT with unit second, minute, hour or day"
        )
    count = int(match.group(1))
    multiple = int(match.group(2) or "1")
    if count < 1 or multiple < 1:
        raise ValueError("count and period must be at least 1")
    period = multiple * _UNITS[match.group(3)] * MICROSECONDS
    return count, period


class Limit:
    """One policy compiled for the request path.

    ``interval`` is the time one token takes to refill and ``tolerance`` the
    time a full bucket is worth (``burst * interval``), both in
    microseconds. The interval is the period divided by the count, rounded
    down to whole microseconds: ``3/second`` refills every 333,333 µs, which
    admits at most one extra request in about 333,000 periods.
    """

    __slots__ = (
        "burst",
        "count",
        "failure_mode",
        "id",
        "interval",
        "key",
        "period",
        "policy_item",
        "shadow",
        "state_prefix",
        "tolerance",
        "window_seconds",
    )

    def __init__(
        self,
        id: str,
        rate: str,
        *,
        burst: int | None = None,
        key: Sequence[str] = ("ip",),
        shadow: bool = False,
        failure_mode: str = "open",
        config_key: str | None = None,
    ) -> None:
        where = config_key or f"limits.policies.{id}"
        if not _POLICY_ID.match(id):
            raise ConfigurationError(
                where, id, "expected 1 to 64 letters, digits, '_', '.' or '-'"
            )
        try:
            count, period = parse_rate(rate)
        except ValueError as exc:
            raise ConfigurationError(f"{where}.rate", rate, str(exc)) from exc
        for part in key:
            if part not in KEY_PARTS:
                raise ConfigurationError(
                    f"{where}.key",
                    list(key),
                    f"expected parts from {', '.join(KEY_PARTS)}",
                )
        if len(set(key)) != len(key):
            raise ConfigurationError(f"{where}.key", list(key), "a part is repeated")
        if failure_mode not in ("open", "local", "closed"):
            raise ConfigurationError(
                f"{where}.failure_mode", failure_mode, "expected open, local or closed"
            )

        self.id = id
        self.count = count
        self.period = period
        self.burst = burst if burst is not None else count
        self.interval = period // count
        if self.interval < 1:
            raise ConfigurationError(
                f"{where}.rate", rate, "more than one request per microsecond"
            )
        self.tolerance = self.burst * self.interval
        if self.tolerance > MAX_EXACT // 4:
            raise ConfigurationError(
                f"{where}.burst", self.burst, "burst times interval is too large"
            )
        # The part order is fixed so that one policy names one bucket.
        self.key = tuple(part for part in KEY_PARTS if part in key)
        self.shadow = shadow
        self.failure_mode = failure_mode
        self.window_seconds = max(1, period // MICROSECONDS)
        # Items of the RateLimit-Policy and RateLimit fields: the policy id
        # is a structured-field string (RFC 8941), which needs no escaping
        # because ids are limited to letters, digits and ``_.-``.
        self.policy_item = f'"{id}";q={count};w={self.window_seconds}'
        self.state_prefix = f'"{id}";r='

    def __repr__(self) -> str:
        return f"<Limit {self.id} {self.count}/{self.period}us burst={self.burst}>"


class BucketResult(NamedTuple):
    """Decision of one policy for one request (times in microseconds)."""

    allowed: bool
    #: The TAT to store if the request is admitted.
    tat: int
    remaining: int
    retry_after: int
    reset_after: int


class Outcome(NamedTuple):
    """The decision for one request over all its policies."""

    allowed: bool
    #: One result per policy, in the order the policies were given.
    results: Sequence[BucketResult]


def decide(
    tats: Sequence[int], now: int, limits: Sequence[Limit], cost: int
) -> Outcome:
    """Apply one request to every bucket at once, all or nothing.

    ``tats`` are the stored times of the buckets (0 for a full one). The
    caller stores ``results[i].tat`` for every admitted enforced or shadow
    result, and only when ``allowed`` is true.
    """
    results = []
    allowed = True
    for tat, limit in zip(tats, limits, strict=True):
        result = BucketResult(*update(tat, now, limit.interval, limit.tolerance, cost))
        if not result.allowed and not limit.shadow:
            allowed = False
        results.append(result)
    if not allowed:
        results = [
            unspent(result, limit, cost)
            for result, limit in zip(results, limits, strict=True)
        ]
    return Outcome(allowed, results)


def unspent(result: BucketResult, limit: Limit, cost: int) -> BucketResult:
    """Return the figures of a policy that admitted a request denied by another.

    The request consumed nothing, so the remaining tokens and the reset time
    are those from before it.
    """
    if not result.allowed:
        return result
    spent = cost * limit.interval
    return result._replace(
        remaining=result.remaining + cost, reset_after=result.reset_after - spent
    )


def _safe_part(value: str) -> str:
    if len(value) <= _MAX_PLAIN_PART and _PLAIN_PART.match(value):
        return value
    return (
        "h-"
        + hashlib.blake2b(
            value.encode("utf-8", "surrogatepass"), digest_size=12
        ).hexdigest()
    )


class KeyBuilder:
    """Build the bucket key of a policy for one request.

    A key is the policy id and the values of its key parts. A part that a
    request does not have (no verified identity, no API key header) leaves
    that policy out for the request.
    """

    __slots__ = (
        "_api_key_environ",
        "_ipv4_mask",
        "_ipv6_mask",
        "ipv4_prefix",
        "ipv6_prefix",
    )

    def __init__(
        self,
        *,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        api_key_header: str = "X-API-Key",
    ) -> None:
        if not 8 <= ipv4_prefix <= 32:
            raise ConfigurationError(
                "limits.ipv4_prefix", ipv4_prefix, "expected 8 to 32"
            )
        if not 16 <= ipv6_prefix <= 128:
            raise ConfigurationError(
                "limits.ipv6_prefix", ipv6_prefix, "expected 16 to 128"
            )
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self._ipv4_mask = ((1 << ipv4_prefix) - 1) << (32 - ipv4_prefix)
        self._ipv6_mask = ((1 << ipv6_prefix) - 1) << (128 - ipv6_prefix)
        self._api_key_environ = "HTTP_" + api_key_header.upper().replace("-", "_")

    def client_part(self, environ: Mapping[str, Any]) -> str:
        """Return the client address, grouped by the configured prefix."""
        client = environ.get(context.CLIENT)
        if client is not None:
            text, version, value = client.ip, client.version, client.value
        else:
            # Used without the client address layer: the peer is the client.
            parsed = parse_address(environ.get("REMOTE_ADDR") or "")
            if parsed is None:
                return "unknown"
            text, version, value = parsed[0], parsed[1], parsed[2]

        # A whole address is its canonical text, which both sources hold.
        if version == 4:
            if self.ipv4_prefix == 32:
                return str(text)
            return f"{format_address(4, value & self._ipv4_mask)}/{self.ipv4_prefix}"
        if self.ipv6_prefix == 128:
            return str(text)
        return f"{format_address(6, value & self._ipv6_mask)}/{self.ipv6_prefix}"

    def part(self, name: str, environ: Mapping[str, Any], route_id: str) -> str | None:
        """Return the value of key part ``name``, or ``None`` when absent."""
        if name == "ip":
            return self.client_part(environ)
        if name == "identity":
            subject = getattr(environ.get(context.IDENTITY), "subject", None)
            return _safe_part(subject) if isinstance(subject, str) and subject else None
        if name == "api-key":
            api_key = environ.get(self._api_key_environ)
            if not api_key:
                return None
            # Never keep the secret itself in a key that Redis may show.
            digest = hashlib.blake2b(
                api_key.encode("utf-8", "surrogatepass"), digest_size=12
            )
            return "k-" + digest.hexdigest()
        return route_id

    def parts(
        self, limit: Limit, environ: Mapping[str, Any], route_id: str
    ) -> tuple[str, ...] | None:
        """Return the values of every key part of ``limit``, or ``None``."""
        values = []
        for name in limit.key:
            value = self.part(name, environ, route_id)
            if value is None:
                return None
            values.append(value)
        return tuple(values)
