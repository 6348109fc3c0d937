"""Rate-limit buckets in shared memory, one table for every worker on a host.

Under ``gunicorn -w 4`` the memory store would enforce each limit once per
worker, four times in all. This store maps one file under ``/dev/shm`` into
every worker, and the compiled kernel (:mod:`wsgishield._fast.shm`) checks
and updates all the buckets of a request under one process-shared mutex.
Times come from ``CLOCK_MONOTONIC``, which every process on the host shares.

The table has a fixed number of slots. A key lives in one of eight slots
after its hash; a slot whose bucket is full again is free for any key, so a
limited client is never evicted. When all eight are taken by partly spent
buckets, the key uses its policy's overflow bucket, which new clients then
share. Keys are stored as 64-bit FNV-1a hashes: two keys with the same hash
would share a bucket, which for a table of a million keys happens with a
probability of about 3 in 10**8.

The table is opened lazily, on the first request in each worker, so that
nothing is mapped before Gunicorn forks. Its file is named after the
Gunicorn arbiter (the parent of every worker), so the workers of one
arbiter share it and a restarted server starts afresh;
``wsgishield.gunicorn`` removes it when the arbiter exits.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import mmap
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._fast._shm_common import HEADER_BYTES, MAX_POLICIES, SLOT_BYTES
from .._fast.shm import Admission, SharedTable, monotonic_microseconds
from ..errors import ConfigurationError, StoreError
from ..ratelimit import BucketResult, Limit, Outcome, unspent
from .buckets import under_gunicorn

__all__ = ["SharedMemoryBucketStore", "remove_tables", "table_path"]

# A NamedTuple class builds its instances in Python code. ``tuple.__new__``
# builds them in C at about half the cost, which counts on every request.
_new = tuple.__new__

logger = logging.getLogger("wsgishield.ratelimit")

_DIRECTORY = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_FILE_PREFIX = "wsgishield-buckets-"
# Each process logs a failing table at most once per this many seconds.
_FAILURE_LOG_SECONDS = 10.0


def table_path(owner: int, slots: int, directory: str = _DIRECTORY) -> str:
    """Return the path of the table that process ``owner`` shares."""
    return os.path.join(directory, f"{_FILE_PREFIX}{owner}-{slots}")


def remove_tables(owner: int, directory: str = _DIRECTORY) -> None:
    """Delete every table file of process ``owner`` (the Gunicorn arbiter)."""
    for path in glob.glob(os.path.join(directory, f"{_FILE_PREFIX}{owner}-*")):
        Path(path).unlink(missing_ok=True)


class SharedMemoryBucketStore:
    """Buckets shared by every process that maps the same table file."""

    name = "shm"
    #: Policies one request may carry: the kernel checks them in one call.
    max_policies = MAX_POLICIES

    def __init__(
        self,
        *,
        slots: int = 1 << 18,
        path: str | None = None,
        clock: Callable[[], int] = monotonic_microseconds,
        table_class: type[SharedTable] = SharedTable,
    ) -> None:
        if slots < 1024:
            raise ConfigurationError(
                "limits.shm_slots", slots, "expected at least 1024"
            )
        # A power of two keeps the home slot a mask of the hash.
        self.slots = 1 << (slots - 1).bit_length()
        self.path = path
        self.clock = clock
        # The compiled table or its twin; tests pass one explicitly. The
        # admit path needs the Admission class of the same kernel.
        self.table_class = table_class
        kernel = sys.modules[table_class.__module__]
        self.admission_class: type[Admission] = getattr(kernel, "Admission", Admission)
        self._table: SharedTable | None = None
        self._open_lock = threading.Lock()
        self._last_failure_log = -_FAILURE_LOG_SECONDS

    def apply(
        self, limits: Sequence[Limit], keys: Sequence[str], cost: int, tag: str = ""
    ) -> Outcome:
        """Check and consume every bucket of one request, all or nothing.

        Raises :class:`~wsgishield.errors.StoreError` when the table cannot
        be mapped or locked, so that each policy's failure mode applies.
        """
        try:
            table = self._table or self._open()
            admitted, results = table.apply(limits, keys, cost, self.clock())
        except (OSError, ConfigurationError) as exc:
            self._log_failure(exc)
            raise StoreError(f"shared-memory bucket table failed: {exc}") from exc
        if admitted:
            return _new(Outcome, (True, results))
        results = [
            unspent(result, limit, cost)
            for result, limit in zip(results, limits, strict=True)
        ]
        return Outcome(False, results)

    def prepare(self, limits: Sequence[Limit], cost: int, *, fields: bool) -> Admission:
        """Prepare the policies of one route for :meth:`admit`.

        Every policy must be keyed by the client address alone, and none may
        be in shadow mode. With ``fields`` true, ``admit`` formats the IETF
        ``RateLimit`` fields.
        """
        return self.admission_class(limits, cost, fields=fields)

    def admit(self, plan: Admission, client: str) -> list[tuple[str, str]] | None:
        """Admit one request of a prepared route in one kernel call.

        Returns the response fields of an admitted request, or ``None`` when
        the request was denied (nothing consumed) or the table failed. The
        caller then takes :meth:`apply`, which reports both in full. The
        kernel writes the same buckets as :meth:`apply` does.
        """
        table = self._table
        try:
            if table is None:
                table = self._open()
            if self.clock is monotonic_microseconds:
                # The kernel reads the same clock without a Python call.
                fields: list[tuple[str, str]] | None = table.admit(plan, client)
            else:
                fields = table.admit(plan, client, self.clock())
        except (OSError, ConfigurationError):
            return None
        return fields

    def _log_failure(self, exc: Exception) -> None:
        # One record per failure period, not one per request.
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_SECONDS:
            self._last_failure_log = now
            logger.error("shared-memory bucket table failed: %s", exc)

    def _open(self) -> SharedTable:
        with self._open_lock:
            if self._table is None:
                self._table = self._map(self.path or self._default_path())
            return self._table

    def _default_path(self) -> str:
        # In a Gunicorn worker the parent is the arbiter; elsewhere, this
        # process owns the table and only its forked children share it.
        owner = os.getppid() if under_gunicorn() else os.getpid()
        return table_path(owner, self.slots)

    def _map(self, path: str) -> SharedTable:
        size = HEADER_BYTES + self.slots * SLOT_BYTES
        # O_NOFOLLOW and the owner check refuse a file another user planted.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
                raise ConfigurationError(
                    "limits.store", path, "the table file belongs to another user"
                )
            # The first process to take the lock creates the table.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                created = info.st_size == 0 and os.fstat(fd).st_size == 0
                if created:
                    os.ftruncate(fd, size)
                elif os.fstat(fd).st_size != size:
                    raise ConfigurationError(
                        "limits.shm_slots",
                        self.slots,
                        f"{path} holds a table of another size",
                    )
                mapping = mmap.mmap(fd, size, mmap.MAP_SHARED)
                table = self.table_class(mapping, fd, self.slots, result=BucketResult)
                if created:
                    table.initialize()
                elif not table.check():
                    raise ConfigurationError(
                        "limits.store", path, "not a wsgishield bucket table"
                    )
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        # The twin locks with lockf on this descriptor, so it stays open.
        self._fd = fd
        return table
