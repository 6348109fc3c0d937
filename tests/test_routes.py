"""Route rules: patterns, normalization, ordering and the bounded memo."""

from __future__ import annotations

import pytest

from wsgishield.routes import MAX_MEMOISED_PATH, Route, RouteTable, normalize_path

NORMALIZE_CASES = [
    ("plain", "/items/3", "/items/3"),
    ("double-slash", "//admin//x", "/admin/x"),
    ("dot-segment", "/admin/./x", "/admin/x"),
    ("dot-dot", "/public/../admin/x", "/admin/x"),
    ("dot-dot-above-root", "/../../admin", "/admin"),
    ("trailing-slash-kept", "/admin//", "/admin/"),
    ("empty", "", "/"),
    ("root", "/", "/"),
    ("dots-in-name-kept", "/files/a..b", "/files/a..b"),
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [case[1:] for case in NORMALIZE_CASES],
    ids=[case[0] for case in NORMALIZE_CASES],
)
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


TABLE = RouteTable(
    [
        Route("health", "/health", ["GET"]),
        Route("admin", "/admin/**"),
        Route("item", "/items/{id}", ["GET", "PUT"]),
        Route("files", "/files/{rest:path}"),
        Route("star", "/v1/*/status"),
        Route("root", "/"),
    ]
)

MATCH_CASES = [
    ("exact", "GET", "/health", "health"),
    ("head-follows-get", "HEAD", "/health", "health"),
    ("method-not-listed", "POST", "/health", None),
    ("prefix-itself", "GET", "/admin", "admin"),
    ("prefix-slash", "DELETE", "/admin/", "admin"),
    ("prefix-deep", "GET", "/admin/users/7", "admin"),
    ("prefix-not-word-prefix", "GET", "/administrator", None),
    ("double-slash-bypass", "GET", "//admin/x", "admin"),
    ("dot-dot-bypass", "GET", "/public/../admin/x", "admin"),
    ("segment", "PUT", "/items/42", "item"),
    ("segment-not-deeper", "GET", "/items/42/extra", None),
    ("segment-not-empty", "GET", "/items/", None),
    ("named-rest", "GET", "/files/a/b/c.txt", "files"),
    ("star", "GET", "/v1/orders/status", "star"),
    ("root", "GET", "/", "root"),
    ("unmatched", "GET", "/nope", None),
    ("regex-chars-literal", "GET", "/health.", None),
]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [case[1:] for case in MATCH_CASES],
    ids=[case[0] for case in MATCH_CASES],
)
def test_route_match(method: str, path: str, expected: str | None) -> None:
    route = TABLE.match(method, path)
    assert (route.id if route else None) == expected


def test_first_match_wins() -> None:
    table = RouteTable([Route("login", "/admin/login"), Route("admin", "/admin/**")])
    login = table.match("POST", "/admin/login")
    assert login is not None
    assert login.id == "login"


def test_memo_is_bounded() -> None:
    table = RouteTable([Route("any", "/**")], cache_size=64)
    for number in range(1000):
        assert table.match("GET", f"/path/{number}") is not None
    assert len(table._memo) <= 64


def test_long_paths_not_memoised() -> None:
    table = RouteTable([Route("any", "/**")])
    table.match("GET", "/" + "a" * (MAX_MEMOISED_PATH + 1))
    assert len(table._memo) == 0


def test_memo_returns_same_answer() -> None:
    table = RouteTable([Route("item", "/items/{id}")])
    first = table.match("GET", "/items/1")
    assert table.match("GET", "/items/1") is first


BYPASS_CASES = [
    ("no-leading-slash", "admin/stats"),
    ("no-leading-slash-bare", "admin"),
    ("newline-after-prefix", "/admin/x\n"),
    ("newline-segment", "/admin/\n"),
    ("carriage-return", "/admin/\r"),
]


@pytest.mark.parametrize(
    "path", [case[1] for case in BYPASS_CASES], ids=[case[0] for case in BYPASS_CASES]
)
def test_admin_rule_not_bypassed(path: str) -> None:
    route = TABLE.match("GET", path)
    assert route is not None
    assert route.id == "admin"


@pytest.mark.parametrize(
    "pattern",
    ["/admin/../admin/**", "/admin//x/**", "/a/./b", "/a/{id}/{id}"],
    ids=["dot-dot", "double-slash", "dot", "repeated-name"],
)
def test_unmatchable_patterns_rejected(pattern: str) -> None:
    with pytest.raises(ValueError):
        Route("bad", pattern)
