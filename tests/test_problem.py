"""Problem responses: RFC 9457 shape, headers and HEAD handling."""

from __future__ import annotations

import json
from typing import Any

from wsgishield import Problem


class Recorder:
    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        self.status = status
        self.headers = headers


def test_problem_body_and_headers() -> None:
    problem = Problem(
        429, "rate-limited", "Too many requests", "retry in 3 s", [("Retry-After", "3")]
    )
    recorder = Recorder()
    body = b"".join(problem({"REQUEST_METHOD": "GET"}, recorder))
    document = json.loads(body)
    assert recorder.status == "429 Too Many Requests"
    assert document == {
        "type": "urn:wsgishield:problem:rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": "retry in 3 s",
    }
    headers = dict(recorder.headers)
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Cache-Control"] == "no-store"
    assert headers["Retry-After"] == "3"


def test_problem_head_has_no_body() -> None:
    recorder = Recorder()
    body = b"".join(
        Problem(403, "forbidden", "Forbidden")({"REQUEST_METHOD": "HEAD"}, recorder)
    )
    assert body == b""
    assert recorder.status == "403 Forbidden"


def test_problem_extra_headers_per_call() -> None:
    recorder = Recorder()
    Problem(405, "method-not-allowed", "Method not allowed")(
        {"REQUEST_METHOD": "POST"}, recorder, [("Allow", "GET, HEAD")]
    )
    assert ("Allow", "GET, HEAD") in recorder.headers


def test_with_detail_keeps_type_and_headers() -> None:
    base = Problem(
        401,
        "unauthorized",
        "Unauthorized",
        headers=[("WWW-Authenticate", 'Bearer realm="api"')],
        type_base="https://errors.example/",
    )
    detailed = base.with_detail("token expired")
    assert detailed.type == "https://errors.example/unauthorized"
    assert ("WWW-Authenticate", 'Bearer realm="api"') in detailed.headers
    assert json.loads(detailed.body)["detail"] == "token expired"
