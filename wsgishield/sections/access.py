"""Policy sections of the access-list and ban layers.

See :mod:`wsgishield.access` and :mod:`wsgishield.bans`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._options import STRUCT_OPTIONS as _STRUCT_OPTIONS

__all__ = [
    "AccessPolicy",
    "BanPolicy",
    "RouteAccess",
]


# --- Access lists and bans (see wsgishield.access and wsgishield.bans) ---

_Seconds = Annotated[float, msgspec.Meta(gt=0, le=31_536_000)]


class RouteAccess(msgspec.Struct, **_STRUCT_OPTIONS):
    """Allow and deny networks: CIDRs, bare addresses or the presets
    ``loopback``, ``private`` and ``cloudflare``. The longest matching
    network decides; with any allow entry, an address matching none is denied.
    """

    allow: list[str] = []
    deny: list[str] = []
    #: Files with one network per line, reloaded when they change.
    allow_files: list[str] = []
    deny_files: list[str] = []


class AccessPolicy(RouteAccess, **_STRUCT_OPTIONS):
    """Site-wide allow and deny lists; routes may add their own."""

    #: Seconds between checks of a list file's modification time, per process.
    reload_interval: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 1.0


class BanPolicy(msgspec.Struct, **_STRUCT_OPTIONS):
    """Strikes for failed requests and bans that grow with each repeat offence."""

    #: ``memory``: per process; ``redis``: shared through the ``redis`` section.
    store: Literal["memory", "redis"] = "memory"
    #: Strikes that earn a ban when they arrive faster than they drain.
    threshold: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20
    #: Seconds over which ``threshold`` strikes drain away.
    window: _Seconds = 60.0
    #: Response statuses that count as one strike each.
    strike_statuses: list[Annotated[int, msgspec.Meta(ge=400, le=599)]] = msgspec.field(
        default_factory=lambda: [401, 403, 429]
    )
    #: Also count 400 and 422 responses (failed validation).
    strike_validation: bool = True
    #: Route patterns no client has a reason to request (``/wp-login.php``).
    trap_paths: list[str] = []
    #: Strikes per trap request; unset means ``threshold``: one request bans.
    trap_strikes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    #: Seconds of the first ban.
    ban_time: _Seconds = 600.0
    #: Each repeat offence multiplies the ban by this factor ...
    ban_multiplier: Annotated[float, msgspec.Meta(ge=1, le=1000)] = 2.0
    #: ... up to this many seconds.
    max_ban_time: _Seconds = 86_400.0
    #: Seconds a ban is remembered as an earlier offence.
    repeat_window: _Seconds = 604_800.0
    #: Prefix lengths that group addresses into one client.
    ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 32
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64
    #: Route patterns never counted (health checks).
    exempt_paths: list[str] = []
    #: Networks or presets never counted or banned (monitoring).
    exempt_networks: list[str] = []
    #: 403, or 429 with ``Retry-After``.
    status: Literal[403, 429] = 403
    #: Seconds between fetches of new bans from Redis, per process.
    sync_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.5
    #: Clients tracked per process by the memory store; the oldest go first.
    max_clients: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000
