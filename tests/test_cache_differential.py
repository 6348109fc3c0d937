"""Random traffic against the cache: no response may reach the wrong client.

Each view puts into its body exactly the request values it read. A response
is correct when every value in its body equals the value in the request
that received it, whatever the cache served.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tests.cache_helpers import CountingApp, FakeClock, build, close_store, make_store
from tests.support.wsgi import call
from wsgishield import context

REQUESTS = 10_000
SUBJECTS = ["alice", "bob", "carol", "dave", None]
COOKIES = ["session=a", "session=b", None]
TENANTS = ["t1", "t2", "t3", None]
LANGUAGES = ["en", "fr", None]


def _view(reads: list[str], vary: str = "") -> Any:
    def view(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        body: dict[str, Any] = {}
        for name in reads:
            if name == "subject":
                identity = environ.get(context.IDENTITY)
                body[name] = identity.subject if identity else None
            else:
                body[name] = environ.get(name)
        headers = [("Content-Type", "application/json")]
        if vary:
            headers.append(("Vary", vary))
        return "200 OK", headers, json.dumps(body).encode()

    return view


VIEWS = {
    "/public": _view([]),
    "/me": _view(["subject", "HTTP_AUTHORIZATION"]),
    "/me/lang": _view(["subject", "HTTP_ACCEPT_LANGUAGE"], vary="Accept-Language"),
    "/tenant": _view(["HTTP_X_TENANT"], vary="X-Tenant"),
    "/session": _view(["HTTP_COOKIE"]),
    "/sneaky": _view(["HTTP_COOKIE", "HTTP_AUTHORIZATION"]),
    "/sneaky/lang": _view(["HTTP_ACCEPT_LANGUAGE"]),
    "/sneaky/tenant": _view(["HTTP_X_TENANT"]),
}

RULES = {
    "/public": {"ttl": 30, "public": True},
    "/me/lang": {"ttl": 30, "per_identity": True},
    "/me": {"ttl": 30, "per_identity": True},
    "/tenant": {"ttl": 30},
    "/session": {"ttl": 30},
    "/sneaky/tenant": {"ttl": 30, "public": True},
    "/sneaky/lang": {"ttl": 30, "public": True},
    "/sneaky": {"ttl": 30, "public": True},
}


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)]
)
def test_no_response_reaches_other_client(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server = (
        request.getfixturevalue("shared_redis_server") if backend == "redis" else None
    )
    clock = FakeClock()
    app = CountingApp(VIEWS)
    store = make_store(backend, server, clock)
    request.addfinalizer(lambda: close_store(store))
    cache = build(app, RULES, store, clock)
    rng = random.Random(20261204)
    hits = 0

    for number in range(REQUESTS):
        if number % 200 == 0:
            clock.advance(rng.uniform(0, 12))
        path = rng.choice(list(VIEWS))
        method = rng.choices(["GET", "HEAD", "POST"], weights=[85, 10, 5])[0]
        subject = rng.choice(SUBJECTS)
        cookie = rng.choice(COOKIES)
        tenant = rng.choice(TENANTS)
        language = rng.choice(LANGUAGES)
        headers = {}
        if subject is not None:
            headers["Authorization"] = f"Bearer {subject}"
        if cookie is not None:
            headers["Cookie"] = cookie
        if tenant is not None:
            headers["X-Tenant"] = tenant
        if language is not None:
            headers["Accept-Language"] = language
        sent = {
            "subject": subject,
            "HTTP_AUTHORIZATION": headers.get("Authorization"),
            "HTTP_COOKIE": cookie,
            "HTTP_X_TENANT": tenant,
            "HTTP_ACCEPT_LANGUAGE": language,
        }

        if RULES[path].get("public") and method != "POST":
            # Public routes are declared not to depend on credentials, so
            # the cache removes them from the app's environ.
            sent["HTTP_AUTHORIZATION"] = sent["HTTP_COOKIE"] = None

        response = call(cache, path, method=method, headers=headers, subject=subject)

        assert response.status_code == 200, (number, path, response)
        if "; hit" in (response.header("Cache-Status") or ""):
            hits += 1
        if method == "HEAD":
            # The test app, unlike a framework, sends a body for HEAD when
            # the cache forwards the request as it is.
            continue
        served = json.loads(response.body)
        for name, value in served.items():
            assert value == sent[name], (number, method, path, name, value, sent)

    # The cache must have served a real share, or the test proves nothing.
    assert hits > REQUESTS // 4
    assert app.count("/sneaky") > 0
