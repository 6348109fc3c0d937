from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from wsgishield.auth import Identity, Requirement
from wsgishield.errors import ConfigurationError
from wsgishield.policy import ClaimRule


def identity(
    roles: set[str] = frozenset(),  # type: ignore[assignment]
    scopes: set[str] = frozenset(),  # type: ignore[assignment]
    profile: str = "main",
    **claims: Any,
) -> Identity:
    return Identity(
        subject="user-1",
        issuer="https://issuer.example",
        profile=profile,
        roles=frozenset(roles),
        scopes=frozenset(scopes),
        claims=MappingProxyType(claims),
        token_id=None,
        issued_at=None,
        expires_at=None,
        fingerprint="0" * 16,
    )


CASES = [
    ("no-rules", {}, identity(), None),
    ("any-one-of", {"roles_any": ["a", "b"]}, identity(roles={"b"}), None),
    ("any-none", {"roles_any": ["a", "b"]}, identity(roles={"c"}), "missing-role"),
    ("all-present", {"roles_all": ["a", "b"]}, identity(roles={"a", "b", "c"}), None),
    ("all-partial", {"roles_all": ["a", "b"]}, identity(roles={"a"}), "missing-role"),
    ("scopes-present", {"scopes": ["r", "w"]}, identity(scopes={"r", "w"}), None),
    ("scopes-partial", {"scopes": ["r", "w"]}, identity(scopes={"r"}), "missing-scope"),
    ("issuer-ok", {"issuers": ["main"]}, identity(), None),
    ("issuer-other", {"issuers": ["partner"]}, identity(), "issuer-not-accepted"),
    ("claim-contains", {"claims": [ClaimRule(path="realm_access.roles", contains="ops")]},
     identity(realm_access={"roles": ["ops"]}), None),
    ("claim-contains-missing", {"claims": [ClaimRule(path="realm_access.roles", contains="ops")]},
     identity(realm_access={"roles": ["dev"]}), "claim-mismatch"),
    ("claim-path-absent", {"claims": [ClaimRule(path="realm_access.roles", contains="ops")]},
     identity(), "claim-mismatch"),
    ("claim-path-not-object", {"claims": [ClaimRule(path="realm_access.roles", contains="ops")]},
     identity(realm_access="ops"), "claim-mismatch"),
    ("claim-equals", {"claims": [ClaimRule(path="tenant", equals="acme")]},
     identity(tenant="acme"), None),
    ("claim-equals-other", {"claims": [ClaimRule(path="tenant", equals="acme")]},
     identity(tenant="evil"), "claim-mismatch"),
    ("claim-equals-true-not-1", {"claims": [ClaimRule(path="verified", equals=True)]},
     identity(verified=1), "claim-mismatch"),
    ("claim-one-of", {"claims": [ClaimRule(path="plan", one_of=["pro", "team"])]},
     identity(plan="team"), None),
    ("claim-one-of-list-value", {"claims": [ClaimRule(path="plan", one_of=["pro"])]},
     identity(plan=["pro"]), "claim-mismatch"),
    ("claim-contains-space-string", {"claims": [ClaimRule(path="groups", contains="ops")]},
     identity(groups="dev ops"), None),
    ("roles-then-scopes", {"roles_any": ["a"], "scopes": ["r"]},
     identity(roles={"a"}), "missing-scope"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "who", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_requirement_check(
    options: dict[str, Any], who: Identity, expected: str | None
) -> None:
    assert Requirement("rule", **options).check(who) == expected


def test_required_scope_for_challenge() -> None:
    requirement = Requirement("rule", roles_any=["b", "a"], scopes=["w", "r"])
    assert requirement.required_scope("missing-role") == "a b"
    assert requirement.required_scope("missing-scope") == "r w"
    assert requirement.required_scope("claim-mismatch") == ""


@pytest.mark.parametrize("value", ['a"b', "a b", "a\\b", "a\r\nX-Injected: 1", "", "é"])
def test_role_names_fit_challenge(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Requirement("rule", roles_any=[value])
    assert caught.value.key == "rule.auth.roles_any"
