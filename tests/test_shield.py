"""Shield composition and hostile environs: nothing a client sends may raise."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wsgishield import Shield, context
from wsgishield.middleware import ClientAddressMiddleware, RouteMiddleware

POLICY = {
    "client": {"trusted_proxies": ["loopback", "private"], "source": "x-forwarded-for"},
    "routes": [
        {"id": "health", "path": "/health", "methods": ["GET"]},
        {"id": "admin", "path": "/admin/**"},
    ],
}


def ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_layers_from_policy() -> None:
    shield = Shield(ok_app, POLICY)
    assert [type(layer) for layer in shield.layers] == [
        ClientAddressMiddleware,
        RouteMiddleware,
    ]


def test_route_layer_skipped_without_routes() -> None:
    shield = Shield(ok_app)
    assert [type(layer) for layer in shield.layers] == [ClientAddressMiddleware]


def test_layers_usable_alone() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        return ok_app(environ, start_response)

    stack = ClientAddressMiddleware(app, trusted_proxies=["10.0.0.0/8"])
    stack(
        {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "192.0.2.1"},
        lambda *a: None,
    )
    assert seen[context.CLIENT_IP] == "192.0.2.1"


header_values = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "1.2.3.4",
                "::1",
                "[::1]:80",
                "unknown",
                "",
                " ",
                '"',
                "10.0.0.1",
                "for=1.2.3.4",
                'for="[::1]"',
                "proto=https",
                ";",
                "=",
                "%",
            ]
        ),
        max_size=20,
    ).map(", ".join),
)


@settings(max_examples=400, deadline=None)
@given(
    peer=st.one_of(
        st.sampled_from(["127.0.0.1", "::1", "10.0.0.1", "", "unix:/x", "203.0.113.1"]),
        st.text(max_size=50),
    ),
    xff=header_values,
    forwarded=header_values,
    path=st.text(max_size=100),
    method=st.text(max_size=10),
    source=st.sampled_from(
        ["x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip"]
    ),
    hops=st.integers(min_value=0, max_value=3),
)
def test_hostile_environ_never_raises(
    peer: str, xff: str, forwarded: str, path: str, method: str, source: str, hops: int
) -> None:
    if source in ("x-real-ip", "cf-connecting-ip"):
        hops = 0
    policy = {**POLICY, "client": {**POLICY["client"], "source": source, "hops": hops}}
    shield = Shield(ok_app, policy)
    environ = {
        "REMOTE_ADDR": peer,
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "HTTP_X_FORWARDED_FOR": xff,
        "HTTP_FORWARDED": forwarded,
        "HTTP_X_REAL_IP": xff,
        "HTTP_CF_CONNECTING_IP": xff,
        "HTTP_X_FORWARDED_PROTO": forwarded,
    }
    body = b"".join(shield(environ, lambda *args: None))
    assert body == b"ok"
    assert environ[context.CLIENT_IP]
    assert environ[context.SCHEME] in ("http", "https")
