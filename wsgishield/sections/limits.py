"""Policy sections of the rate limiter (see :mod:`wsgishield.ratelimit`)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._options import STRUCT_OPTIONS as _STRUCT_OPTIONS

__all__ = [
    "LimitRule",
    "LimitsPolicy",
    "RouteLimits",
]


LimitKeyPart = Literal["ip", "identity", "api-key", "route"]
FailureMode = Literal["open", "local", "closed"]


class LimitRule(msgspec.Struct, **_STRUCT_OPTIONS):
    """One named rate-limit policy: a token bucket per key."""

    #: ``"N/unit"`` or ``"N/K unit"`` with unit second, minute, hour or day
    #: (``"10/second"``, ``"1000/day"``, ``"100/5 minutes"``).
    rate: str
    #: Tokens a full bucket holds; the count of the rate when unset.
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None
    #: What one bucket is kept per; empty means one bucket for all requests.
    key: list[LimitKeyPart] = msgspec.field(default_factory=lambda: ["ip"])
    #: Count and log the requests this policy would deny, deny none.
    shadow: bool = False
    #: What to do when the shared store fails; ``limits.failure_mode`` if unset.
    failure_mode: FailureMode | None = None


class RouteLimits(msgspec.Struct, **_STRUCT_OPTIONS):
    """The rate-limit policies of one route and the tokens a request costs."""

    policies: list[str] = []
    cost: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1


class LimitsPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Rate limiting: named policies, where they apply and where buckets live."""

    #: ``auto``: ``shm`` under Gunicorn, ``memory`` otherwise.
    store: Literal["auto", "memory", "shm", "redis"] = "auto"
    policies: dict[
        Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], LimitRule
    ] = {}
    #: Policies of requests whose route names none (or that match no route).
    default: list[str] = []
    #: Policies applied to every request, on top of the route's own.
    global_: list[str] = msgspec.field(name="global", default_factory=list)
    failure_mode: FailureMode = "open"
    headers: Literal["ietf", "x-ratelimit", "none"] = "ietf"
    #: Prefix lengths that group client addresses into one key.
    ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 32
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64
    api_key_header: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,64}$")] = (
        "X-API-Key"
    )
    #: Count CORS preflight ``OPTIONS`` requests.
    count_preflight: bool = False
    #: Route patterns (see wsgishield.routes) that are never limited.
    exempt_paths: list[str] = []
    #: CIDRs or presets whose clients are never limited.
    exempt_networks: list[str] = []
    #: Origins whose CORS headers a 429 carries when the app's own headers for
    #: that origin were not seen yet; ``["*"]`` for any origin.
    cors_origins: list[str] = []
    #: Buckets kept by the memory store and by the local fallback.
    max_keys: Annotated[int, msgspec.Meta(ge=16, le=100_000_000)] = 100_000
    #: Slots of the shared-memory table (rounded up to a power of two).
    shm_slots: Annotated[int, msgspec.Meta(ge=1024, le=1 << 28)] = 1 << 18
    #: Consecutive Redis failures that open the circuit breaker.
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    #: Seconds the breaker stays open before one probe request may pass.
    breaker_reset_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=300)] = 2.0
