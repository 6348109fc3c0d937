"""Automatic bans: strikes for failed requests, bans that grow with repeats.

A client earns strikes for the outcomes the policy names (401, 403, 429,
failed validation, requests to trap paths). Strikes drain like a leaky
bucket, one every ``window / threshold`` seconds, so a client is banned
once it collects ``threshold`` strikes faster than they drain, and a client
that fails now and then never is. ``threshold`` strikes in a burst ban at
once. A ban lasts ``ban_time`` seconds, multiplied by
``ban_multiplier`` for each earlier ban within ``repeat_window``, up to
``max_ban_time`` (fail2ban's ``bantime.increment``), and ends by itself.

A client is an address masked to ``ipv4_prefix`` or ``ipv6_prefix`` bits:
one IPv6 host usually gets a whole /64, so counting single IPv6
addresses would let it rotate through 2**64 of them.

Stores:

``memory``
    Per process. With several Gunicorn workers each counts and bans on its
    own, so a client may need up to ``workers`` times the strikes.
``redis``
    Shared by every worker and host. Strikes are counted by one Lua script
    per failed request; a new ban is added to an index that every process
    polls at most every ``sync_interval`` seconds, on the request path. A
    banned client is then rejected from the local copy, with no round trip.
    When Redis fails, strikes are counted in memory until it answers again.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ._fast.address import format_address
from ._fast.cidr import parse_network
from .errors import ConfigurationError, StoreError
from .networks import NetworkSet, expand_presets, load_cloudflare_ranges
from .routes import compile_pattern, normalize_path
from .stores.redis import hash_tagged

if TYPE_CHECKING:
    from .metrics import MetricsRegistry
    from .policy import BanPolicy

__all__ = [
    "Ban",
    "BanStore",
    "Bans",
    "MemoryBanStore",
    "RedisBanStore",
    "Subject",
]

logger = logging.getLogger("wsgishield.bans")

#: 400 and 422: the statuses of a request that failed validation.
VALIDATION_STATUSES = frozenset({400, 422})

# New bans fetched per poll; more wait for the next poll.
MAX_SYNCED_BANS = 10_000

# After a Redis error, strikes go to memory for this many seconds before
# Redis is tried again, so an outage costs one timeout per second at most.
REDIS_RETRY_SECONDS = 1.0

Subject = tuple[int, int]
"""A client as ``(version, address masked to the ban prefix)``."""


class Ban(NamedTuple):
    """A ban that a strike has just started."""

    #: The client, as a network (``203.0.113.7/32``, ``2001:db8::/64``).
    subject: str
    #: Length of the ban in seconds.
    seconds: float
    #: 1 for a first ban, 2 for the next within ``repeat_window``, ...
    offence: int


class BanStore(Protocol):
    def record_strike(self, subject: Subject, text: str, weight: int) -> Ban | None:
        """Count ``weight`` strikes; return the ban they started, if any."""

    def ban_left(self, subject: Subject) -> float | None:
        """Return the seconds left of a known ban, or ``None``."""


class _Timing(NamedTuple):
    threshold: int
    window: float
    ban_time: float
    ban_multiplier: float
    max_ban_time: float
    repeat_window: float

    def ban_seconds(self, offence: int) -> float:
        return float(
            min(self.ban_time * self.ban_multiplier ** (offence - 1), self.max_ban_time)
        )


class MemoryBanStore:
    """Strikes, offences and bans in dictionaries of this process.

    Each dictionary keeps at most ``max_clients`` entries and drops the
    oldest beyond that, so a flood of distinct clients cannot exhaust
    memory. A dropped ban ends early: that is the price of the bound.
    """

    def __init__(
        self,
        timing: _Timing,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timing = timing
        self.max_clients = max_clients
        self.clock = clock
        # subject -> [strike level, time of last strike]
        self._strikes: dict[Subject, list[float]] = {}
        # subject -> [offence count, time the count expires]
        self._offences: dict[Subject, list[float]] = {}
        # subject -> time the ban ends
        self._bans: dict[Subject, float] = {}
        self._lock = threading.Lock()

    def ban_left(self, subject: Subject) -> float | None:
        until = self._bans.get(subject)
        if until is None:
            return None
        left = until - self.clock()
        if left > 0:
            return left
        self._bans.pop(subject, None)
        return None

    def add_ban(self, subject: Subject, seconds: float) -> None:
        """Record a ban decided elsewhere (by another process, through Redis)."""
        with self._lock:
            until = self.clock() + seconds
            if self._bans.get(subject, 0.0) < until:
                self._bans.pop(subject, None)
                self._bans[subject] = until
                _bound(self._bans, self.max_clients)

    def record_strike(self, subject: Subject, text: str, weight: int) -> Ban | None:
        timing = self.timing
        with self._lock:
            now = self.clock()
            if self._bans.get(subject, 0.0) > now:
                return None

            level, updated = _drain(self._strikes.pop(subject, None), now, timing)
            level += weight
            if level < timing.threshold:
                self._strikes[subject] = [level, updated]
                _bound(self._strikes, self.max_clients)
                return None

            offences = self._offences.pop(subject, None)
            offence = 1
            if offences is not None and offences[1] > now:
                offence = int(offences[0]) + 1
            self._offences[subject] = [offence, now + timing.repeat_window]
            _bound(self._offences, self.max_clients)

            seconds = timing.ban_seconds(offence)
            self._bans.pop(subject, None)
            self._bans[subject] = now + seconds
            _bound(self._bans, self.max_clients)
            return Ban(text, seconds, offence)


def _drain(
    entry: list[float] | None, now: float, timing: _Timing
) -> tuple[float, float]:
    """Remove the whole strikes that drained since the last one.

    One strike drains every ``window / threshold`` seconds; ``updated``
    moves by whole drain steps only, so a part-drained strike still counts.
    """
    if entry is None:
        return 0.0, now
    level, updated = entry
    step = timing.window / timing.threshold
    drained = math.floor((now - updated) / step)
    if drained >= level:
        return 0.0, now
    if drained <= 0:
        return level, updated
    return level - drained, updated + drained * step


def _bound(table: dict[Any, Any], size: int) -> None:
    while len(table) > size:
        del table[next(iter(table))]


class _LuaScript:
    """A package Lua script run with EVALSHA, loaded again on NOSCRIPT."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.source = (resources.files("wsgishield") / "lua" / name).read_text("utf-8")
        self.sha: str | None = None

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import NoScriptError

        if self.sha is None:
            self.sha = self.client.script_load(self.source)
        try:
            return self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or failed over and lost its script cache.
            self.sha = self.client.script_load(self.source)
            return self.client.evalsha(self.sha, len(keys), *keys, *args)


class RedisBanStore:
    """Strikes and bans in Redis, with a local copy of every known ban.

    Keys: ``PREFIX:{ban:SUBJECT}:strikes`` (hash, TTL ``window``),
    ``...:offences`` (TTL ``repeat_window``), ``...:banned`` (TTL the ban)
    and the index ``PREFIX:{bans}:index`` (sorted set, TTL ``max_ban_time``
    plus a minute, renewed by each ban).
    """

    def __init__(
        self,
        client: Any,
        timing: _Timing,
        *,
        key_prefix: str = "wsgishield",
        sync_interval: float = 0.5,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        registry: MetricsRegistry | None = None,
    ) -> None:
        self.client = client
        self.timing = timing
        self.key_prefix = key_prefix
        self.sync_interval = sync_interval
        self.clock = clock
        self.local = MemoryBanStore(timing, max_clients=max_clients, clock=clock)
        self.index_key = hash_tagged(key_prefix, "bans", "index")
        self._strike = _LuaScript(client, "ban_strike.lua")
        self._publish = _LuaScript(client, "ban_publish.lua")
        self._sync = _LuaScript(client, "ban_sync.lua")
        self._next_sync = 0.0
        self._since_ms = 0
        self._retry_at = 0.0
        self._logged_at = -60.0
        self._sync_lock = threading.Lock()
        # Failures by kind in wsgishield_store_errors_total{store="bans"}.
        self.registry = registry

    def ban_left(self, subject: Subject) -> float | None:
        if self.clock() >= self._next_sync:
            self.sync()
        return self.local.ban_left(subject)

    def record_strike(self, subject: Subject, text: str, weight: int) -> Ban | None:
        if self.local.ban_left(subject) is not None:
            return None
        if self.clock() < self._retry_at:
            return self.local.record_strike(subject, text, weight)
        try:
            return self._record_in_redis(subject, text, weight)
        except StoreError as exc:
            self._failed("counting a strike", exc)
            return self.local.record_strike(subject, text, weight)

    def sync(self) -> None:
        """Fetch the bans added since the last poll into the local copy."""
        # One thread polls while the others use the local copy as it is.
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            now = self.clock()
            self._next_sync = now + self.sync_interval
            if now < self._retry_at:
                return
            try:
                reply = self._call(
                    self._sync, [self.index_key], [self._since_ms, MAX_SYNCED_BANS]
                )
            except StoreError as exc:
                self._failed("fetching bans", exc)
                return
            self._apply_sync(reply)
        finally:
            self._sync_lock.release()

    def _record_in_redis(self, subject: Subject, text: str, weight: int) -> Ban | None:
        timing = self.timing
        tag = f"ban:{text}"
        keys = [
            hash_tagged(self.key_prefix, tag, "strikes"),
            hash_tagged(self.key_prefix, tag, "offences"),
            hash_tagged(self.key_prefix, tag, "banned"),
        ]
        args = [
            weight,
            timing.threshold,
            _milliseconds(timing.window),
            _milliseconds(timing.ban_time),
            repr(timing.ban_multiplier),
            _milliseconds(timing.max_ban_time),
            _milliseconds(timing.repeat_window),
        ]
        ban_ms, offence, now_ms = (
            int(part) for part in self._call(self._strike, keys, args)
        )
        if ban_ms < 0:
            # Banned through another process; this one has not polled yet.
            self.local.add_ban(subject, -ban_ms / 1000)
            return None
        if ban_ms == 0:
            return None

        seconds = ban_ms / 1000
        self.local.add_ban(subject, seconds)
        member = f"{text}|{now_ms + ban_ms}"
        self._call(
            self._publish,
            [self.index_key],
            [member, _milliseconds(timing.max_ban_time)],
        )
        return Ban(text, seconds, offence)

    def _apply_sync(self, reply: list[Any]) -> None:
        now_ms = int(reply[0])
        for position in range(1, len(reply) - 1, 2):
            member = _text(reply[position])
            score = int(float(reply[position + 1]))
            self._since_ms = max(self._since_ms, score)
            subject_text, _, until = member.rpartition("|")
            try:
                version, first, _prefix = parse_network(subject_text)
                left_ms = int(until) - now_ms
            except ValueError:
                logger.warning("ignored malformed ban index entry %r", member[:100])
                continue
            if left_ms > 0:
                self.local.add_ban((version, first), left_ms / 1000)

    def _call(self, script: _LuaScript, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return script(keys, args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis ban store failed: {exc}") from exc

    def _failed(self, action: str, exc: StoreError) -> None:
        if self.registry is not None:
            self.registry.store_errors.inc("bans", exc.kind)
        now = self.clock()
        self._retry_at = now + REDIS_RETRY_SECONDS
        # One log line per minute of outage, not one per request.
        if now - self._logged_at >= 60:
            self._logged_at = now
            logger.error(
                "ban store failed while %s; counting strikes in this process "
                "until Redis answers: %s",
                action,
                exc,
            )


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pattern_union(key: str, patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for index, pattern in enumerate(patterns):
        try:
            parts.append(f"(?:{compile_pattern(pattern).pattern})")
        except ValueError as exc:
            raise ConfigurationError(f"{key}[{index}]", pattern, str(exc)) from exc
    return re.compile("|".join(parts)) if parts else None


class Bans:
    """Strike rules, exemptions and the store that keeps strikes and bans.

    ``store`` is a :class:`MemoryBanStore` or :class:`RedisBanStore` built
    with the same timing; :meth:`from_policy` builds both from a policy.
    """

    def __init__(
        self,
        store: BanStore,
        *,
        threshold: int = 20,
        strike_statuses: Iterable[int] = (401, 403, 429),
        strike_validation: bool = True,
        trap_paths: Iterable[str] = (),
        trap_strikes: int | None = None,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        exempt_paths: Iterable[str] = (),
        exempt_networks: Iterable[str] = (),
    ) -> None:
        if not 8 <= ipv4_prefix <= 32:
            raise ConfigurationError(
                "bans.ipv4_prefix", ipv4_prefix, "expected 8 to 32"
            )
        if not 16 <= ipv6_prefix <= 128:
            raise ConfigurationError(
                "bans.ipv6_prefix", ipv6_prefix, "expected 16 to 128"
            )
        self.store = store
        statuses = set(strike_statuses)
        if strike_validation:
            statuses |= VALIDATION_STATUSES
        self.strike_statuses = frozenset(statuses)
        self.trap_strikes = trap_strikes or threshold
        self._trap = _pattern_union("bans.trap_paths", trap_paths)
        self._exempt_paths = _pattern_union("bans.exempt_paths", exempt_paths)
        networks = list(exempt_networks)
        cloudflare = load_cloudflare_ranges() if "cloudflare" in networks else ()
        try:
            self._exempt_networks = NetworkSet(expand_presets(networks, cloudflare))
        except ValueError as exc:
            raise ConfigurationError(
                "bans.exempt_networks", networks, str(exc)
            ) from exc
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self._ipv4_mask = ((1 << ipv4_prefix) - 1) << (32 - ipv4_prefix)
        self._ipv6_mask = ((1 << ipv6_prefix) - 1) << (128 - ipv6_prefix)

    @classmethod
    def from_policy(
        cls,
        policy: BanPolicy,
        redis: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        registry: MetricsRegistry | None = None,
    ) -> Bans:
        """Build the rules and the store; ``redis`` is the policy's Redis section.

        A Redis store counts its failures in ``registry`` when one is given.
        """
        timing = _Timing(
            policy.threshold,
            policy.window,
            policy.ban_time,
            policy.ban_multiplier,
            policy.max_ban_time,
            policy.repeat_window,
        )
        if policy.max_ban_time < policy.ban_time:
            raise ConfigurationError(
                "bans.max_ban_time",
                policy.max_ban_time,
                "must be at least bans.ban_time",
            )
        store: BanStore
        if policy.store == "redis":
            if redis is None:
                raise ConfigurationError(
                    "bans.store", "redis", "needs a [redis] section with the connection"
                )
            from .stores.redis import connect

            store = RedisBanStore(
                connect(redis),
                timing,
                key_prefix=redis.key_prefix,
                sync_interval=policy.sync_interval,
                max_clients=policy.max_clients,
                clock=clock,
                registry=registry,
            )
        else:
            store = MemoryBanStore(timing, max_clients=policy.max_clients, clock=clock)
        return cls(
            store,
            threshold=policy.threshold,
            strike_statuses=policy.strike_statuses,
            strike_validation=policy.strike_validation,
            trap_paths=policy.trap_paths,
            trap_strikes=policy.trap_strikes,
            ipv4_prefix=policy.ipv4_prefix,
            ipv6_prefix=policy.ipv6_prefix,
            exempt_paths=policy.exempt_paths,
            exempt_networks=policy.exempt_networks,
        )

    def subject(self, version: int, value: int) -> Subject:
        """Mask an address to the client it belongs to."""
        if version == 4:
            return 4, value & self._ipv4_mask
        return 6, value & self._ipv6_mask

    def subject_text(self, subject: Subject) -> str:
        version, value = subject
        prefix = self.ipv4_prefix if version == 4 else self.ipv6_prefix
        return f"{format_address(version, value)}/{prefix}"

    def ban_left(self, version: int, value: int) -> float | None:
        """Return the seconds left of this client's ban, or ``None``."""
        return self.store.ban_left(self.subject(version, value))

    def is_exempt_network(self, version: int, value: int) -> bool:
        """Tell whether a client is in a network that is never counted or banned."""
        networks = self._exempt_networks
        return bool(networks) and networks.contains(version, value)

    def is_exempt_path(self, path: str) -> bool:
        """Tell whether requests to ``path`` (a health check) are never counted."""
        exempt = self._exempt_paths
        return exempt is not None and exempt.match(normalize_path(path)) is not None

    def is_trap(self, path: str) -> bool:
        trap = self._trap
        return trap is not None and trap.match(normalize_path(path)) is not None

    def strike(
        self, version: int, value: int, weight: int = 1
    ) -> tuple[str, Ban | None]:
        """Count strikes for a client; return its subject text and any new ban."""
        subject = self.subject(version, value)
        text = self.subject_text(subject)
        return text, self.store.record_strike(subject, text, weight)
