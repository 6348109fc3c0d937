from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from wsgishield import context, events, metrics
from wsgishield.logging import EcsJsonFormatter, json_handler

# ECS 8.11 allows only these values in the categorization fields ("ECS
# Categorization Fields" in the ECS reference).
ECS_CATEGORIES = {
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
}
ECS_TYPES = {
    "access",
    "admin",
    "allowed",
    "change",
    "connection",
    "creation",
    "deletion",
    "denied",
    "end",
    "error",
    "group",
    "indicator",
    "info",
    "installation",
    "protocol",
    "start",
    "user",
}
ECS_OUTCOMES = {"failure", "success", "unknown"}
ECS_KINDS = {
    "alert",
    "asset",
    "enrichment",
    "event",
    "metric",
    "state",
    "pipeline_error",
    "signal",
}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("wsgishield.events")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def environ(**extra: Any) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/login",
        "QUERY_STRING": (
            "next=/home&access_token=eyJhbGciOi.secret.sig&Password=hunter2"
        ),
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_USER_AGENT": "curl/8.5",
        context.CLIENT_IP: "203.0.113.7",
        **extra,
    }


def emitted_events(handler: Capture) -> list[dict[str, Any]]:
    return [record.event for record in handler.records]  # type: ignore[attr-defined]


def test_shipped_field_list_has_types() -> None:
    text = (resources.files("wsgishield") / "data" / "ecs-fields.txt").read_text()
    rows = [
        line.split("\t")
        for line in text.splitlines()
        if line and not line.startswith("#")
    ]
    assert all(len(row) == 2 for row in rows)
    assert events.ECS_FIELDS["event.duration"] == "long"
    assert events.ECS_FIELDS["client.ip"] == "ip"


@pytest.mark.parametrize(
    "action",
    [
        "denied-cidr",
        "banned",
        "invalid",
        "auth-failed",
        "rate-limited",
        "cached",
        "unavailable",
        "allowed",
        "odd",
    ],
)
def test_every_emitted_field_is_ecs(captured: Capture, action: str) -> None:
    fields = events.request_fields(
        environ(), rule_id="login-per-ip", user_id="u-17", status=429, duration_ns=1234
    )
    fields["something.custom"] = "value"
    fields["labels.token_fingerprint"] = events.fingerprint("eyJ.secret")
    assert events.emit("test", action, fields, limiter=events.EventLimiter())

    (event,) = emitted_events(captured)
    for name in event:
        if name.startswith("labels."):
            assert "labels" in events.ECS_FIELDS
            assert isinstance(event[name], str), name
        else:
            assert name in events.ECS_FIELDS, name
    assert event["event.kind"] in ECS_KINDS
    assert set(event["event.category"]) <= ECS_CATEGORIES
    assert set(event["event.type"]) <= ECS_TYPES
    assert event["event.outcome"] in ECS_OUTCOMES
    assert event["event.action"] == action
    assert event["labels.something_custom"] == "value"


def test_json_line_fields_are_ecs(captured: Capture) -> None:
    events.emit(
        "auth",
        "auth-failed",
        events.request_fields(environ()),
        limiter=events.EventLimiter(),
    )
    (record,) = captured.records
    document = json.loads(EcsJsonFormatter().format(record))
    for name in document:
        assert name in events.ECS_FIELDS or name.startswith("labels."), name
    assert document["ecs.version"] == events.ECS_VERSION
    assert document["log.logger"] == "wsgishield.events.auth"
    assert document["log.level"] == "warning"
    assert document["@timestamp"].endswith("Z")


@pytest.mark.parametrize(
    "remote_addr",
    ["", "garbage", "unix:/run/app.sock"],
    ids=["empty", "garbage", "unix"],
)
def test_request_fields_omit_invalid_address(remote_addr: str) -> None:
    fields = events.request_fields({"REMOTE_ADDR": remote_addr, "PATH_INFO": "/"})
    assert "client.ip" not in fields
    assert "source.ip" not in fields


def test_request_fields_parse_peer_without_client_layer() -> None:
    fields = events.request_fields(
        {"REMOTE_ADDR": "::ffff:192.0.2.4", "PATH_INFO": "/"}
    )
    assert fields["client.ip"] == "192.0.2.4"
    assert fields["source.ip"] == "192.0.2.4"


def test_request_fields_from_environ() -> None:
    env = environ()
    context.record_decision(
        env, "ratelimit", "rate-limited", "per-client", "login-per-ip"
    )
    fields = events.request_fields(env, status=429, duration_ns=5000)
    assert fields["client.ip"] == "203.0.113.7"
    assert fields["source.ip"] == "10.0.0.5"
    assert fields["url.path"] == "/login"
    assert fields["http.request.method"] == "POST"
    assert fields["rule.id"] == "login-per-ip"
    assert fields["event.reason"] == "per-client"
    assert fields["http.response.status_code"] == 429
    assert fields["event.duration"] == 5000


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&b=2", "a=1&b=2"),
        ("token=abc", "token=[redacted]"),
        ("access_token=abc&x=1", "access_token=[redacted]&x=1"),
        ("API_KEY=abc", "API_KEY=[redacted]"),
        ("Password=hunter2", "Password=[redacted]"),
        ("code=xyz&state=s", "code=[redacted]&state=s"),
        ("flag", "flag="),
        ("", ""),
    ],
    ids=[
        "plain",
        "token",
        "access-token",
        "api-key-upper",
        "password",
        "oauth-code",
        "blank",
        "empty",
    ],
)
def test_redact_query(query: str, expected: str) -> None:
    assert events.redact_query(query) == expected


def test_redact_query_is_bounded() -> None:
    assert len(events.redact_query("a=" + "x" * 100_000)) <= events.MAX_LOGGED_TEXT


def test_secrets_never_reach_the_log(captured: Capture) -> None:
    stream = io.StringIO()
    handler = json_handler(stream)
    logging.getLogger("wsgishield.events").addHandler(handler)
    try:
        fields = events.request_fields(environ())
        fields["labels.authorization"] = "Bearer eyJhbGciOi.secret.sig"
        fields["session_id"] = "s3cr3t-session"
        fields["url.query"] = "refresh_token=abc123"
        events.emit("auth", "auth-failed", fields, limiter=events.EventLimiter())
    finally:
        logging.getLogger("wsgishield.events").removeHandler(handler)
    line = stream.getvalue()
    for secret in ["eyJhbGciOi", "hunter2", "s3cr3t-session", "abc123"]:
        assert secret not in line, secret
    document = json.loads(line)
    assert document["url.query"] == "refresh_token=[redacted]"
    assert document["labels.authorization"] == "[redacted]"


def test_fingerprint_is_short_and_stable() -> None:
    first = events.fingerprint("eyJhbGciOi.secret.sig")
    assert first == events.fingerprint(b"eyJhbGciOi.secret.sig")
    assert len(first) == 16
    assert first != events.fingerprint("eyJhbGciOi.secret.sih")
    assert "secret" not in first


def test_repeats_are_limited_and_counted(captured: Capture) -> None:
    limiter = events.EventLimiter(per_second=2)
    before = metrics.REGISTRY.value(metrics.EVENTS_SUPPRESSED, "flood", "banned")
    results = [
        events.emit(
            "flood",
            "banned",
            {"client.ip": "198.51.100.1"},
            client="198.51.100.1",
            limiter=limiter,
        )
        for _ in range(10)
    ]
    assert results == [True, True] + [False] * 8
    after = metrics.REGISTRY.value(metrics.EVENTS_SUPPRESSED, "flood", "banned")
    assert after - before == 8


def test_suppressed_count_reported_next_second(captured: Capture) -> None:
    limiter = events.EventLimiter(per_second=1)
    key = ("flood", "banned", "198.51.100.2")
    assert limiter.allow(key, now=100.0) == 0
    assert limiter.allow(key, now=100.5) is None
    assert limiter.allow(key, now=100.9) is None
    assert limiter.allow(key, now=101.0) == 2


def test_limiter_memory_is_bounded() -> None:
    limiter = events.EventLimiter(per_second=1, max_keys=100)
    for number in range(1000):
        limiter.allow(("k", "a", str(number)), now=1.0)
    assert len(limiter._windows) == 100


def test_disabled_logger_emits_nothing(captured: Capture) -> None:
    logging.getLogger("wsgishield.events").setLevel(logging.ERROR)
    assert not events.emit("quiet", "banned", {}, limiter=events.EventLimiter())
    assert captured.records == []


def test_formatter_handles_exceptions_and_odd_values() -> None:
    logger = logging.getLogger("wsgishield.test-formatter")
    try:
        raise ValueError("broken")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            exc_info=sys.exc_info(),
            extra={"event": {"labels.thing": object()}},
        )
    document = json.loads(EcsJsonFormatter().format(record))
    assert document["message"] == "failed x"
    assert document["error.type"] == "ValueError"
    assert "Traceback" in document["error.stack_trace"]
    assert document["labels.thing"].startswith("<object")
