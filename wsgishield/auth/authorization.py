"""Per-route authorization: roles, scopes and claim predicates.

A :class:`Requirement` is compiled once from a route's ``auth`` section and
checked against a verified :class:`~wsgishield.auth.verifier.Identity` with
set operations only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .verifier import claim_at

if TYPE_CHECKING:
    from ..policy import ClaimRule, RouteAuth
    from .verifier import Identity

__all__ = ["ClaimPredicate", "Requirement"]

# RFC 6749, section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). Roles
# follow the same rule because they also appear in the scope="..." challenge.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,256}\Z")


def _scope_tokens(values: Iterable[str], key: str) -> frozenset[str]:
    tokens = frozenset(values)
    for value in tokens:
        if not _SCOPE_TOKEN.match(value):
            raise ConfigurationError(
                key,
                value,
                "expected printable ASCII without spaces, quotes or backslashes",
            )
    return tokens


class ClaimPredicate:
    """One compiled :class:`~wsgishield.policy.ClaimRule`."""

    __slots__ = ("contains", "equals", "has_equals", "one_of", "path", "text")

    def __init__(self, rule: ClaimRule) -> None:
        self.path = tuple(rule.path.split("."))
        self.text = rule.path
        self.has_equals = rule.equals is not None
        self.equals = rule.equals
        self.one_of = frozenset(rule.one_of)
        self.contains = rule.contains

    def holds(self, claims: Any) -> bool:
        value = claim_at(claims, self.path)
        if value is None:
            return False
        if self.has_equals and (
            value != self.equals or type(value) is not type(self.equals)
        ):
            return False
        if self.one_of and (type(value) is not str or value not in self.one_of):
            return False
        if self.contains is not None:
            if type(value) is list:
                return self.contains in value
            if type(value) is str:
                return self.contains in value.split()
            return False
        return True


class Requirement:
    """What a route demands of the caller; ``check`` returns why it fails."""

    __slots__ = (
        "allow_query_token",
        "claims",
        "issuers",
        "optional",
        "public",
        "roles_all",
        "roles_any",
        "rule_id",
        "scopes",
    )

    def __init__(
        self,
        rule_id: str,
        *,
        public: bool = False,
        optional: bool = False,
        issuers: Iterable[str] = (),
        roles_any: Iterable[str] = (),
        roles_all: Iterable[str] = (),
        scopes: Iterable[str] = (),
        claims: Sequence[ClaimRule] = (),
        allow_query_token: bool = False,
    ) -> None:
        self.rule_id = rule_id
        self.public = public
        self.optional = optional
        self.issuers = frozenset(issuers) or None
        self.roles_any = _scope_tokens(roles_any, f"{rule_id}.auth.roles_any")
        self.roles_all = _scope_tokens(roles_all, f"{rule_id}.auth.roles_all")
        self.scopes = _scope_tokens(scopes, f"{rule_id}.auth.scopes")
        self.claims = tuple(ClaimPredicate(rule) for rule in claims)
        self.allow_query_token = allow_query_token

    @classmethod
    def from_policy(cls, rule_id: str, settings: RouteAuth) -> Requirement:
        return cls(
            rule_id,
            public=settings.public,
            optional=settings.optional,
            issuers=settings.issuers,
            roles_any=settings.roles_any,
            roles_all=settings.roles_all,
            scopes=settings.scopes,
            claims=settings.claims,
            allow_query_token=settings.allow_query_token,
        )

    def check(self, identity: Identity) -> str | None:
        """Return ``None`` when ``identity`` may pass, else the reason.

        Reasons: ``issuer-not-accepted`` (sent as 401), ``missing-role``,
        ``missing-scope`` and ``claim-mismatch`` (sent as 403).
        """
        if self.issuers is not None and identity.profile not in self.issuers:
            return "issuer-not-accepted"
        if self.roles_any and self.roles_any.isdisjoint(identity.roles):
            return "missing-role"
        if self.roles_all and not self.roles_all <= identity.roles:
            return "missing-role"
        if self.scopes and not self.scopes <= identity.scopes:
            return "missing-scope"
        for predicate in self.claims:
            if not predicate.holds(identity.claims):
                return "claim-mismatch"
        return None

    def required_scope(self, reason: str) -> str:
        """Return the ``scope`` attribute of the 403 challenge for ``reason``."""
        if reason == "missing-scope":
            return " ".join(sorted(self.scopes))
        if reason == "missing-role":
            return " ".join(sorted(self.roles_any | self.roles_all))
        return ""
