"""Multiprocess metrics under real Gunicorn with workers recycled many times.

Four workers with ``max_requests`` of 40 serve a bounded loopback load from
this test, so each worker is replaced dozens of times. The test checks what
prometheus-client's plain multiprocess mode gets wrong. The metrics
directory stays small, and scrapes take no longer after the recycles than
before. The summed request counters equal the requests sent once the
workers have written their values (every FLUSH_INTERVAL, and at exit).
"""

from __future__ import annotations

import http.client
import re
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.servers import GunicornServer, free_port
from wsgishield.metrics import FLUSH_INTERVAL

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]

WORKERS = 4
MAX_REQUESTS = 40
REQUESTS = 2400
CLIENT_THREADS = 8
# One file per type per live worker (counter, histogram, in-flight gauge)
# plus one archive per type that outlives a worker.
MAX_FILES = WORKERS * 3 + 3

_SAMPLE = re.compile(
    r"^wsgishield_http_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M
)


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def requests_counted(body: bytes) -> float:
    return sum(float(match["value"]) for match in _SAMPLE.finditer(body.decode()))


def timed_scrape(port: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, body = get(port, "/metrics")
    elapsed = time.perf_counter() - started
    assert status == 200
    return elapsed, body


def send(port: int, count: int) -> int:
    """Send ``count`` requests from a few threads; return how many got 200."""

    def one(number: int) -> bool:
        status, _ = get(port, f"/items/{number}")
        return status == 200

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return sum(pool.map(one, range(count)))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[GunicornServer, int, Path]]:
    directory = tmp_path / "multiproc"
    metrics_port = free_port()
    gunicorn = GunicornServer(
        "tests.support.metrics_app:app",
        config="deploy/gunicorn.conf.py",
        workers=WORKERS,
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "WSGISHIELD_MAX_REQUESTS": str(MAX_REQUESTS),
            "WSGISHIELD_METRICS_PORT": str(metrics_port),
            "WSGISHIELD_METRICS_BIND": "127.0.0.1",
        },
    )
    gunicorn.start()
    try:
        yield gunicorn, metrics_port, directory
    finally:
        gunicorn.stop()


def test_recycled_workers_keep_metrics_bounded(
    server: tuple[GunicornServer, int, Path],
) -> None:
    gunicorn, metrics_port, directory = server
    sent = send(gunicorn.port, 100)
    early = [timed_scrape(metrics_port)[0] for _ in range(7)]

    sent += send(gunicorn.port, REQUESTS - 100)
    # Workers write their values every FLUSH_INTERVAL, and the last ones
    # to be replaced may still be exiting.
    time.sleep(2.5 * FLUSH_INTERVAL)
    files = sorted(path.name for path in directory.glob("*.db"))
    late = [timed_scrape(metrics_port) for _ in range(7)]

    assert sent == REQUESTS, gunicorn.log()
    recycles = gunicorn.log().count("Autorestarting worker")
    assert recycles >= REQUESTS // MAX_REQUESTS // 2, gunicorn.log()
    assert len(files) <= MAX_FILES, files
    assert "counter_archive.db" in files
    assert requests_counted(late[-1][1]) == REQUESTS
    assert statistics.median(t for t, _ in late) < 3 * statistics.median(early)


def test_in_band_scrape_matches_master(
    server: tuple[GunicornServer, int, Path],
) -> None:
    gunicorn, metrics_port, _ = server
    sent = send(gunicorn.port, 200)
    time.sleep(2.5 * FLUSH_INTERVAL)
    status, in_band = get(gunicorn.port, "/metrics")
    _, from_master = timed_scrape(metrics_port)
    assert sent == 200
    assert status == 200
    assert requests_counted(in_band) == 200
    assert requests_counted(from_master) == 200
    assert b"wsgishield_http_requests_in_flight" in from_master


# --- The hooks on their own ---------------------------------------------------


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def exception(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    def warning(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


class FakeArbiter:
    def __init__(self) -> None:
        self.LISTENERS: list[str] = []
        self.log = FakeLog()


class FakeWorker:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_on_starting_empties_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsgishield import gunicorn as settings

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mp"))
    (tmp_path / "mp").mkdir()
    (tmp_path / "mp" / "counter_77.db").write_bytes(b"stale")
    settings.on_starting(FakeArbiter())
    assert list((tmp_path / "mp").glob("*.db")) == []


def test_child_exit_archives_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsgishield import gunicorn as settings
    from wsgishield import multiprocess

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    mapped = multiprocess.MappedFile(str(tmp_path / "counter_4242-wsgishield.db"))
    mapped.append('["app_jobs", "app_jobs_total", {}, "Jobs."]', 3.0)
    mapped.close()
    settings.child_exit(FakeArbiter(), FakeWorker(4242))
    names = sorted(path.name for path in tmp_path.glob("*.db"))
    assert names == ["counter_archive.db"]


def test_child_exit_logs_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsgishield import gunicorn as settings

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_4343.db").write_bytes(b"\xff\x00\x00\x00" + b"\x00" * 60)
    arbiter = FakeArbiter()
    settings.child_exit(arbiter, FakeWorker(4343))
    assert arbiter.log.lines == ["archiving the metrics of worker 4343 failed"]
    assert (tmp_path / "counter_4343.db").exists()


def test_listener_needs_multiprocess_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsgishield import gunicorn as settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(settings, "metrics_port", free_port())
    arbiter = FakeArbiter()
    settings.when_ready(arbiter)
    assert len(arbiter.log.lines) == 1
    assert "no listener was started" in arbiter.log.lines[0]


def test_events_log_writes_json_lines(tmp_path: Path) -> None:
    import json
    import logging

    from wsgishield import events
    from wsgishield import gunicorn as settings

    logger = logging.getLogger("wsgishield.events")
    before = list(logger.handlers)
    level = logger.level
    target = tmp_path / "events.json"
    settings._attach_events_log(str(target))
    try:
        events.emit("test", "banned", {"client.ip": "192.0.2.1"})
    finally:
        for handler in logger.handlers[len(before) :]:
            handler.close()
        logger.handlers = before
        logger.setLevel(level)
    document = json.loads(target.read_text().splitlines()[0])
    assert document["event.action"] == "banned"
    assert document["client.ip"] == "192.0.2.1"


def test_child_exit_without_directory_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsgishield import gunicorn as settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    arbiter = FakeArbiter()
    settings.child_exit(arbiter, FakeWorker(1))
    assert arbiter.log.lines == []
