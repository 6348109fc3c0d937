"""The address parser kernel: both twins, one table, and agreement with ipaddress."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wsgishield
from tests.conftest import load_twin
from wsgishield import _fast

CASES = [
    # (id, text, expected canonical or None, version, zone)
    ("ipv4", "203.0.113.9", "203.0.113.9", 4, ""),
    ("ipv4-port", "192.0.2.7:51234", "192.0.2.7", 4, ""),
    ("ipv4-zero", "0.0.0.0", "0.0.0.0", 4, ""),
    ("ipv4-max", "255.255.255.255", "255.255.255.255", 4, ""),
    ("ipv6-bracket-port", "[2001:db8::1]:443", "2001:db8::1", 6, ""),
    ("ipv6-bracket", "[2001:db8::1]", "2001:db8::1", 6, ""),
    (
        "ipv6-bare-not-split",
        "2001:db8:85a3::8a2e:370:7334",
        "2001:db8:85a3::8a2e:370:7334",
        6,
        "",
    ),
    ("ipv6-full", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", 6, ""),
    ("ipv6-upper", "2001:DB8::ABCD", "2001:db8::abcd", 6, ""),
    ("ipv6-loopback", "::1", "::1", 6, ""),
    ("ipv6-unspecified", "::", "::", 6, ""),
    ("ipv6-trailing-gap", "1::", "1::", 6, ""),
    ("ipv6-gap-one-group", "1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", 6, ""),
    ("ipv6-longest-run", "2001:0:0:1:0:0:0:1", "2001:0:0:1::1", 6, ""),
    ("ipv6-first-run-on-tie", "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", 6, ""),
    ("ipv4-mapped", "::ffff:192.0.2.1", "192.0.2.1", 4, ""),
    ("ipv4-mapped-hex", "::ffff:c000:201", "192.0.2.1", 4, ""),
    ("ipv4-mapped-bracket-port", "[::ffff:192.0.2.1]:80", "192.0.2.1", 4, ""),
    ("ipv4-embedded-not-mapped", "64:ff9b::192.0.2.1", "64:ff9b::c000:201", 6, ""),
    ("zone-dropped", "fe80::1%eth0", "fe80::1", 6, "eth0"),
    ("zone-bracket-port", "[fe80::1%en0]:8080", "fe80::1", 6, "en0"),
    ("empty", "", None, 0, ""),
    ("unknown", "unknown", None, 0, ""),
    ("obfuscated", "_hidden", None, 0, ""),
    ("ipv4-leading-zero", "010.0.0.1", None, 0, ""),
    ("ipv4-octet-overflow", "256.1.1.1", None, 0, ""),
    ("ipv4-three-parts", "1.2.3", None, 0, ""),
    ("ipv4-five-parts", "1.2.3.4.5", None, 0, ""),
    ("ipv4-empty-part", "1..2.3", None, 0, ""),
    ("ipv4-bad-port", "1.2.3.4:99999", None, 0, ""),
    ("ipv4-empty-port", "1.2.3.4:", None, 0, ""),
    ("ipv4-in-brackets", "[1.2.3.4]", None, 0, ""),
    ("ipv6-triple-colon", "1:::2", None, 0, ""),
    ("ipv6-two-gaps", "1::2::3", None, 0, ""),
    ("ipv6-nine-groups", "1:2:3:4:5:6:7:8:9", None, 0, ""),
    ("ipv6-gap-with-eight", "1:2:3:4::5:6:7:8", None, 0, ""),
    ("ipv6-long-group", "12345::1", None, 0, ""),
    ("ipv6-leading-colon", ":1:2:3:4:5:6:7", None, 0, ""),
    ("ipv6-trailing-colon", "1:2:3:4:5:6:7:", None, 0, ""),
    ("ipv6-unclosed-bracket", "[2001:db8::1", None, 0, ""),
    ("ipv6-junk-after-bracket", "[2001:db8::1]x", None, 0, ""),
    ("ipv6-empty-zone", "fe80::1%", None, 0, ""),
    ("ipv6-zone-bad-char", "fe80::1%eth 0", None, 0, ""),
    ("whitespace", " 1.2.3.4", None, 0, ""),
    ("unicode-digits", "١.٢.٣.٤", None, 0, ""),  # noqa: RUF001
    ("template-injection", "${jndi:ldap://x/a}", None, 0, ""),
    ("too-long", "1" * 200, None, 0, ""),
]


@pytest.mark.parametrize(
    ("text", "canonical", "version", "zone"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_parse_address_table(
    kernel_mode: str, text: str, canonical: str | None, version: int, zone: str
) -> None:
    kernel = load_twin("address", kernel_mode)
    parsed = kernel.parse_address(text)
    if canonical is None:
        assert parsed is None
        return
    assert parsed is not None
    assert parsed[0] == canonical
    assert parsed[1] == version
    assert parsed[2] == int(ipaddress.ip_address(canonical))
    assert parsed[3] == zone


def test_parse_address_rejects_non_str(kernel_mode: str) -> None:
    kernel = load_twin("address", kernel_mode)
    with pytest.raises((TypeError, AttributeError)):
        kernel.parse_address(None)


def _reference(text: str) -> tuple[str, int, int] | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return str(address), address.version, int(address)


ipv4_texts = st.builds(str, st.ip_addresses(v=4))
ipv6_texts = st.ip_addresses(v=6).flatmap(
    lambda address: st.sampled_from(
        [address.compressed, address.exploded, address.exploded.upper()]
    )
)
junk_texts = st.text(alphabet="0123456789abcdefABCDEF:.[]%", max_size=48)


@settings(max_examples=600, deadline=None)
@given(st.one_of(ipv4_texts, ipv6_texts, junk_texts))
def test_twins_agree_with_ipaddress(text: str) -> None:
    compiled = (
        None
        if _fast.NO_EXTENSIONS
        else load_twin("address", "compiled").parse_address(text)
    )
    python = load_twin("address", "python").parse_address(text)
    expected = _reference(text)

    if expected is not None:
        assert python is not None
        assert python[:3] == expected
    if not _fast.NO_EXTENSIONS:
        assert compiled == python


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_format_ipv6_matches_ipaddress(value: int) -> None:
    expected = ipaddress.IPv6Address(value).compressed
    assert load_twin("address", "python").format_address(6, value) == expected
    if not _fast.NO_EXTENSIONS:
        assert load_twin("address", "compiled").format_address(6, value) == expected


def test_compiled_kernels_loaded() -> None:
    """A normal build must use the compiled kernels, never fall back silently."""
    if os.environ.get("WSGISHIELD_NO_EXTENSIONS", "") not in ("", "0"):
        assert wsgishield.HAS_EXTENSIONS is False
        pytest.skip("pure-Python build selected on purpose")
    assert wsgishield.HAS_EXTENSIONS is True
    for name in _fast.KERNELS:
        assert _fast.load_kernel(name).COMPILED is True, name


@pytest.mark.parametrize(
    ("version", "value"),
    [(4, 1 << 32), (4, -1), (6, 1 << 128), (5, 1)],
    ids=["ipv4-too-big", "negative", "ipv6-too-big", "bad-version"],
)
def test_format_address_rejects_out_of_range(
    kernel_mode: str, version: int, value: int
) -> None:
    kernel = load_twin("address", kernel_mode)
    with pytest.raises(ValueError):
        kernel.format_address(version, value)


def test_str_subclass_parses_like_str(kernel_mode: str) -> None:
    class Text(str):
        pass

    kernel = load_twin("address", kernel_mode)
    assert kernel.parse_address(Text("[2001:db8::1]:80")) == kernel.parse_address(
        "[2001:db8::1]:80"
    )
