"""Files of prometheus-client's multiprocess mode, and their archive.

In multiprocess mode every process writes its metric values to its own
memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``, one per metric type
(``counter_<pid>.db``, ``gauge_livesum_<pid>.db``...), and a scrape sums
them all. This module writes and reads that file format, and merges the
files of processes that exited into one archive per type, so the number of
files stays bounded however often Gunicorn recycles its workers.

Nothing here imports prometheus-client; the format is checked against its
``MultiProcessCollector`` in the tests.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "MULTIPROC_ENV",
    "MappedFile",
    "archive_dead_process",
    "archive_lock",
    "multiprocess_file_count",
    "prepare_multiprocess_directory",
    "read_multiprocess_file",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# prometheus-client's multiprocess file: a 4-byte used length and 4 bytes of
# padding, then entries of a 4-byte key length, the UTF-8 key padded to an
# 8-byte boundary, and two doubles (value, timestamp).
_INITIAL_FILE_SIZE = 1 << 16
_INT = struct.Struct("i")
_TWO_DOUBLES = struct.Struct("dd")
_pack_value = _TWO_DOUBLES.pack
# An archive takes the place of the pid in its file name: "counter_archive.db".
_ARCHIVE_PID = "archive"
_LOCK_FILE = "wsgishield-archive.lock"


class MappedFile:
    """One append-only multiprocess file, written by this process only.

    The file descriptor is closed once mapped (the mapping keeps the file),
    so an abandoned registry leaks no descriptors.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "a+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                handle.truncate(_INITIAL_FILE_SIZE)
                size = _INITIAL_FILE_SIZE
            self.map = mmap.mmap(handle.fileno(), size)
        self.capacity = size
        self.used: int = _INT.unpack_from(self.map, 0)[0]
        if self.used == 0:
            self.used = 8
            self.map[0:4] = _INT.pack(self.used)
        # A file left by an earlier process with the same pid is continued.
        self.existing = {
            key: (value, pos)
            for key, value, _, pos in _read_entries(self.map, self.used)
        }

    def append(self, key: str, value: float) -> int:
        """Add an entry for ``key`` and return the offset of its value."""
        encoded = key.encode("utf-8")
        padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
        entry = _INT.pack(len(encoded)) + padded + _pack_value(value, 0.0)
        if self.used + len(entry) > self.capacity:
            self._grow(self.used + len(entry))
        self.map[self.used : self.used + len(entry)] = entry
        self.used += len(entry)
        # Publish the entry only after it is complete: readers stop at `used`.
        self.map[0:4] = _INT.pack(self.used)
        return self.used - 16

    def _grow(self, needed: int) -> None:
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        with open(self.path, "r+b") as handle:
            handle.truncate(capacity)
            grown = mmap.mmap(handle.fileno(), capacity)
        self.map.close()
        self.map = grown
        self.capacity = capacity

    def close(self) -> None:
        self.map.close()


def _read_entries(data: Any, used: int) -> Iterator[tuple[str, float, float, int]]:
    position = 8
    while position < used:
        length = _INT.unpack_from(data, position)[0]
        if length <= 0 or position + 4 + length > used:
            raise ValueError(f"corrupt metrics file entry at offset {position}")
        key = bytes(data[position + 4 : position + 4 + length]).decode("utf-8")
        position += 4 + length + (8 - (length + 4) % 8)
        value, timestamp = _TWO_DOUBLES.unpack_from(data, position)
        yield key, value, timestamp, position
        position += 16


def read_multiprocess_file(path: str | Path) -> list[tuple[str, float, float]]:
    """Return the ``(key, value, timestamp)`` entries of one multiprocess file."""
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 8:
        return []
    used = _INT.unpack_from(data, 0)[0]
    return [(key, value, stamp) for key, value, stamp, _ in _read_entries(data, used)]


def _multiprocess_directory(directory: str | os.PathLike[str] | None) -> Path:
    path = directory if directory is not None else os.environ.get(MULTIPROC_ENV)
    if not path:
        raise ValueError(f"{MULTIPROC_ENV} is not set and no directory was given")
    return Path(path)


# Scrapes in any process take this lock shared and archive merges take it
# exclusive. POSIX record locks (lockf) are per process and not inherited
# by fork, so a Gunicorn worker forked while the master's scrape listener
# held the lock does not keep holding it. Record locks do not exclude
# threads of one process from each other, hence the thread lock as well,
# which is replaced after a fork.
_archive_thread_lock = threading.Lock()


@contextmanager
def archive_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """Hold the lock that keeps scrapes from reading a half-done merge."""
    with _archive_thread_lock, open(directory / _LOCK_FILE, "a+b") as handle:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)


def prepare_multiprocess_directory(
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Create the multiprocess directory and delete every metrics file in it.

    Call it once before the first worker starts (Gunicorn ``on_starting``):
    values left by an earlier run would otherwise be added to this one's.
    """
    path = _multiprocess_directory(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    for stale in path.glob("*.db.tmp"):
        stale.unlink(missing_ok=True)
    return path


def _file_pid(path: Path) -> str:
    # "counter_123.db", "gauge_livesum_123-wsgishield.db" -> "123"
    stem = path.name[: -len(".db")]
    return stem.rsplit("_", 1)[-1].split("-", 1)[0]


def _file_prefix(path: Path) -> str:
    return path.name[: -len(".db")].rsplit("_", 1)[0]


# How the archive combines a key's values for each kind of file. Counters,
# histograms and summaries add up; gauges keep their multiprocess mode.
def _combine_max(
    old: tuple[float, float], new: tuple[float, float]
) -> tuple[float, float]:
    return new if new[0] > old[0] else old


def _combine_min(
    old: tuple[float, float], new: tuple[float, float]
) -> tuple[float, float]:
    return new if new[0] < old[0] else old


def _combine_sum(
    old: tuple[float, float], new: tuple[float, float]
) -> tuple[float, float]:
    return old[0] + new[0], 0.0


def _combine_recent(
    old: tuple[float, float], new: tuple[float, float]
) -> tuple[float, float]:
    return new if new[1] > old[1] else old


_ARCHIVED_PREFIXES = {
    "counter": _combine_sum,
    "histogram": _combine_sum,
    "summary": _combine_sum,
    "gauge_sum": _combine_sum,
    "gauge_max": _combine_max,
    "gauge_min": _combine_min,
    "gauge_mostrecent": _combine_recent,
}


def archive_dead_process(
    pid: int, directory: str | os.PathLike[str] | None = None
) -> int:
    """Merge the files of an exited process into the archive; return files removed.

    Values that outlive their process (counters, histograms, summaries and
    gauges in ``sum``, ``max``, ``min`` or ``mostrecent`` mode) are combined
    into one ``<type>_archive.db`` per type. ``live*`` gauges and per-process
    ``all`` gauges of the dead process are deleted, as prometheus-client's
    ``mark_process_dead`` does for the live ones. Scrapes through
    :func:`exposition` wait while the merge runs, so they never count a
    value twice or miss it.
    """
    path = _multiprocess_directory(directory)
    target = str(pid)
    dead = [file for file in path.glob("*.db") if _file_pid(file) == target]
    if not dead:
        return 0

    with archive_lock(path, exclusive=True):
        by_prefix: dict[str, list[Path]] = {}
        for file in dead:
            by_prefix.setdefault(_file_prefix(file), []).append(file)

        for prefix, files in by_prefix.items():
            combine = _ARCHIVED_PREFIXES.get(prefix)
            if combine is None:
                continue
            archive = path / f"{prefix}_{_ARCHIVE_PID}.db"
            merged: dict[str, tuple[float, float]] = {}
            sources = [archive, *files] if archive.exists() else files
            for source in sources:
                for key, value, stamp in read_multiprocess_file(source):
                    old = merged.get(key)
                    merged[key] = (
                        (value, stamp) if old is None else combine(old, (value, stamp))
                    )
            _write_archive(archive, merged)

        for file in dead:
            file.unlink(missing_ok=True)
    return len(dead)


def _write_archive(archive: Path, merged: dict[str, tuple[float, float]]) -> None:
    temporary = archive.with_name(archive.name + ".tmp")
    temporary.unlink(missing_ok=True)
    mapped = MappedFile(str(temporary))
    try:
        for key, (value, stamp) in merged.items():
            offset = mapped.append(key, value)
            mapped.map[offset : offset + 16] = _pack_value(value, stamp)
        mapped.map.flush()
    finally:
        mapped.close()
    os.replace(temporary, archive)


def multiprocess_file_count(directory: str | os.PathLike[str] | None = None) -> int:
    """Return how many metrics files the multiprocess directory holds."""
    return sum(1 for _ in _multiprocess_directory(directory).glob("*.db"))


def _reset_after_fork() -> None:
    global _archive_thread_lock
    _archive_thread_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
