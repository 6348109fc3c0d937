"""Each layer counts its own events in the process registry.

Every test drives real requests through a ``Shield`` built from a policy
with a ``[metrics]`` section and checks that exactly one series of the
layer's family moved, by exactly the expected amount.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.jwks_server import JwksServer
from tests.support.metrics import SampleKey, sample_values
from tests.support.servers import free_port
from tests.support.tokens import ISSUER, SECRET, SECRET_VARIABLE, claims, hs256
from tests.support.wsgi import call
from wsgishield import Shield, metrics
from wsgishield.middleware import MetricsMiddleware, RateLimitMiddleware

METRICS = {"allow": ["loopback"]}


def ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def status_app(status: str) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain")])
        return [b"no"]

    return app


def header_reading_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    # Reads a header that is neither in the cache key nor named by Vary.
    language = environ.get("HTTP_X_LANGUAGE", "en")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [language.encode()]


@pytest.fixture(autouse=True)
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)


def family_values(name: str) -> dict[SampleKey, float]:
    return {
        key: value
        for key, value in sample_values(metrics.REGISTRY).items()
        if key[0] == name
    }


def moved(name: str, action: Callable[[], object]) -> dict[tuple[str, ...], float]:
    """Run ``action``; return the label values of each series of ``name`` that
    changed, with the change."""
    before = family_values(name)
    action()
    after = family_values(name)
    changes = {}
    for key in before.keys() | after.keys():
        change = after.get(key, 0.0) - before.get(key, 0.0)
        if change:
            changes[tuple(value for _, value in key[1])] = change
    return changes


def closed_redis_url() -> str:
    # Nothing listens on a free loopback port: every connection is refused.
    return f"redis://127.0.0.1:{free_port()}/0"


# --- Client address ----------------------------------------------------------


def test_client_fallback_counted_by_reason() -> None:
    shield = Shield(
        ok_app, {"client": {"trusted_proxies": ["loopback"]}, "metrics": METRICS}
    )
    changes = moved(
        "wsgishield_client_address_fallbacks_total",
        lambda: call(shield, "/x", remote_addr="127.0.0.1"),
    )
    assert changes == {("missing",): 1.0}


def test_client_fallback_not_counted_by_metrics_layer_too() -> None:
    shield = Shield(
        ok_app, {"client": {"trusted_proxies": ["loopback"]}, "metrics": METRICS}
    )
    headers = {"X-Forwarded-For": "not-an-address"}
    changes = moved(
        "wsgishield_client_address_fallbacks_total",
        lambda: call(shield, "/x", remote_addr="127.0.0.1", headers=headers),
    )
    assert changes == {("invalid",): 1.0}
    assert any(isinstance(layer, MetricsMiddleware) for layer in shield.layers)


# --- Rate limits -----------------------------------------------------------------


def limits_policy(**policy: Any) -> dict[str, Any]:
    return {
        "limits": {
            "default": ["per-ip"],
            "policies": {"per-ip": {"rate": "1/minute", **policy}},
        },
        "metrics": METRICS,
    }


def test_ratelimit_allowed_then_limited() -> None:
    shield = Shield(ok_app, limits_policy())
    name = "wsgishield_ratelimit_decisions_total"
    assert moved(name, lambda: call(shield, "/x")) == {("allowed", "per-ip"): 1.0}
    assert moved(name, lambda: call(shield, "/x")) == {("limited", "per-ip"): 1.0}


def test_ratelimit_counted_on_shm_one_call_path(tmp_path: Any) -> None:
    # The shared-memory store admits through its one-call path; the counts
    # must match those of the general path.
    policy = limits_policy()
    policy["limits"].update(store="shm", shm_slots=1024)
    shield = Shield(ok_app, policy)
    layer = next(
        layer for layer in shield.layers if isinstance(layer, RateLimitMiddleware)
    )
    layer.store.path = str(tmp_path / "table")
    assert layer.default_plan.admission is not None
    name = "wsgishield_ratelimit_decisions_total"
    assert moved(name, lambda: call(shield, "/x")) == {("allowed", "per-ip"): 1.0}
    assert moved(name, lambda: call(shield, "/x")) == {("limited", "per-ip"): 1.0}


def test_ratelimit_shadow_denial() -> None:
    shield = Shield(ok_app, limits_policy(shadow=True))
    name = "wsgishield_ratelimit_decisions_total"
    call(shield, "/x")
    changes = moved(name, lambda: call(shield, "/x"))
    assert changes == {("shadow-limited", "per-ip"): 1.0}


def test_ratelimit_store_error_and_breaker() -> None:
    policy = limits_policy(failure_mode="open")
    policy["limits"].update(store="redis", breaker_failures=1)
    policy["redis"] = {"url": closed_redis_url(), "timeout_ms": 200}
    shield = Shield(ok_app, policy)

    def request() -> None:
        assert call(shield, "/x").status_code == 200

    before = family_values("wsgishield_breaker_transitions_total")
    assert moved("wsgishield_store_errors_total", request) == {
        ("connection", "ratelimit"): 1.0
    }
    after = family_values("wsgishield_breaker_transitions_total")
    key = (
        "wsgishield_breaker_transitions_total",
        (("state", "open"), ("store", "ratelimit")),
    )
    assert after[key] - before.get(key, 0.0) == 1.0
    gauge = ("wsgishield_breaker_state", (("store", "ratelimit"),))
    assert sample_values(metrics.REGISTRY)[gauge] == 2.0
    # While the breaker is open, the store is not called at all.
    assert moved("wsgishield_store_errors_total", request) == {
        ("breaker-open", "ratelimit"): 1.0
    }


# --- Response cache --------------------------------------------------------------


def cache_policy(**cache: Any) -> dict[str, Any]:
    return {
        "cache": cache,
        "routes": [{"id": "page", "path": "/page", "cache": {"ttl": 30}}],
        "metrics": METRICS,
    }


def test_cache_miss_then_hit() -> None:
    shield = Shield(ok_app, cache_policy())
    name = "wsgishield_cache_lookups_total"
    assert moved(name, lambda: call(shield, "/page")) == {
        ("stored", "miss", "page"): 1.0
    }
    assert moved(name, lambda: call(shield, "/page")) == {("fresh", "hit", "page"): 1.0}


def test_cache_bypass_by_reason() -> None:
    shield = Shield(ok_app, cache_policy())
    changes = moved(
        "wsgishield_cache_lookups_total",
        lambda: call(shield, "/page", headers={"Cookie": "session=1"}),
    )
    assert changes == {("cookie", "bypass", "page"): 1.0}


def test_cache_unkeyed_input_refusal() -> None:
    shield = Shield(header_reading_app, cache_policy())
    changes = moved(
        "wsgishield_cache_lookups_total",
        lambda: call(shield, "/page", headers={"X-Language": "fr"}),
    )
    assert changes == {("unkeyed-header", "miss", "page"): 1.0}


def test_cache_store_error() -> None:
    policy = cache_policy(store="redis")
    policy["redis"] = {"url": closed_redis_url(), "timeout_ms": 200}
    shield = Shield(ok_app, policy)
    errors = moved(
        "wsgishield_store_errors_total",
        lambda: call(shield, "/page"),
    )
    assert errors == {("connection", "cache"): 1.0}


# --- Authentication ---------------------------------------------------------------


def auth_policy() -> dict[str, Any]:
    return {
        "auth": {
            "issuers": {
                "main": {
                    "issuer": ISSUER,
                    "algorithms": ["HS256"],
                    "keys": [{"secret_env": SECRET_VARIABLE}],
                }
            }
        },
        "routes": [{"id": "items", "path": "/items/**", "auth": {}}],
        "metrics": METRICS,
    }


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param(
            {"Authorization": "Bearer " + hs256(claims(exp=1, iat=0, nbf=0))},
            "expired",
            id="expired",
        ),
        pytest.param(
            {"Authorization": "Bearer " + hs256(claims(), secret="x" * 32)},
            "bad-signature",
            id="bad-signature",
        ),
        pytest.param({"Authorization": "Bearer a b"}, "malformed-bearer", id="grammar"),
    ],
)
def test_jwt_failure_counted_by_reason(headers: dict[str, str], reason: str) -> None:
    shield = Shield(ok_app, auth_policy())
    changes = moved(
        "wsgishield_jwt_failures_total",
        lambda: call(shield, "/items/1", headers=headers),
    )
    assert changes == {(reason,): 1.0}


def test_valid_token_counts_no_failure() -> None:
    shield = Shield(ok_app, auth_policy())
    headers = {"Authorization": "Bearer " + hs256(claims())}
    changes = moved(
        "wsgishield_jwt_failures_total",
        lambda: call(shield, "/items/1", headers=headers),
    )
    assert changes == {}


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    running = JwksServer().start()
    try:
        yield running
    finally:
        running.stop()


def jwks_shield(server: JwksServer) -> Shield:
    policy = auth_policy()
    policy["auth"]["issuers"]["main"] = {
        "issuer": ISSUER,
        "algorithms": ["EdDSA"],
        "jwks": {"uri": server.uri},
    }
    return Shield(ok_app, policy)


def ed_token() -> tuple[str, dict[str, Any]]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from jwt.algorithms import OKPAlgorithm

    private = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", use="sig", alg="EdDSA")
    token = jwt.encode(claims(), private, algorithm="EdDSA", headers={"kid": "k1"})
    return token, jwk


@pytest.mark.parametrize(
    ("serve", "result", "status"),
    [
        pytest.param({}, "success", 200, id="success"),
        pytest.param({"status": 500}, "error", 503, id="http-error"),
        pytest.param({"body": b"{not json"}, "invalid", 503, id="invalid"),
    ],
)
def test_jwks_fetch_counted_by_result(
    jwks_server: JwksServer, serve: dict[str, Any], result: str, status: int
) -> None:
    token, jwk = ed_token()
    jwks_server.keys = [jwk]
    for attribute, value in serve.items():
        setattr(jwks_server, attribute, value)
    shield = jwks_shield(jwks_server)
    headers = {"Authorization": f"Bearer {token}"}

    def request() -> None:
        assert call(shield, "/items/1", headers=headers).status_code == status

    assert moved("wsgishield_jwks_fetches_total", request) == {(result,): 1.0}


# --- Access lists and bans --------------------------------------------------------


def test_strike_and_ban_counted() -> None:
    shield = Shield(
        status_app("401 Unauthorized"),
        {"bans": {"threshold": 2, "window": 60}, "metrics": METRICS},
    )
    strikes = "wsgishield_ban_strikes_total"
    assert moved(strikes, lambda: call(shield, "/x")) == {("status-401",): 1.0}
    assert moved("wsgishield_bans_total", lambda: call(shield, "/x")) == {(): 1.0}
    # The banned client's next request is denied before any strike.
    assert moved(strikes, lambda: call(shield, "/x")) == {}


def test_trap_path_strikes_by_weight() -> None:
    shield = Shield(
        ok_app,
        {
            "bans": {
                "threshold": 10,
                "trap_paths": ["/wp-login.php"],
                "trap_strikes": 3,
            },
            "metrics": METRICS,
        },
    )
    changes = moved(
        "wsgishield_ban_strikes_total", lambda: call(shield, "/wp-login.php")
    )
    assert changes == {("trap-path",): 3.0}


def test_ban_store_error() -> None:
    shield = Shield(
        status_app("401 Unauthorized"),
        {
            "bans": {"store": "redis", "threshold": 5},
            "redis": {"url": closed_redis_url(), "timeout_ms": 200},
            "metrics": METRICS,
        },
    )
    changes = moved("wsgishield_store_errors_total", lambda: call(shield, "/x"))
    assert set(changes) == {("connection", "bans")}


@pytest.mark.parametrize(
    ("access", "path", "labels"),
    [
        pytest.param(
            {"access": {"deny": ["192.0.2.0/24"]}},
            "/x",
            ("access", "deny-list"),
            id="site-deny",
        ),
        pytest.param(
            {"access": {"allow": ["198.51.100.0/24"]}},
            "/x",
            ("access", "not-allowed"),
            id="site-allow",
        ),
        pytest.param(
            {
                "routes": [
                    {"id": "admin", "path": "/admin", "access": {"deny": ["0.0.0.0/0"]}}
                ]
            },
            "/admin",
            ("routes.admin.access", "deny-list"),
            id="route-deny",
        ),
    ],
)
def test_access_denial_counted_by_list(
    access: dict[str, Any], path: str, labels: tuple[str, str]
) -> None:
    shield = Shield(ok_app, {**access, "metrics": METRICS})

    def request() -> None:
        assert call(shield, path, remote_addr="192.0.2.10").status_code == 403

    assert moved("wsgishield_access_denials_total", request) == {labels: 1.0}


# --- Without a [metrics] section -------------------------------------------------


def test_layers_count_nothing_without_metrics_section() -> None:
    policy: dict[str, Any] = {
        "client": {"trusted_proxies": ["loopback"]},
        "limits": {
            "default": ["per-ip"],
            "policies": {"per-ip": {"rate": "1/minute"}},
        },
        "cache": {},
        "routes": [{"id": "page", "path": "/page", "cache": {"ttl": 30}}],
        "bans": {"threshold": 2},
    }
    shield = Shield(status_app("401 Unauthorized"), policy)
    # wsgishield_events_total counts logged events with or without metrics.
    families = [
        "wsgishield_client_address_fallbacks_total",
        "wsgishield_ratelimit_decisions_total",
        "wsgishield_cache_lookups_total",
        "wsgishield_ban_strikes_total",
        "wsgishield_bans_total",
    ]
    before = {name: family_values(name) for name in families}
    for _ in range(3):
        call(shield, "/page", remote_addr="127.0.0.1")
    assert {name: family_values(name) for name in families} == before


# --- Counts ------------------------------------------------------------------------


def test_counts_adds_to_given_and_late_keys() -> None:
    registry = metrics.MetricsRegistry()
    counts = metrics.Counts(registry.jwt_failures, ["expired"])
    counts.inc("expired")
    counts.inc("revoked", 2.0)
    assert registry.value(registry.jwt_failures, "expired") == 1.0
    assert registry.value(registry.jwt_failures, "revoked") == 2.0


def test_counts_bounds_late_keys() -> None:
    registry = metrics.MetricsRegistry()
    counts = metrics.Counts(registry.jwt_failures)
    counts.inc("not a label/value")
    assert registry.value(registry.jwt_failures, metrics.OTHER) == 1.0


def test_counts_skip_dropped_series() -> None:
    registry = metrics.MetricsRegistry(max_series=1)
    counts = metrics.Counts(registry.jwt_failures, ["expired", "revoked"])
    counts.inc("expired")
    counts.inc("revoked")
    # Dropped once, when the constructor asked for the slot.
    dropped = registry.value(registry.dropped, "wsgishield_jwt_failures")
    assert dropped == 1.0
    assert registry.value(registry.jwt_failures, "expired") == 1.0
    assert registry.value(registry.jwt_failures, "revoked") == 0.0


def test_counts_follow_store_after_fork() -> None:
    registry = metrics.MetricsRegistry()
    counts = metrics.Counts(registry.jwt_failures, ["expired"])
    counts.inc("expired")
    # A forked child starts from a fresh store; counts must land there.
    registry.reset_after_fork()
    counts.inc("expired")
    assert registry.value(registry.jwt_failures, "expired") == 1.0
