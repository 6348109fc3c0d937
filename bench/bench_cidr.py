"""Longest-prefix matcher benchmarks over 100,000 mixed IPv4/IPv6 prefixes.

Run: ``python -m pytest bench/bench_cidr.py --benchmark-only -s``. Needs the
``bench`` extra (pytricia, a benchmark-only baseline: LGPL, never a runtime
dependency).

Lookups are mostly misses, as for a deny list: each timed call looks up the
same 1,000 probe addresses, so per-lookup figures are the call's time divided
by 1,000 (the Python loop is part of every variant alike). The ratio tests
also print an interleaved A/B measurement (see ``bench/conftest.py``) with
per-prefix memory.
"""

from __future__ import annotations

import gc
import importlib
import ipaddress
import random
import time
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import pytest

from bench.conftest import interleaved, report

pytricia = pytest.importorskip("pytricia")

compiled = importlib.import_module("wsgishield._fast._cidr_c")
twin = importlib.import_module("wsgishield._fast._cidr_py")

PREFIXES = 100_000
PROBES = 1_000


def _random_prefixes(count: int, seed: int = 3) -> list[str]:
    """Prefixes shaped like threat feeds: mostly /24../32 and /32../64."""
    generator = random.Random(seed)
    texts = []
    for _ in range(count):
        if generator.random() < 0.6:
            length = generator.choice([16, 20, 22, 24, 24, 24, 28, 32, 32, 32])
            value = generator.getrandbits(32) & ~((1 << (32 - length)) - 1)
            texts.append(f"{ipaddress.IPv4Address(value)}/{length}")
        else:
            length = generator.choice([29, 32, 40, 48, 48, 56, 64, 64, 64, 128])
            value = (0x2 << 124) | generator.getrandbits(125)  # inside 2000::/3
            value &= ~((1 << (128 - length)) - 1)
            texts.append(f"{ipaddress.IPv6Address(value)}/{length}")
    return texts


def _probes(texts: list[str], count: int, seed: int = 5) -> list[str]:
    """Random addresses (60% IPv4) plus 5% taken from inside listed prefixes."""
    generator = random.Random(seed)
    probes = []
    for _ in range(count):
        roll = generator.random()
        if roll < 0.05:
            network = ipaddress.ip_network(generator.choice(texts))
            probes.append(str(network.network_address))
        elif roll < 0.6:
            probes.append(str(ipaddress.IPv4Address(generator.getrandbits(32))))
        else:
            value = (0x2 << 124) | generator.getrandbits(125)
            probes.append(str(ipaddress.IPv6Address(value)))
    return probes


TEXTS = _random_prefixes(PREFIXES)
PROBE_TEXTS = _probes(TEXTS, PROBES)
NETWORKS = [(*compiled.parse_network(text), rule) for rule, text in enumerate(TEXTS)]

COMPILED_TABLE = compiled.PrefixTable(NETWORKS)
TWIN_TABLE = twin.PrefixTable(NETWORKS)
PROBE_VALUES = [compiled.parse_host(text) for text in PROBE_TEXTS]


class _FamilyTries:
    """One pytricia tree per address family.

    pytricia 1.3 compares an IPv6 address against IPv4 prefixes in a shared
    tree by its leading bits, so ``59.9.0.0/16`` matched ``3b09::1``. A
    tree per family returns the longest matching prefix.
    """

    def __init__(self) -> None:
        self.ipv4 = pytricia.PyTricia(32)
        self.ipv6 = pytricia.PyTricia(128)

    def tree(self, text: str) -> Any:
        return self.ipv6 if ":" in text else self.ipv4

    def get(self, text: str) -> Any:
        return (self.ipv6 if ":" in text else self.ipv4).get(text)


def _build_pytricia() -> _FamilyTries:
    tries = _FamilyTries()
    for rule, text in enumerate(TEXTS):
        tree = tries.tree(text)
        # "in" is true for any covering prefix; has_key is the exact prefix.
        # The first rule of a prefix wins, as in PrefixTable.
        if not tree.has_key(text):
            tree[text] = rule
    return tries


TRIE = _build_pytricia()


def _ipaddress_lookup(text: str) -> int:
    """Look up with the usual pure-Python approach: ipaddress, then bisect."""
    address = ipaddress.ip_address(text)
    if address.version == 4:
        starts, ids = TWIN_TABLE._starts4, TWIN_TABLE._ids4
    else:
        starts, ids = TWIN_TABLE._starts6, TWIN_TABLE._ids6
    index = bisect_right(starts, int(address)) - 1
    return int(ids[index]) if index >= 0 else -1


DICTIONARY = {text: rule for rule, text in enumerate(TEXTS)}


def _loop(lookup: Callable[[str], Any]) -> Callable[[], None]:
    probes = PROBE_TEXTS

    def run() -> None:
        for text in probes:
            lookup(text)

    return run


TEXT_LOOKUPS: dict[str, Callable[[], None]] = {
    "compiled lookup_text": _loop(COMPILED_TABLE.lookup_text),
    "twin lookup_text": _loop(TWIN_TABLE.lookup_text),
    "ipaddress + bisect": _loop(_ipaddress_lookup),
    "pytricia get": _loop(TRIE.get),
    "dict get (exact text, no LPM)": _loop(DICTIONARY.get),
}


def test_probes_mostly_miss() -> None:
    hits = sum(COMPILED_TABLE.lookup_text(text) >= 0 for text in PROBE_TEXTS)
    assert hits < PROBES // 4
    # Every variant returns the same rule, so they do the same work.
    for text in PROBE_TEXTS:
        expected = COMPILED_TABLE.lookup_text(text)
        assert TWIN_TABLE.lookup_text(text) == expected
        assert _ipaddress_lookup(text) == expected
        found = TRIE.get(text)
        assert (-1 if found is None else found) == expected


@pytest.mark.parametrize("variant", list(TEXT_LOOKUPS))
def test_lookup_text_1000(benchmark: Any, variant: str) -> None:
    benchmark.group = "1,000 lookups from text"
    benchmark(TEXT_LOOKUPS[variant])


def _value_loop(table: Any) -> Callable[[], None]:
    probes = PROBE_VALUES
    lookup = table.lookup

    def run() -> None:
        for version, value in probes:
            lookup(version, value)

    return run


@pytest.mark.parametrize("variant", ["compiled", "twin"])
def test_lookup_value_1000(benchmark: Any, variant: str) -> None:
    benchmark.group = "1,000 lookups from (version, value)"
    table = COMPILED_TABLE if variant == "compiled" else TWIN_TABLE
    benchmark(_value_loop(table))


def _build_from_text(kernel: Any) -> Any:
    networks = [(*kernel.parse_network(text), rule) for rule, text in enumerate(TEXTS)]
    return kernel.PrefixTable(networks)


BUILDS: dict[str, Callable[[], Any]] = {
    "compiled from text": lambda: _build_from_text(compiled),
    "compiled from tuples": lambda: compiled.PrefixTable(NETWORKS),
    "twin from text": lambda: _build_from_text(twin),
    "pytricia from text": _build_pytricia,
}


@pytest.mark.parametrize("variant", list(BUILDS))
def test_build_100000(benchmark: Any, variant: str) -> None:
    benchmark.group = "build 100,000 prefixes"
    benchmark.pedantic(BUILDS[variant], rounds=3, iterations=1)


def _resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096


def _memory_per_prefix(build: Callable[[], Any]) -> float:
    """Resident memory growth per prefix while the structure is alive (estimate)."""
    gc.collect()
    before = _resident_bytes()
    kept = build()
    gc.collect()
    after = _resident_bytes()
    del kept
    return (after - before) / PREFIXES


def test_cidr_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    medians = interleaved(TEXT_LOOKUPS, rounds=15, number=10)
    per_lookup = {name: value / PROBES for name, value in medians.items()}
    values = interleaved(
        {"compiled": _value_loop(COMPILED_TABLE), "twin": _value_loop(TWIN_TABLE)},
        rounds=15,
        number=10,
    )
    started = time.perf_counter()
    table = _build_from_text(compiled)
    build_seconds = time.perf_counter() - started

    with capsys.disabled():
        print()
        print(
            report("lookup from text, per lookup", per_lookup, "compiled lookup_text")
        )
        print(
            report(
                "lookup from (version, value), per lookup",
                {name: value / PROBES for name, value in values.items()},
                "compiled",
            )
        )
        print(
            f"compiled build from text: {build_seconds:.3f} s for {len(table)} prefixes"
        )
        print(
            f"compiled table: {table.intervals} intervals, {table.nbytes} bytes, "
            f"{table.nbytes / len(table):.1f} bytes per prefix"
        )
        twin_bytes = TWIN_TABLE.nbytes / len(TWIN_TABLE)
        print(f"twin table (estimate): {twin_bytes:.1f} bytes per prefix")
        print(
            "resident growth per prefix (estimate): compiled "
            f"{_memory_per_prefix(lambda: compiled.PrefixTable(NETWORKS)):.1f} B, "
            f"pytricia {_memory_per_prefix(_build_pytricia):.1f} B"
        )


def test_access_layer_ratio(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    """The access layer with a 100,000-line deny file, per request, vs a bare app."""
    from wsgishield import ClientAddress, context
    from wsgishield.middleware import AccessMiddleware
    from wsgishield.policy import AccessPolicy, BanPolicy

    deny = tmp_path / "deny.txt"
    deny.write_text("\n".join(TEXTS) + "\n")

    def bare(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    lists = AccessMiddleware(bare, access=AccessPolicy(deny_files=[str(deny)]))
    lists_and_bans = AccessMiddleware(
        bare, access=AccessPolicy(deny_files=[str(deny)]), bans=BanPolicy()
    )
    # A client in no listed network, as almost every request is, resolved
    # beforehand as the client-address layer does in a Shield.
    client = next(text for text in PROBE_TEXTS if COMPILED_TABLE.lookup_text(text) < 0)
    version, value = compiled.parse_host(client)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": client,
        context.CLIENT: ClientAddress(client, version, value, "", client, "peer", None),
    }

    def call(app: Any) -> Callable[[], None]:
        def run() -> None:
            app(dict(environ), lambda status, headers, exc_info=None: None)

        return run

    medians = interleaved(
        {
            "bare app": call(bare),
            "access lists (100,000 deny lines)": call(lists),
            "access lists + memory bans": call(lists_and_bans),
        }
    )
    with capsys.disabled():
        print("\n" + report("request through the access layer", medians, "bare app"))
