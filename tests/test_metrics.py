from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.metrics import sample_values
from wsgishield import metrics


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> metrics.MetricsRegistry:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    return metrics.MetricsRegistry()


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(directory))
    return directory


def collected(
    directory: Path, *registries: metrics.MetricsRegistry
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Flush ``registries``, then read a multiprocess directory the way
    prometheus-client's collector does."""
    for registry in registries:
        registry.flush()
    values = {}
    for family in MultiProcessCollector(None, path=str(directory)).collect():
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("get", "other"),
        ("BREW", "other"),
        ("", "other"),
        ("GET\r\n", "other"),
    ],
    ids=["get", "patch", "lower-case", "invented", "empty", "crlf"],
)
def test_method_label(method: str, expected: str) -> None:
    assert metrics.method_label(method) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("200 OK", "2xx"),
        ("429 Too Many Requests", "4xx"),
        (503, "5xx"),
        ("101 Switching Protocols", "1xx"),
        ("600 Odd", "other"),
        ("", "other"),
        ("OK", "other"),
    ],
    ids=["ok", "too-many", "int", "switching", "six-hundred", "empty", "no-code"],
)
def test_status_class(status: str | int, expected: str) -> None:
    assert metrics.status_class(status) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("expired", "expired"),
        ("items-per-ip", "items-per-ip"),
        ("a" * 64, "a" * 64),
        ("a" * 65, "other"),
        ("", "other"),
        ("has space", "other"),
        ('quote"', "other"),
        ("üñí", "other"),
        ("(unmatched)", "(unmatched)"),
        (42, "42"),
    ],
    ids=[
        "word",
        "dashes",
        "max-length",
        "too-long",
        "empty",
        "space",
        "quote",
        "non-ascii",
        "sentinel",
        "int",
    ],
)
def test_bounded_label(value: object, expected: str) -> None:
    assert metrics.bounded_label(value) == expected


def test_vocabulary_maps_unknown_to_other(registry: metrics.MetricsRegistry) -> None:
    registry.jwks_fetches.inc("success")
    registry.jwks_fetches.inc("exploded")
    values = sample_values(registry)
    assert values[("wsgishield_jwks_fetches_total", (("result", "success"),))] == 1.0
    assert values[("wsgishield_jwks_fetches_total", (("result", "other"),))] == 1.0


def test_unhashable_label_becomes_other(registry: metrics.MetricsRegistry) -> None:
    registry.jwt_failures.inc(["not", "hashable"])
    registry.jwks_fetches.inc({"result": "x"})
    values = sample_values(registry)
    assert values[("wsgishield_jwt_failures_total", (("reason", "other"),))] == 1.0
    assert values[("wsgishield_jwks_fetches_total", (("result", "other"),))] == 1.0


def test_wrong_label_count_raises(registry: metrics.MetricsRegistry) -> None:
    with pytest.raises(ValueError, match="takes labels"):
        registry.jwt_failures.inc("a", "b")


def test_duplicate_family_raises(registry: metrics.MetricsRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("wsgishield_jwt_failures", "again", ["reason"])


def test_gauge_set_and_dec(registry: metrics.MetricsRegistry) -> None:
    registry.breaker_state.set("redis", value=2.0)
    registry.breaker_state.dec("redis")
    assert registry.value(registry.breaker_state, "redis") == 1.0


def test_histogram_buckets_cumulative(registry: metrics.MetricsRegistry) -> None:
    family = registry.histogram("test_seconds", "Test.", [], buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        family.observe(value=value)
    values = sample_values(registry)
    assert values[("test_seconds_bucket", (("le", "0.1"),))] == 2.0
    assert values[("test_seconds_bucket", (("le", "1.0"),))] == 3.0
    assert values[("test_seconds_bucket", (("le", "+Inf"),))] == 4.0
    assert values[("test_seconds_count", ())] == 4.0
    assert values[("test_seconds_sum", ())] == pytest.approx(3.65)


def test_dropped_counter_is_not_capped(registry: metrics.MetricsRegistry) -> None:
    registry.max_series = registry.series_count
    registry.jwt_failures.inc("expired")
    registry.store_errors.inc("redis", "timeout")
    values = sample_values(registry)
    assert (
        values[
            (
                "wsgishield_metrics_series_dropped_total",
                (("metric", "wsgishield_jwt_failures"),),
            )
        ]
        == 1.0
    )
    assert (
        values[
            (
                "wsgishield_metrics_series_dropped_total",
                (("metric", "wsgishield_store_errors"),),
            )
        ]
        == 1.0
    )


def test_exposition_without_multiprocess(registry: metrics.MetricsRegistry) -> None:
    registry.jwt_failures.inc("expired")
    body, content_type = metrics.exposition(None, registry, include_default=False)
    assert content_type.startswith("text/plain")
    assert b'wsgishield_jwt_failures_total{reason="expired"} 1.0' in body
    assert b"process_cpu_seconds_total" not in body


# --- Multiprocess files ------------------------------------------------------


def test_files_match_prometheus_client_format(multiproc_dir: Path) -> None:
    registry = metrics.MetricsRegistry()
    registry.jwt_failures.inc("expired", amount=3)
    registry.breaker_state.set("redis", value=2.0)
    family = registry.histogram("test_seconds", "Test.", ["route"], buckets=(0.1, 1.0))
    family.observe("a", value=0.5)
    family.observe("a", value=5.0)

    values = collected(multiproc_dir, registry)
    assert values[("wsgishield_jwt_failures_total", (("reason", "expired"),))] == 3.0
    assert values[("wsgishield_breaker_state", (("store", "redis"),))] == 2.0
    assert values[("test_seconds_bucket", (("le", "0.1"), ("route", "a")))] == 0.0
    assert values[("test_seconds_bucket", (("le", "1.0"), ("route", "a")))] == 1.0
    assert values[("test_seconds_bucket", (("le", "+Inf"), ("route", "a")))] == 2.0
    assert values[("test_seconds_count", (("route", "a"),))] == 2.0
    assert values[("test_seconds_sum", (("route", "a"),))] == 5.5
    names = sorted(path.name for path in multiproc_dir.glob("*.db"))
    tag = registry.file_tag
    pid = os.getpid()
    assert names == [
        f"counter_{pid}-{tag}.db",
        f"gauge_livemax_{pid}-{tag}.db",
        f"histogram_{pid}-{tag}.db",
    ]


def test_file_grows_past_initial_size(multiproc_dir: Path) -> None:
    registry = metrics.MetricsRegistry(max_series=10_000)
    for number in range(3000):
        registry.jwt_failures.inc(f"reason-{number:05d}")
    registry.jwt_failures.inc("reason-00000")
    values = collected(multiproc_dir, registry)
    assert (
        len([key for key in values if key[0] == "wsgishield_jwt_failures_total"])
        == 3000
    )
    assert (
        values[("wsgishield_jwt_failures_total", (("reason", "reason-00000"),))] == 2.0
    )


def test_existing_file_of_same_pid_is_continued(multiproc_dir: Path) -> None:
    first = metrics.MetricsRegistry(file_tag="same")
    first.jwt_failures.inc("expired", amount=2)
    first.store.close()
    second = metrics.MetricsRegistry(file_tag="same")
    second.jwt_failures.inc("expired")
    assert (
        collected(multiproc_dir, second)[
            ("wsgishield_jwt_failures_total", (("reason", "expired"),))
        ]
        == 3.0
    )


def test_values_of_child_process_are_its_own(multiproc_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from wsgishield import metrics
        metrics.JWKS_FETCHES.inc("success")
        pid = os.fork()
        if pid == 0:
            metrics.JWKS_FETCHES.inc("error")
            # os._exit skips atexit, so flush by hand.
            metrics.REGISTRY.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    child = result.stdout.strip()
    child_file = multiproc_dir / f"counter_{child}-wsgishield.db"
    child_values = {
        json.loads(key)[2]["result"]: value
        for key, value, _ in metrics.read_multiprocess_file(child_file)
    }
    # The child starts from zero: the parent's "success" is not its own.
    assert child_values == {"success": 0.0, "error": 1.0}
    total = collected(multiproc_dir)
    assert total[("wsgishield_jwks_fetches_total", (("result", "success"),))] == 1.0
    assert total[("wsgishield_jwks_fetches_total", (("result", "error"),))] == 1.0


def test_prepare_directory_removes_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "fresh"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(directory))
    assert metrics.prepare_multiprocess_directory() == directory
    (directory / "counter_1.db").write_bytes(b"x")
    (directory / "counter_archive.db.tmp").write_bytes(b"x")
    (directory / "keep.txt").write_text("x")
    metrics.prepare_multiprocess_directory()
    assert sorted(path.name for path in directory.iterdir()) == ["keep.txt"]


def test_prepare_directory_requires_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    with pytest.raises(ValueError, match=metrics.MULTIPROC_ENV):
        metrics.prepare_multiprocess_directory()


# --- Archive of dead processes ---------------------------------------------


def write_process_files(directory: Path, pid: int, amount: float) -> None:
    """Write prometheus-client files for ``pid`` as a worker would, in a child."""
    script = textwrap.dedent(
        f"""
        from prometheus_client import values
        from prometheus_client import Counter, Gauge, Histogram, CollectorRegistry
        values.ValueClass = values.MultiProcessValue(lambda: {pid})
        r = CollectorRegistry()
        Counter("app_jobs", "Jobs.", ["kind"], registry=r).labels("a").inc({amount})
        Histogram("app_seconds", "Time.", buckets=(1.0,), registry=r).observe({amount})
        def gauge(name, mode):
            return Gauge(name, name, multiprocess_mode=mode, registry=r)
        gauge("app_live", "livesum").inc(1)
        gauge("app_peak", "max").set({amount})
        gauge("app_each", "all").set({amount})
        gauge("app_total", "sum").set({amount})
        gauge("app_low", "min").set({amount})
        gauge("app_last", "mostrecent").set({amount})
        """
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        env={**os.environ, metrics.MULTIPROC_ENV: str(directory)},
    )


def test_archive_merges_dead_processes(multiproc_dir: Path) -> None:
    write_process_files(multiproc_dir, 101, 1.0)
    write_process_files(multiproc_dir, 102, 4.0)
    write_process_files(multiproc_dir, 103, 0.5)
    before = collected(multiproc_dir)

    assert metrics.archive_dead_process(101) == 8
    assert metrics.archive_dead_process(102) == 8
    after = collected(multiproc_dir)

    for name in [
        "app_jobs_total",
        "app_seconds_count",
        "app_seconds_sum",
        "app_total",
        "app_peak",
        "app_low",
    ]:
        matching = [key for key in before if key[0] == name]
        assert matching, name
        for key in matching:
            assert after[key] == before[key], key
    assert after[("app_live", ())] == 1.0
    assert after[("app_last", ())] in (1.0, 4.0, 0.5)
    each = sorted(dict(key[1])["pid"] for key in after if key[0] == "app_each")
    assert each == ["103"]
    names = sorted(path.name for path in multiproc_dir.glob("*.db"))
    assert "counter_101.db" not in names
    assert "counter_archive.db" in names


def test_archive_keeps_file_count_bounded(multiproc_dir: Path) -> None:
    for pid in range(200, 212):
        write_process_files(multiproc_dir, pid, 1.0)
        metrics.archive_dead_process(pid)
    counts = collected(multiproc_dir)
    assert counts[("app_jobs_total", (("kind", "a"),))] == 12.0
    assert counts[("app_seconds_count", ())] == 12.0
    # One archive per type that outlives its process, nothing per pid.
    assert metrics.multiprocess_file_count() == 6


def test_archive_of_unknown_pid_is_noop(multiproc_dir: Path) -> None:
    write_process_files(multiproc_dir, 301, 1.0)
    assert metrics.archive_dead_process(999_999) == 0
    assert metrics.archive_dead_process(30) == 0
    assert metrics.multiprocess_file_count() == 8


def test_archive_includes_wsgishield_files(multiproc_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import os
        from wsgishield import metrics
        metrics.JWT_FAILURES.inc("expired", amount=5)
        metrics.HTTP_IN_FLIGHT.inc()
        print(os.getpid())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    pid = int(result.stdout)
    assert metrics.archive_dead_process(pid) == 2
    values = collected(multiproc_dir)
    assert values[("wsgishield_jwt_failures_total", (("reason", "expired"),))] == 5.0
    assert ("wsgishield_http_requests_in_flight", ()) not in values


def test_exposition_reads_multiprocess_directory(multiproc_dir: Path) -> None:
    write_process_files(multiproc_dir, 401, 2.0)
    registry = metrics.MetricsRegistry()
    registry.jwt_failures.inc("expired")
    body, _ = metrics.exposition(None, registry)
    assert b'app_jobs_total{kind="a"} 2.0' in body
    assert b'wsgishield_jwt_failures_total{reason="expired"} 1.0' in body


def test_archive_matches_prometheus_client_histograms(multiproc_dir: Path) -> None:
    # The archive must render every bucket, sum and count exactly as the
    # live files of the two workers did.
    write_process_files(multiproc_dir, 501, 0.5)
    write_process_files(multiproc_dir, 502, 3.0)
    before = collected(multiproc_dir)
    metrics.archive_dead_process(501)
    metrics.archive_dead_process(502)
    after = collected(multiproc_dir)
    histogram = {
        key: value for key, value in before.items() if key[0].startswith("app_seconds")
    }
    assert histogram == {key: after[key] for key in histogram}


def test_threads_lose_no_increments(multiproc_dir: Path) -> None:
    registry = metrics.MetricsRegistry()
    family = registry.http_requests

    def work() -> None:
        for _ in range(5000):
            family.inc("items", "GET", "2xx", "allowed")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    labels = (
        ("decision", "allowed"),
        ("method", "GET"),
        ("route", "items"),
        ("status_class", "2xx"),
    )
    assert registry.value(family, "items", "GET", "2xx", "allowed") == 40_000
    key = ("wsgishield_http_requests_total", labels)
    assert collected(multiproc_dir, registry)[key] == 40_000


@given(st.lists(st.text(max_size=80), min_size=4, max_size=4))
def test_cleaned_labels_stay_bounded(values: list[str]) -> None:
    family = metrics.REGISTRY.decisions_total
    for value in family.clean(values):
        assert value == metrics.OTHER or re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value)
    assert family.clean(values)[1] in {*metrics.DECISIONS, metrics.OTHER}


def test_scrapes_during_archiving_never_change_totals(multiproc_dir: Path) -> None:
    from wsgishield import multiprocess

    key = '["app_jobs", "app_jobs_total", {}, "Jobs."]'
    pids = range(7000, 7040)
    for pid in pids:
        mapped = multiprocess.MappedFile(str(multiproc_dir / f"counter_{pid}.db"))
        mapped.append(key, 1.0)
        mapped.close()
    registry = metrics.MetricsRegistry()

    def archive_all() -> None:
        for pid in pids:
            metrics.archive_dead_process(pid)

    archiver = threading.Thread(target=archive_all)
    archiver.start()
    totals = set()
    while archiver.is_alive():
        for family in metrics.scrape_registry(registry).collect():
            for sample in family.samples:
                if sample.name == "app_jobs_total":
                    totals.add(sample.value)
    archiver.join()
    assert totals <= {40.0}
    assert metrics.multiprocess_file_count() == 1
