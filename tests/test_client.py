"""Client address resolution: one table per source, with readable ids."""

from __future__ import annotations

from typing import Any

import pytest

from wsgishield import ClientAddressResolver, ConfigurationError, Shield, context

TRUSTED = ["10.0.0.0/8"]


def environ(peer: str, **headers: str) -> dict[str, Any]:
    result: dict[str, Any] = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http"}
    for name, value in headers.items():
        result["HTTP_" + name.upper()] = value
    return result


XFF_CASES = [
    # (id, peer, X-Forwarded-For, expected ip, expected reason)
    ("proxy-appends-client", "10.0.0.5", "1.2.3.4, 203.0.113.9", "203.0.113.9", None),
    (
        "prepended-address-ignored",
        "10.0.0.2",
        "198.51.100.7, 203.0.113.50",
        "203.0.113.50",
        None,
    ),
    (
        "skips-trusted-hops",
        "10.0.0.2",
        "198.51.100.7, 203.0.113.50, 10.1.1.1, 10.2.2.2",
        "203.0.113.50",
        None,
    ),
    ("bracketed-ipv6-with-port", "10.0.0.1", "[2001:db8::1]:443", "2001:db8::1", None),
    ("ipv4-with-port", "10.0.0.1", "192.0.2.7:51234", "192.0.2.7", None),
    (
        "bare-ipv6-stays-whole",
        "10.0.0.1",
        "2001:db8:85a3::8a2e:370:7334",
        "2001:db8:85a3::8a2e:370:7334",
        None,
    ),
    ("mapped-ipv6-becomes-ipv4", "10.0.0.1", "::ffff:203.0.113.9", "203.0.113.9", None),
    ("unknown-then-address", "10.0.0.1", "unknown, 203.0.113.9", "203.0.113.9", None),
    ("unknown-alone", "10.0.0.1", "unknown", "10.0.0.1", "invalid"),
    ("comma-alone", "10.0.0.1", ",", "10.0.0.1", "missing"),
    ("spaced-comma", "10.0.0.1", " , ", "10.0.0.1", "missing"),
    ("whitespace-only", "10.0.0.1", "   ", "10.0.0.1", "missing"),
    (
        "template-injection",
        "10.0.0.1",
        "${jndi:ldap://attacker/a}",
        "10.0.0.1",
        "invalid",
    ),
    ("huge-header", "10.0.0.1", "1.2.3.4," * 8192, "10.0.0.1", "invalid"),
    ("empty-elements-ignored", "10.0.0.1", "203.0.113.9,,", "203.0.113.9", None),
    ("all-hops-trusted", "10.0.0.1", "10.9.9.9, 10.8.8.8", "10.9.9.9", None),
    ("garbage-left-of-trusted", "10.0.0.1", "garbage, 10.7.7.7", "10.7.7.7", None),
    ("zone-dropped-from-key", "10.0.0.1", "fe80::1%eth0", "fe80::1", None),
]


@pytest.mark.parametrize(
    ("peer", "header", "expected", "reason"),
    [case[1:] for case in XFF_CASES],
    ids=[case[0] for case in XFF_CASES],
)
def test_forwarded_for_rightmost(
    peer: str, header: str, expected: str, reason: str | None
) -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED)
    client, _ = resolver.resolve(environ(peer, X_FORWARDED_FOR=header))
    assert client.ip == expected
    assert client.reason == reason
    assert client.peer == peer


def test_missing_header_falls_back_to_peer() -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED)
    client, _ = resolver.resolve(environ("10.0.0.5"))
    assert client.ip == "10.0.0.5"
    assert client.reason == "missing"
    assert client.source == "peer"


def test_untrusted_peer_ignores_every_header() -> None:
    for source in ("x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip"):
        resolver = ClientAddressResolver(
            trusted_proxies=[*TRUSTED, "cloudflare"], source=source
        )
        client, scheme = resolver.resolve(
            environ(
                "203.0.113.66",
                X_FORWARDED_FOR="127.0.0.1",
                X_REAL_IP="127.0.0.1",
                CF_CONNECTING_IP="1.1.1.1",
                FORWARDED="for=127.0.0.1;proto=https",
                X_FORWARDED_PROTO="https",
            )
        )
        assert client.ip == "203.0.113.66", source
        assert client.source == "peer", source
        assert client.reason is None, source
        assert scheme == "http", source


def test_default_trusts_no_proxy() -> None:
    resolver = ClientAddressResolver()
    client, _ = resolver.resolve(environ("127.0.0.1", X_FORWARDED_FOR="198.51.100.1"))
    assert client.ip == "127.0.0.1"


HOPS_CASES = [
    # (id, hops, header, expected ip, reason)
    ("garbage-in-client-part", 1, '", 203.0.113.9', "203.0.113.9", None),
    ("one-hop", 1, "198.51.100.7, 203.0.113.9", "203.0.113.9", None),
    ("two-hops", 2, "198.51.100.7, 203.0.113.9, 192.0.2.1", "203.0.113.9", None),
    ("short-chain", 3, "203.0.113.9, 192.0.2.1", "10.0.0.5", "short-chain"),
    ("counted-entry-invalid", 1, "203.0.113.9, bogus", "10.0.0.5", "invalid"),
    ("empty", 1, " , ", "10.0.0.5", "missing"),
]


@pytest.mark.parametrize(
    ("hops", "header", "expected", "reason"),
    [case[1:] for case in HOPS_CASES],
    ids=[case[0] for case in HOPS_CASES],
)
def test_forwarded_for_hop_count(
    hops: int, header: str, expected: str, reason: str | None
) -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED, hops=hops)
    client, _ = resolver.resolve(environ("10.0.0.5", X_FORWARDED_FOR=header))
    assert client.ip == expected
    assert client.reason == reason


FORWARDED_CASES = [
    # (id, Forwarded, expected ip, reason, scheme)
    (
        "rfc-example",
        "for=192.0.2.60;proto=http;by=203.0.113.43",
        "192.0.2.60",
        None,
        "http",
    ),
    (
        "quoted-ipv6-port",
        'for="[2001:db8:cafe::17]:4711"',
        "2001:db8:cafe::17",
        None,
        "http",
    ),
    ("proto-https", "for=192.0.2.43;proto=https", "192.0.2.43", None, "https"),
    (
        "case-insensitive-name",
        "For=192.0.2.43;PROTO=https",
        "192.0.2.43",
        None,
        "https",
    ),
    (
        "rightmost-untrusted",
        "for=198.51.100.7, for=203.0.113.9, for=10.0.0.9",
        "203.0.113.9",
        None,
        "http",
    ),
    ("unknown-node", "for=unknown", "10.0.0.5", "invalid", "http"),
    ("obfuscated-node", "for=_hidden, for=10.0.0.3", "10.0.0.3", None, "http"),
    ("element-without-for", "proto=https;by=10.0.0.1", "10.0.0.5", "missing", "http"),
    (
        "quoted-comma",
        'for="198.51.100.1, evil";proto=https, for=203.0.113.9',
        "203.0.113.9",
        None,
        "http",
    ),
    ("unterminated-quote", 'for="203.0.113.9', "10.0.0.5", "invalid", "http"),
    ("bad-proto-ignored", "for=203.0.113.9;proto=gopher", "203.0.113.9", None, "http"),
]


@pytest.mark.parametrize(
    ("header", "expected", "reason", "scheme"),
    [case[1:] for case in FORWARDED_CASES],
    ids=[case[0] for case in FORWARDED_CASES],
)
def test_forwarded_header(
    header: str, expected: str, reason: str | None, scheme: str
) -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED, source="forwarded")
    client, resolved_scheme = resolver.resolve(environ("10.0.0.5", FORWARDED=header))
    assert client.ip == expected
    assert client.reason == reason
    assert resolved_scheme == scheme


def test_forwarded_hop_count_takes_proto_of_counted_element() -> None:
    resolver = ClientAddressResolver(
        trusted_proxies=TRUSTED, source="forwarded", hops=1
    )
    client, scheme = resolver.resolve(
        environ(
            "10.0.0.5",
            FORWARDED="for=198.51.100.1;proto=http, for=203.0.113.9;proto=https",
        )
    )
    assert client.ip == "203.0.113.9"
    assert scheme == "https"


SINGLE_CASES = [
    ("valid", "203.0.113.9", "203.0.113.9", None),
    ("with-spaces", "  203.0.113.9 ", "203.0.113.9", None),
    ("list-is-invalid", "203.0.113.9, 198.51.100.1", "10.0.0.5", "invalid"),
    ("garbage", "<script>", "10.0.0.5", "invalid"),
]


@pytest.mark.parametrize(
    ("header", "expected", "reason"),
    [case[1:] for case in SINGLE_CASES],
    ids=[case[0] for case in SINGLE_CASES],
)
def test_x_real_ip(header: str, expected: str, reason: str | None) -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED, source="x-real-ip")
    client, _ = resolver.resolve(environ("10.0.0.5", X_REAL_IP=header))
    assert client.ip == expected
    assert client.reason == reason


def test_cf_connecting_ip_only_from_cloudflare_peer() -> None:
    resolver = ClientAddressResolver(
        trusted_proxies=["cloudflare", "10.0.0.0/8"], source="cf-connecting-ip"
    )
    from_cloudflare, _ = resolver.resolve(
        environ("173.245.48.10", CF_CONNECTING_IP="203.0.113.9")
    )
    from_private, _ = resolver.resolve(
        environ("10.0.0.5", CF_CONNECTING_IP="203.0.113.9")
    )
    from_cloudflare_v6, _ = resolver.resolve(
        environ("2606:4700::1", CF_CONNECTING_IP="2001:db8::5")
    )
    assert from_cloudflare.ip == "203.0.113.9"
    assert from_private.ip == "10.0.0.5"
    assert from_private.reason == "invalid"
    assert from_cloudflare_v6.ip == "2001:db8::5"


SCHEME_CASES = [
    ("trusted-https", "10.0.0.5", "https", "https"),
    ("trusted-last-value-wins", "10.0.0.5", "http, https", "https"),
    ("trusted-garbage-ignored", "10.0.0.5", "javascript", "http"),
    ("untrusted-ignored", "203.0.113.66", "https", "http"),
]


@pytest.mark.parametrize(
    ("peer", "proto", "expected"),
    [case[1:] for case in SCHEME_CASES],
    ids=[case[0] for case in SCHEME_CASES],
)
def test_forwarded_proto(peer: str, proto: str, expected: str) -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED)
    _, scheme = resolver.resolve(
        environ(peer, X_FORWARDED_FOR="203.0.113.9", X_FORWARDED_PROTO=proto)
    )
    assert scheme == expected


def test_unix_socket_peer_is_loopback() -> None:
    resolver = ClientAddressResolver(trusted_proxies=["loopback"])
    client, _ = resolver.resolve(environ("", X_FORWARDED_FOR="203.0.113.9"))
    assert client.ip == "203.0.113.9"
    assert client.peer == "127.0.0.1"


def test_ipv6_peer_trusted_by_preset() -> None:
    resolver = ClientAddressResolver(trusted_proxies=["loopback"])
    client, _ = resolver.resolve(environ("::1", X_FORWARDED_FOR="2001:db8::7"))
    assert client.ip == "2001:db8::7"
    assert client.peer == "::1"


def test_mapped_peer_matches_ipv4_proxy() -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED)
    client, _ = resolver.resolve(
        environ("::ffff:10.0.0.5", X_FORWARDED_FOR="203.0.113.9")
    )
    assert client.ip == "203.0.113.9"
    assert client.peer == "10.0.0.5"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"trusted_proxies": ["10.0.0.1/8"]}, "client.trusted_proxies[0]"),
        ({"trusted_proxies": ["not-a-network"]}, "client.trusted_proxies[0]"),
        ({"source": "x-evil"}, "client.source"),
        ({"hops": 40}, "client.hops"),
        ({"source": "x-real-ip", "hops": 1}, "client.hops"),
        ({"cloudflare_ranges": "/nonexistent/ranges.txt"}, "client.cloudflare_ranges"),
    ],
    ids=[
        "host-bits",
        "not-a-network",
        "source",
        "hops-range",
        "hops-single",
        "ranges-file",
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ClientAddressResolver(**options)
    assert raised.value.key == key


def test_middleware_sets_environ_keys() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    shield = Shield(
        app, {"client": {"trusted_proxies": TRUSTED, "set_remote_addr": True}}
    )
    shield(
        environ("10.0.0.5", X_FORWARDED_FOR="203.0.113.9", X_FORWARDED_PROTO="https"),
        lambda *args: None,
    )
    assert seen[context.CLIENT_IP] == "203.0.113.9"
    assert seen[context.CLIENT].peer == "10.0.0.5"
    assert seen[context.SCHEME] == "https"
    assert seen["REMOTE_ADDR"] == "203.0.113.9"
    assert seen["wsgi.url_scheme"] == "https"


def test_memo_bounded_and_skips_long_headers() -> None:
    from wsgishield.client import MAX_MEMOISED_HEADER, MEMO_SIZE

    resolver = ClientAddressResolver(trusted_proxies=TRUSTED)
    for number in range(MEMO_SIZE + 500):
        resolver.resolve(
            environ(
                "10.0.0.5", X_FORWARDED_FOR=f"198.51.{number // 256}.{number % 256}"
            )
        )
    assert len(resolver._memo) <= MEMO_SIZE

    resolver._memo.clear()
    long_header = ", ".join(["203.0.113.9"] * (MAX_MEMOISED_HEADER // 10))
    client, _ = resolver.resolve(environ("10.0.0.5", X_FORWARDED_FOR=long_header))
    assert client.ip == "203.0.113.9"
    assert resolver._memo == {}


def test_memo_keeps_answers_apart() -> None:
    resolver = ClientAddressResolver(trusted_proxies=TRUSTED)
    first, _ = resolver.resolve(environ("10.0.0.5", X_FORWARDED_FOR="203.0.113.9"))
    spoofed, _ = resolver.resolve(
        environ("203.0.113.66", X_FORWARDED_FOR="203.0.113.9")
    )
    again, _ = resolver.resolve(environ("10.0.0.5", X_FORWARDED_FOR="203.0.113.9"))
    assert first.ip == "203.0.113.9"
    assert spoofed.ip == "203.0.113.66"
    assert again is first


def test_memo_without_trusted_proxies_keys_peer_and_scheme() -> None:
    resolver = ClientAddressResolver()
    plain = environ("203.0.113.66", X_FORWARDED_FOR="198.51.100.1")
    secure = {**plain, "wsgi.url_scheme": "https", "HTTP_X_FORWARDED_PROTO": "http"}
    other_header = environ(
        "203.0.113.66", X_FORWARDED_FOR="192.0.2.7", X_FORWARDED_PROTO="https"
    )

    first, first_scheme = resolver.resolve(plain)
    second, second_scheme = resolver.resolve(secure)
    third, third_scheme = resolver.resolve(other_header)

    assert (first.ip, first_scheme) == ("203.0.113.66", "http")
    assert (second.ip, second_scheme) == ("203.0.113.66", "https")
    assert third is first
    assert third_scheme == "http"
    assert len(resolver._memo) == 2


@pytest.mark.parametrize("hops", [0, 1], ids=["rightmost", "count"])
def test_forwarded_client_quote_cannot_void_header(hops: int) -> None:
    resolver = ClientAddressResolver(
        trusted_proxies=TRUSTED, source="forwarded", hops=hops
    )
    client, scheme = resolver.resolve(
        environ("10.0.0.2", FORWARDED='for="x, for=203.0.113.9;proto=https')
    )
    assert client.ip == "203.0.113.9"
    assert client.reason is None
    assert scheme == "https"


@pytest.mark.parametrize(
    ("peer", "expected_peer"),
    [
        ("", "127.0.0.1"),
        ("unix:/run/gunicorn.sock", "127.0.0.1"),
        ("garbage", "0.0.0.0"),
        ("010.0.0.1", "0.0.0.0"),
        ("203.0.113.9 ", "0.0.0.0"),
    ],
    ids=[
        "empty-is-unix-socket",
        "unix-prefix",
        "garbage",
        "leading-zero",
        "trailing-space",
    ],
)
def test_unparsable_peer_trust(peer: str, expected_peer: str) -> None:
    resolver = ClientAddressResolver(trusted_proxies=["loopback"])
    client, _ = resolver.resolve(environ(peer, X_FORWARDED_FOR="203.0.113.9"))
    assert client.peer == expected_peer
    if expected_peer == "0.0.0.0":
        assert client.ip == "0.0.0.0"
        assert client.source == "peer"
    else:
        assert client.ip == "203.0.113.9"


def test_str_subclass_peer_resolves() -> None:
    class Text(str):
        pass

    resolver = ClientAddressResolver(trusted_proxies=["loopback"])
    client, _ = resolver.resolve(
        environ(Text("127.0.0.1"), X_FORWARDED_FOR=Text("203.0.113.9"))
    )
    assert client.ip == "203.0.113.9"


@pytest.mark.parametrize(
    ("entries", "key"),
    [
        (["0.0.0.0/0"], "client.trusted_proxies[0]"),
        (["loopback", "::/0"], "client.trusted_proxies[1]"),
        (["loopback", ""], "client.trusted_proxies[1]"),
    ],
    ids=["ipv4-everything", "ipv6-everything", "empty-entry"],
)
def test_trusted_entry_errors_name_index(entries: list[str], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ClientAddressResolver(trusted_proxies=entries)
    assert raised.value.key == key


def test_broad_cloudflare_ranges_file_rejected(tmp_path: Any) -> None:
    ranges = tmp_path / "cloudflare.txt"
    ranges.write_text("173.245.48.0/20\n0.0.0.0/0\n")
    with pytest.raises(ConfigurationError) as raised:
        ClientAddressResolver(
            trusted_proxies=["cloudflare"],
            source="cf-connecting-ip",
            cloudflare_ranges=str(ranges),
        )
    assert raised.value.key == "client.cloudflare_ranges"
    assert raised.value.value == "0.0.0.0/0"
