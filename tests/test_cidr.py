"""Longest-prefix matcher kernel: both twins, against an ``ipaddress`` reference."""

from __future__ import annotations

import ipaddress
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_twin
from wsgishield import _fast
from wsgishield._fast import cidr

NO_MATCH = -1


@pytest.fixture
def kernel(kernel_mode: str) -> ModuleType:
    return load_twin("cidr", kernel_mode)


def build(kernel: ModuleType, *texts: str):  # type: ignore[no-untyped-def]
    networks = [(*kernel.parse_network(text), rule) for rule, text in enumerate(texts)]
    return kernel.PrefixTable(networks)


def test_compiled_kernel_loaded() -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    assert cidr.PrefixTable is load_twin("cidr", "compiled").PrefixTable


LOOKUPS = [
    # (networks, address, expected rule index)
    (["10.0.0.0/8", "10.1.0.0/16"], "10.1.2.3", 1),
    (["10.0.0.0/8", "10.1.0.0/16"], "10.2.0.0", 0),
    (["10.0.0.0/8", "10.1.0.0/16"], "11.0.0.0", NO_MATCH),
    (["10.0.0.0/8", "10.1.0.0/16"], "9.255.255.255", NO_MATCH),
    (["10.1.0.0/16", "10.0.0.0/8"], "10.1.255.255", 0),
    (["0.0.0.0/0"], "255.255.255.255", 0),
    (["0.0.0.0/0"], "0.0.0.0", 0),
    (["0.0.0.0/0"], "::1", NO_MATCH),
    (["::/0"], "::1", 0),
    (["::/0"], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0),
    (["::/0"], "192.0.2.1", NO_MATCH),
    (["192.0.2.7/32"], "192.0.2.7", 0),
    (["192.0.2.7/32"], "192.0.2.6", NO_MATCH),
    (["192.0.2.7/32"], "192.0.2.8", NO_MATCH),
    (["192.0.2.7"], "192.0.2.7", 0),
    (["2001:db8::1/128"], "2001:db8::1", 0),
    (["2001:db8::1/128"], "2001:db8::2", NO_MATCH),
    (["2001:db8::/32", "2001:db8:1::/48"], "2001:db8:1:2::3", 1),
    (["2001:db8::/32", "2001:db8:1::/48"], "2001:db8:2::", 0),
    (["192.0.2.0/24"], "::ffff:192.0.2.9", 0),
    (["::ffff:192.0.2.0/120"], "192.0.2.9", 0),
    (["::ffff:0:0/96"], "8.8.8.8", 0),
    (["10.0.0.0/8", "10.0.0.0/8"], "10.0.0.1", 0),
    (["255.255.255.255/32", "255.0.0.0/8"], "255.255.255.255", 0),
    (["255.255.255.255/32", "255.0.0.0/8"], "255.255.255.254", 1),
    (["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/0"], "::", 1),
]


@pytest.mark.parametrize(
    ("networks", "address", "expected"),
    LOOKUPS,
    ids=[f"{address}-in-{'+'.join(networks)}" for networks, address, _ in LOOKUPS],
)
def test_lookup_table(
    kernel: ModuleType, networks: list[str], address: str, expected: int
) -> None:
    table = build(kernel, *networks)
    assert table.lookup_text(address) == expected
    version, value = kernel.parse_host(address)
    assert table.lookup(version, value) == expected


def test_empty_table(kernel: ModuleType) -> None:
    table = kernel.PrefixTable([])
    assert len(table) == 0
    assert table.lookup(4, 0) == NO_MATCH
    assert table.lookup(6, 2**128 - 1) == NO_MATCH


def test_length_counts_distinct_prefixes(kernel: ModuleType) -> None:
    table = build(kernel, "10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/9", "::/0")
    assert len(table) == 3


def test_large_range_is_one_interval(kernel: ModuleType) -> None:
    table = build(kernel, "0.0.0.0/0", "::/0")
    assert table.intervals == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0.1/8",
        "1.2.3.4/33",
        "::/129",
        "1.2.3.4/",
        "1.2.3.4/-1",
        "1.2.3.4/1000",
        "1.2.3.4:80",
        "[::1]",
        "fe80::1%eth0",
        "01.2.3.4/32",
        "10.0.0.0 /8",
        "garbage",
        "1.2.3.4/8/8",
        "::ffff:1.2.3.4/97",
        "x" * 500,
    ],
)
def test_parse_network_rejects(kernel: ModuleType, text: str) -> None:
    with pytest.raises(ValueError):
        kernel.parse_network(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3.4:80",
        "[::1]",
        "fe80::1%eth0",
        "1.2.3",
        "::1::",
        "x" * 500,
        "1.2.3.4\u00e9",
        "\u0661.2.3.4",
    ],
)
def test_lookup_text_rejects(kernel: ModuleType, text: str) -> None:
    table = build(kernel, "0.0.0.0/0")
    with pytest.raises(ValueError):
        table.lookup_text(text)


@pytest.mark.parametrize(
    ("version", "value"),
    [(4, -1), (4, 2**32), (6, -1), (6, 2**128), (5, 0), (0, 0)],
)
def test_lookup_rejects_out_of_range(
    kernel: ModuleType, version: int, value: int
) -> None:
    table = build(kernel, "0.0.0.0/0")
    with pytest.raises(ValueError):
        table.lookup(version, value)


@pytest.mark.parametrize(
    "network",
    [
        (5, 0, 0, 0),
        (4, 0, 33, 0),
        (4, 0, -1, 0),
        (4, 1, 31, 0),
        (4, 2**32, 32, 0),
        (6, 2**128, 128, 0),
        (4, 0, 0, -1),
        (4, 0, 0, 2**31),
    ],
)
def test_table_rejects_bad_network(
    kernel: ModuleType, network: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        kernel.PrefixTable([network])


# --- Differential tests against a reference built on ipaddress ------------


def reference_lookup(networks: list[ipaddress._BaseNetwork], address: str) -> int:
    """Scan every network; the longest prefix wins, then the first listed."""
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    best, best_length = NO_MATCH, -1
    for rule, network in enumerate(networks):
        if network.version != parsed.version or parsed not in network:
            continue
        if network.prefixlen > best_length:
            best, best_length = rule, network.prefixlen
    return best


def reference_network(text: str) -> ipaddress._BaseNetwork:
    network = ipaddress.ip_network(text)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


# A few fixed bases make nesting and shared prefixes common in random sets.
IPV4_BASES = [0, 0x0A000000, 0xC0000200, 0xFFFFFFFF]
IPV6_BASES = [0, 0x20010DB8 << 96, (2**128) - 1, 0xFFFF << 32]


@st.composite
def prefixes(draw: st.DrawFn) -> str:
    version = draw(st.sampled_from([4, 6, 6]))
    bits = 32 if version == 4 else 128
    bases = IPV4_BASES if version == 4 else IPV6_BASES
    value = draw(st.one_of(st.integers(0, 2**bits - 1), st.sampled_from(bases)))
    length = draw(
        st.one_of(
            st.integers(0, bits),
            st.sampled_from([0, bits, bits // 2, 8, 16, 24, 64, 96]),
        )
    )
    length = min(length, bits)
    value &= ~((1 << (bits - length)) - 1)
    if version == 4:
        return f"{ipaddress.IPv4Address(value)}/{length}"
    if draw(st.booleans()) and length == bits:
        return str(ipaddress.IPv6Address(value))
    return f"{ipaddress.IPv6Address(value)}/{length}"


def probe_addresses(
    data: st.DataObject, networks: list[ipaddress._BaseNetwork]
) -> list[str]:
    """Random addresses plus the edges of each network and their neighbours."""
    addresses = data.draw(
        st.lists(
            st.one_of(
                st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
                st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))),
                st.integers(0, 2**32 - 1).map(
                    lambda v: str(ipaddress.IPv6Address((0xFFFF << 32) | v))
                ),
            ),
            max_size=20,
        )
    )
    for network in networks:
        top = 2**network.max_prefixlen - 1
        first = int(network.network_address)
        last = int(network.broadcast_address)
        for value in (first - 1, first, last, last + 1):
            if 0 <= value <= top:
                addresses.append(
                    str(
                        ipaddress.ip_address(value)
                        if network.version == 4
                        else ipaddress.IPv6Address(value)
                    )
                )
                if network.version == 4:
                    addresses.append(f"::ffff:{ipaddress.IPv4Address(value)}")
    return addresses


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(prefixes(), max_size=40), data=st.data())
def test_twins_agree_with_reference(texts: list[str], data: st.DataObject) -> None:
    compiled = None if _fast.NO_EXTENSIONS else load_twin("cidr", "compiled")
    twin = load_twin("cidr", "python")
    networks = [reference_network(text) for text in texts]

    tables = []
    for kernel in (compiled, twin):
        if kernel is None:
            continue
        parsed = [kernel.parse_network(text) for text in texts]
        for network, (version, first, length) in zip(networks, parsed, strict=True):
            assert (version, first, length) == (
                network.version,
                int(network.network_address),
                network.prefixlen,
            )
        tables.append(
            (
                kernel,
                kernel.PrefixTable(
                    [(*entry, rule) for rule, entry in enumerate(parsed)]
                ),
            )
        )

    for address in probe_addresses(data, networks):
        expected = reference_lookup(networks, address)
        for kernel, table in tables:
            assert table.lookup_text(address) == expected, (kernel.__name__, address)
            version, value = kernel.parse_host(address)
            assert table.lookup(version, value) == expected, (kernel.__name__, address)


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet="0123456789abcdefABCDEF:./%[]x /é", max_size=50),
        prefixes(),
    )
)
def test_twins_parse_alike(text: str) -> None:
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    compiled = load_twin("cidr", "compiled")
    twin = load_twin("cidr", "python")
    for function in ("parse_network", "parse_host"):
        results = []
        for kernel in (compiled, twin):
            try:
                results.append(getattr(kernel, function)(text))
            except ValueError:
                results.append("ValueError")
        assert results[0] == results[1], (function, text)


def test_many_prefixes_agree(kernel: ModuleType) -> None:
    """A table of 3,000 random prefixes, checked at the edges of 300 of them."""
    import random

    generator = random.Random(7)
    texts = []
    for _ in range(3000):
        if generator.random() < 0.5:
            length = generator.randint(8, 32)
            value = generator.getrandbits(32) & ~((1 << (32 - length)) - 1)
            texts.append(f"{ipaddress.IPv4Address(value)}/{length}")
        else:
            length = generator.randint(16, 128)
            value = generator.getrandbits(128) & ~((1 << (128 - length)) - 1)
            texts.append(f"{ipaddress.IPv6Address(value)}/{length}")
    networks = [reference_network(text) for text in texts]
    table = build(kernel, *texts)
    for network in networks[:300]:
        for value in (int(network.network_address), int(network.broadcast_address)):
            address = str(
                ipaddress.ip_address(value)
                if network.version == 4
                else ipaddress.IPv6Address(value)
            )
            assert table.lookup_text(address) == reference_lookup(networks, address)


CLUSTERS = {
    "ipv4-anywhere": (4, 0, 0),
    "ipv4-in-10/8": (4, 0x0A000000, 8),
    "ipv4-in-one-/22": (4, 0xC0000000, 22),
    "ipv6-anywhere": (6, 0, 0),
    "ipv6-in-2001:db8::/32": (6, 0x20010DB8 << 96, 32),
    "ipv6-in-one-/120": (6, 0x20010DB8 << 96, 120),
}


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_bucket_index_matches_twin(cluster: str) -> None:
    """Large tables get a bucket index in the compiled kernel; the twin has none."""
    if _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    import random

    compiled = load_twin("cidr", "compiled")
    twin = load_twin("cidr", "python")
    version, base, base_length = CLUSTERS[cluster]
    bits = 32 if version == 4 else 128
    generator = random.Random(cluster)
    networks = []
    for rule in range(3000):
        length = generator.randint(base_length, bits)
        value = base | generator.getrandbits(bits - base_length)
        value &= ~((1 << (bits - length)) - 1)
        networks.append((version, value, length, rule))
    fast = compiled.PrefixTable(networks)
    slow = twin.PrefixTable(networks)
    assert fast.intervals == slow.intervals

    starts = slow._starts4 if version == 4 else slow._starts6
    probes = {0, 2**bits - 1}
    for start in starts:
        probes.update({start - 1, start, start + 1})
    for _ in range(2000):
        probes.add(base | generator.getrandbits(bits - base_length))
    for value in sorted(probe for probe in probes if 0 <= probe < 2**bits):
        assert fast.lookup(version, value) == slow.lookup(version, value), hex(value)


class TextSubclass(str):
    pass


def test_str_subclass_parses_like_text(kernel: ModuleType) -> None:
    table = build(kernel, "10.0.0.0/8")
    assert table.lookup_text(TextSubclass("10.1.2.3")) == 0
    assert kernel.parse_network(TextSubclass("10.0.0.0/8")) == (4, 0x0A000000, 8)
    assert kernel.parse_host(TextSubclass("::ffff:10.0.0.1")) == (4, 0x0A000001)


@pytest.mark.parametrize("value", [None, b"10.0.0.1", 167772161], ids=repr)
def test_non_text_rejected(kernel: ModuleType, value: object) -> None:
    table = build(kernel, "10.0.0.0/8")
    with pytest.raises(TypeError):
        table.lookup_text(value)
    with pytest.raises(TypeError):
        kernel.parse_network(value)
    with pytest.raises(TypeError):
        kernel.parse_host(value)
