"""CIDR allow and deny lists: the list itself, file reloads and the middleware."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from wsgishield import ConfigurationError, Shield, context, events
from wsgishield.access import AccessList
from wsgishield.cli import main as cli_main
from wsgishield.middleware import AccessMiddleware
from wsgishield.middleware.access import FLOOD_EVENTS_PER_SECOND
from wsgishield.policy import AccessPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ok_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"reached"]


def request(
    app: Any, address: str, path: str = "/", method: str = "GET", **extra: Any
) -> tuple[str, dict[str, str], bytes, dict[str, Any]]:
    captured: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"] = status
        captured["headers"] = dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "REMOTE_ADDR": address,
        "wsgi.url_scheme": "http",
        **extra,
    }
    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body, environ


def parsed(address: str) -> tuple[int, int]:
    from wsgishield._fast.cidr import parse_host

    return parse_host(address)


# --- AccessList -------------------------------------------------------------

VERDICTS = [
    # (allow, deny, address, allowed, rule id or None)
    ([], ["10.0.0.0/8"], "10.9.9.9", False, "access.deny[0]"),
    ([], ["10.0.0.0/8"], "11.0.0.1", True, None),
    (["10.1.0.0/16"], ["10.0.0.0/8"], "10.1.2.3", True, "access.allow[0]"),
    (["10.1.0.0/16"], ["10.0.0.0/8"], "10.2.0.1", False, "access.deny[0]"),
    (["10.0.0.0/8"], ["10.1.0.0/16"], "10.1.0.1", False, "access.deny[0]"),
    (["192.0.2.0/24"], [], "198.51.100.1", False, None),
    (["192.0.2.0/24"], [], "192.0.2.200", True, "access.allow[0]"),
    (["192.0.2.0/24"], ["192.0.2.0/24"], "192.0.2.1", False, "access.deny[0]"),
    (["192.0.2.0/24"], [], "::ffff:192.0.2.1", True, "access.allow[0]"),
    ([], ["2001:db8::/32"], "2001:db8:ffff::1", False, "access.deny[0]"),
    ([], ["2001:db8::/32"], "2001:db9::1", True, None),
    (["0.0.0.0/0"], ["203.0.113.7"], "203.0.113.7", False, "access.deny[0]"),
    (["0.0.0.0/0"], ["203.0.113.7"], "203.0.113.8", True, "access.allow[0]"),
    (["0.0.0.0/0"], [], "2001:db8::1", False, None),
    (["loopback"], [], "::1", True, "access.allow[0]"),
    (["private"], [], "172.16.5.4", True, "access.allow[0]"),
    (["private"], [], "8.8.8.8", False, None),
]


@pytest.mark.parametrize(
    ("allow", "deny", "address", "allowed", "rule_id"),
    VERDICTS,
    ids=[f"{address}-allow{allow}-deny{deny}" for allow, deny, address, *_ in VERDICTS],
)
def test_list_verdicts(
    allow: list[str], deny: list[str], address: str, allowed: bool, rule_id: str | None
) -> None:
    verdict = AccessList(allow=allow, deny=deny).check(*parsed(address))
    assert verdict.allowed is allowed
    assert (verdict.rule.id if verdict.rule else None) == rule_id


def test_deny_file_beats_inline_allow(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("192.0.2.0/24\n")
    rules = AccessList(allow=["192.0.2.0/24", "0.0.0.0/0"], deny_files=[str(deny)])
    verdict = rules.check(*parsed("192.0.2.1"))
    assert not verdict.allowed
    assert verdict.rule is not None
    assert verdict.rule.id == f"{deny}:1"


def test_empty_allow_file_denies_everyone(tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("# nothing yet\n")
    assert not AccessList(allow_files=[str(allow)]).check(*parsed("192.0.2.1")).allowed


def test_list_rejects_bad_inline_network() -> None:
    with pytest.raises(ConfigurationError) as raised:
        AccessList(deny=["10.0.0.0/8", "10.0.0.1/8"])
    assert raised.value.key == "access.deny[1]"
    assert "host bits" in raised.value.reason


def test_list_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        AccessList(deny_files=[str(tmp_path / "missing.txt")])
    assert raised.value.key == "access.deny_files"


def test_file_bad_lines_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(
        "# threat feed\n198.51.100.0/24\nnot-a-network\n\n10.0.0.1/8  # typo\n"
    )
    with caplog.at_level(logging.WARNING, logger="wsgishield.access"):
        rules = AccessList(deny_files=[str(path)])
    assert len(rules) == 1
    assert [(bad.line, bad.text) for bad in rules.bad_lines] == [
        (3, "not-a-network"),
        (5, "10.0.0.1/8"),
    ]
    assert f"{path}:3" in caplog.text
    assert f"{path}:5" in caplog.text
    verdict = rules.check(*parsed("198.51.100.9"))
    assert verdict.rule is not None
    assert verdict.rule.id == f"{path}:2"


def bump(path: Path, text: str, seconds: int) -> None:
    """Rewrite a file with a distinct modification time, as a later write has."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def test_file_reloads_after_interval(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("198.51.100.0/24\n")
    clock = FakeClock()
    rules = AccessList(deny_files=[str(path)], reload_interval=1.0, clock=clock)
    assert not rules.check(*parsed("198.51.100.1")).allowed

    bump(path, "203.0.113.0/24\n", 1)
    clock.now += 0.5
    assert not rules.check(*parsed("198.51.100.1")).allowed  # not checked yet

    clock.now += 0.5
    assert rules.check(*parsed("198.51.100.1")).allowed
    assert not rules.check(*parsed("203.0.113.1")).allowed


def test_file_stat_at_most_once_per_interval(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("198.51.100.0/24\n")
    clock = FakeClock()
    rules = AccessList(deny_files=[str(path)], reload_interval=1.0, clock=clock)
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda *a, **k: calls.append(a) or real_stat(*a, **k)
    )
    for _ in range(100):
        rules.check(*parsed("198.51.100.1"))
    assert calls == []
    clock.now += 1.0
    for _ in range(100):
        rules.check(*parsed("198.51.100.1"))
    assert len(calls) == 1


@pytest.mark.parametrize(
    "breakage", ["deleted", "unreadable-bytes", "directory"], ids=str
)
def test_failed_reload_keeps_last_good(
    tmp_path: Path, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("198.51.100.0/24\n")
    clock = FakeClock()
    rules = AccessList(deny_files=[str(path)], clock=clock)
    if breakage == "deleted":
        path.unlink()
    elif breakage == "unreadable-bytes":
        path.write_bytes(b"\xff\xfe203.0.113.0/24\n")
    else:
        path.unlink()
        path.mkdir()
    clock.now += 5
    with caplog.at_level(logging.ERROR, logger="wsgishield.access"):
        verdict = rules.check(*parsed("198.51.100.1"))
        clock.now += 5
        rules.check(*parsed("198.51.100.1"))
    assert not verdict.allowed
    assert caplog.text.count("failed to load") == 1


def test_file_recovers_after_failure(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("198.51.100.0/24\n")
    clock = FakeClock()
    rules = AccessList(deny_files=[str(path)], clock=clock)
    path.unlink()
    clock.now += 5
    rules.check(*parsed("198.51.100.1"))
    path.write_text("203.0.113.0/24\n")
    clock.now += 5
    assert rules.check(*parsed("198.51.100.1")).allowed
    assert not rules.check(*parsed("203.0.113.1")).allowed


def test_atomic_rename_reloads(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    path.write_text("192.0.2.0/24\n")
    clock = FakeClock()
    rules = AccessList(allow_files=[str(path)], clock=clock)
    replacement = tmp_path / "allow.txt.new"
    replacement.write_text("198.51.100.0/24\n")
    os.replace(replacement, path)
    clock.now += 1
    assert rules.check(*parsed("198.51.100.4")).allowed
    assert not rules.check(*parsed("192.0.2.4")).allowed


def test_reload_swaps_whole_table(tmp_path: Path) -> None:
    """Concurrent readers see the old table or the new one, never a mix."""
    first = tmp_path / "a.txt"
    second = tmp_path / "b.txt"
    first.write_text("198.51.100.0/24\n")
    second.write_text("203.0.113.0/24\n")
    clock = FakeClock()
    rules = AccessList(deny_files=[str(first), str(second)], clock=clock)
    probes = [parsed("198.51.100.1"), parsed("203.0.113.1")]
    seen: set[tuple[bool, ...]] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            rules.check(*probes[0])
            table = rules._snapshot.table
            seen.add(tuple(table.lookup(*probe) >= 0 for probe in probes))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        # Both files change before the next check, so both changes land in
        # one new table while the readers keep reading.
        bump(first, "192.0.2.0/24\n", 1)
        bump(second, "192.0.2.128/25\n", 1)
        clock.now += 1
        for _ in range(500):
            if (False, False) in seen:
                break
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert seen <= {(True, True), (False, False)}
    assert (False, False) in seen


# --- Middleware -------------------------------------------------------------

POLICY: dict[str, Any] = {
    "client": {"trusted_proxies": ["loopback"]},
    "access": {"deny": ["203.0.113.0/24", "2001:db8:bad::/48"]},
    "routes": [
        {"id": "admin", "path": "/admin/**", "access": {"allow": ["192.0.2.0/24"]}},
        {"id": "internal", "path": "/internal", "access": {"deny": ["0.0.0.0/0"]}},
        {"id": "public", "path": "/**"},
    ],
}

DECISIONS = [
    # (client address, path, expected status, reason, rule id)
    ("198.51.100.1", "/items", 200, None, None),
    ("203.0.113.9", "/items", 403, "deny-list", "access.deny[0]"),
    ("::ffff:203.0.113.9", "/items", 403, "deny-list", "access.deny[0]"),
    ("2001:db8:bad:1::1", "/items", 403, "deny-list", "access.deny[1]"),
    ("2001:db8:bad0::1", "/items", 200, None, None),
    ("192.0.2.10", "/admin/users", 200, None, None),
    ("192.0.2.10", "/admin", 200, None, None),
    ("198.51.100.1", "/admin/users", 403, "not-allowed", "routes[admin].access.allow"),
    (
        "198.51.100.1",
        "//admin/./users",
        403,
        "not-allowed",
        "routes[admin].access.allow",
    ),
    ("203.0.113.9", "/admin/users", 403, "deny-list", "access.deny[0]"),
    ("192.0.2.10", "/internal", 403, "deny-list", "routes[internal].access.deny[0]"),
    ("2001:db8::1", "/internal", 200, None, None),
]


@pytest.fixture(scope="module")
def shield() -> Shield:
    return Shield(ok_app, POLICY)


@pytest.mark.parametrize(
    ("client", "path", "status", "reason", "rule_id"),
    DECISIONS,
    ids=[f"{client}-{path}" for client, path, *_ in DECISIONS],
)
def test_middleware_decisions(
    shield: Shield,
    client: str,
    path: str,
    status: int,
    reason: str | None,
    rule_id: str | None,
) -> None:
    line, headers, body, environ = request(
        shield, "127.0.0.1", path, HTTP_X_FORWARDED_FOR=client
    )
    assert int(line[:3]) == status
    decision = environ.get(context.DECISION)
    if status == 200:
        assert body == b"reached"
        assert decision is None
        return
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Cache-Control"] == "no-store"
    assert json.loads(body)["type"].endswith("access-denied")
    assert decision == context.Decision("access", "denied-cidr", reason, rule_id)


def test_denied_body_names_no_rule(shield: Shield) -> None:
    _, _, body, _ = request(shield, "203.0.113.9")
    assert b"access.deny" not in body
    assert b"203.0.113" not in body


def test_denied_head_has_empty_body(shield: Shield) -> None:
    line, _, body, _ = request(shield, "203.0.113.9", method="HEAD")
    assert line.startswith("403")
    assert body == b""


@pytest.mark.parametrize(
    "remote_addr",
    ["", "garbage", "999.1.1.1", "x" * 10_000, "[::1", "::1%bad zone"],
)
def test_hostile_peer_gets_no_error(remote_addr: str) -> None:
    app = AccessMiddleware(ok_app, access=AccessPolicy(allow=["loopback"]))
    line, _, body, _ = request(app, remote_addr)
    # Without an address the peer is judged as loopback, as the client layer does.
    assert line.startswith("200")
    assert body == b"reached"


def test_standalone_middleware_uses_peer() -> None:
    app = AccessMiddleware(ok_app, access=AccessPolicy(deny=["192.0.2.0/24"]))
    assert request(app, "192.0.2.1")[0].startswith("403")
    assert request(app, "192.0.2.1:5555")[0].startswith("403")
    assert request(app, "198.51.100.1")[0].startswith("200")


def test_layer_off_without_settings() -> None:
    shield = Shield(ok_app, {})
    assert not any(isinstance(layer, AccessMiddleware) for layer in shield.layers)


def test_trace_shows_allow_rule(shield: Shield) -> None:
    trace: list[Any] = []
    request(
        shield,
        "127.0.0.1",
        "/admin/x",
        HTTP_X_FORWARDED_FOR="192.0.2.10",
        **{context.TRACE: trace},
    )
    entries = [entry for entry in trace if entry[0] == "access"]
    assert entries == [
        (
            "access",
            "allowed",
            context.Decision(
                "access", "allowed", "allow-list", "routes[admin].access.allow[0]"
            ),
        )
    ]


def test_explain_shows_matching_rule(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    deny = tmp_path / "deny.txt"
    deny.write_text("# feed\n198.51.100.0/24\n")
    policy.write_text(f'[access]\ndeny_files = ["{deny}"]\n')
    out = io.StringIO()
    status = cli_main(
        ["explain", str(policy), "GET", "/", "--peer", "198.51.100.7"], out
    )
    assert status == 0
    assert f"access: denied-cidr (reason deny-list, rule {deny}:2)" in out.getvalue()
    assert "403" in out.getvalue()


def test_deny_event_fields(
    shield: Shield, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "_limiter", events.EventLimiter())
    with caplog.at_level(logging.INFO, logger="wsgishield.events.access"):
        request(shield, "127.0.0.1", "/admin/x", HTTP_X_FORWARDED_FOR="2001:db8:bad::5")
    event = caplog.records[-1].event  # type: ignore[attr-defined]
    assert event["event.action"] == "denied-cidr"
    assert event["client.ip"] == "2001:db8:bad::5"
    assert event["rule.id"] == "access.deny[1]"
    assert event["rule.ruleset"] == "2001:db8:bad::/48"
    assert event["event.reason"] == "deny-list"
    assert event["url.path"] == "/admin/x"
    assert event["labels.route"] == "admin"


def test_deny_events_rate_limited(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "_limiter", events.EventLimiter())
    app = AccessMiddleware(ok_app, access=AccessPolicy(deny=["10.0.0.0/8"]))
    with caplog.at_level(logging.INFO, logger="wsgishield.events.access"):
        for index in range(500):
            request(app, f"10.0.{index // 256}.{index % 256}")
    records = [r for r in caplog.records if r.name == "wsgishield.events.access"]
    assert 1 <= len(records) <= 2 * FLOOD_EVENTS_PER_SECOND


def test_policy_file_lists_reload(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("198.51.100.0/24\n")
    shield = Shield(
        ok_app, {"access": {"deny_files": [str(deny)], "reload_interval": 0.05}}
    )
    assert request(shield, "198.51.100.1")[0].startswith("403")
    bump(deny, "203.0.113.0/24\n", 1)
    threading.Event().wait(0.1)
    assert request(shield, "198.51.100.1")[0].startswith("200")
    assert request(shield, "203.0.113.1")[0].startswith("403")


HOSTILE_HEADERS = {
    "huge-xff": {"HTTP_X_FORWARDED_FOR": "1.2.3.4, " * 20_000},
    "garbage-xff": {"HTTP_X_FORWARDED_FOR": "\x00\xff, ::ffff:zz, [::1"},
    "unicode-path": {"PATH_INFO": "/admin/\u202e\u0000/..//%2e%2e"},
    "empty-path": {"PATH_INFO": ""},
    "huge-path": {"PATH_INFO": "/" + "a/" * 50_000},
    "no-remote-addr": {"REMOTE_ADDR": None},
}


@pytest.mark.parametrize(
    "extra", list(HOSTILE_HEADERS.values()), ids=list(HOSTILE_HEADERS)
)
def test_hostile_request_gets_answer(extra: dict[str, Any]) -> None:
    policy = {
        **POLICY,
        "bans": {"threshold": 2, "trap_paths": ["/.env"], "exempt_paths": ["/health"]},
    }
    shield = Shield(ok_app, policy)
    for _ in range(3):
        line, _, _, _ = request(shield, "127.0.0.1", **extra)
        assert line[:3] in ("200", "403")
