# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled shared-memory bucket table: the same names and results as ``_shm_py``.

Every worker maps the same file. One process-shared, robust pthread mutex
in the header serializes updates, and the whole check-and-update of a
request runs in C with the GIL released, so waiting on another worker never
blocks this worker's other threads.

Why a mutex rather than compare-and-swap: a request checks several buckets
and must consume all of them or none. A CAS updates one 64-bit word, so
all-or-nothing over several slots would need a multi-word protocol; the
critical section here is a few hundred nanoseconds, and a robust mutex
survives a worker that dies holding it (Gunicorn kills timed-out workers
with SIGKILL): the next locker gets ``EOWNERDEAD`` and marks the mutex
consistent again. The table is still valid then, because a request writes
its TATs only after every decision is made; a worker killed midway through
those writes leaves some buckets charged for a request it never served,
which errs on the side of limiting.
"""

from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from ._gcra_common import MAX_EXACT
from ._shm_common import (
    FNV_OFFSET,
    FNV_PRIME,
    HEADER_BYTES,
    MAGIC,
    MAX_POLICIES,
    MUTEX_OFFSET,
    OVERFLOW_SALT,
    PROBE_WINDOW,
    SLOT_BYTES,
)

__all__ = ["COMPILED", "SharedTable", "key_hash", "monotonic_microseconds"]

COMPILED = True

cdef extern from "<errno.h>":
    int EOWNERDEAD

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    object PyType_GenericAlloc(PyTypeObject*, Py_ssize_t)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int PTHREAD_PROCESS_SHARED
    int PTHREAD_MUTEX_ROBUST
    int pthread_mutexattr_init(pthread_mutexattr_t*)
    int pthread_mutexattr_setpshared(pthread_mutexattr_t*, int)
    int pthread_mutexattr_setrobust(pthread_mutexattr_t*, int)
    int pthread_mutexattr_destroy(pthread_mutexattr_t*)
    int pthread_mutex_init(pthread_mutex_t*, const pthread_mutexattr_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)
    int pthread_mutex_consistent(pthread_mutex_t*)

cdef uint64_t _FNV_OFFSET = FNV_OFFSET
cdef uint64_t _FNV_PRIME = FNV_PRIME
cdef uint64_t _OVERFLOW_SALT = OVERFLOW_SALT
cdef uint64_t _MAGIC = MAGIC
cdef Py_ssize_t _HEADER = HEADER_BYTES
cdef Py_ssize_t _MUTEX = MUTEX_OFFSET
cdef int _WINDOW = PROBE_WINDOW
cdef int _MAX = MAX_POLICIES

ctypedef struct Slot:
    uint64_t hash
    int64_t tat

ctypedef struct Request:
    uint64_t hash
    uint64_t overflow
    int64_t interval
    int64_t tolerance
    bint shadow
    Py_ssize_t slot
    uint64_t stored_hash
    # Kernel result, as in _gcra_py.update.
    bint allowed
    int64_t new_tat
    int64_t remaining
    int64_t retry_after
    int64_t reset_after


cdef uint64_t _hash_bytes(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef uint64_t value = _FNV_OFFSET
    cdef Py_ssize_t i
    for i in range(length):
        value = (value ^ data[i]) * _FNV_PRIME
    return value if value != 0 else 1


cdef uint64_t _hash_text(str text) except? 0:
    # An ASCII string is its own UTF-8: hash it in place, without a copy.
    if PyUnicode_IS_COMPACT_ASCII(text):
        return _hash_bytes(
            <const unsigned char*>PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text)
        )
    cdef bytes data = text.encode("utf-8", "surrogatepass")
    return _hash_bytes(<const unsigned char*>data, len(data))


def key_hash(str text not None):
    """Return the 64-bit FNV-1a hash of ``text`` in UTF-8, never 0."""
    return _hash_text(text)


def monotonic_microseconds():
    """Return ``CLOCK_MONOTONIC`` in microseconds, shared by every process."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000 + now.tv_nsec // 1000


cdef inline void _set_item(object result, Py_ssize_t index, object value):
    # PyTuple_SET_ITEM takes over a reference.
    Py_INCREF(value)
    PyTuple_SET_ITEM(result, index, value)


cdef object _result(type kind, Request* r):
    """Return the kernel result of ``r`` as a tuple of type ``kind``."""
    cdef object allowed = True if r.allowed else False
    cdef object tat = r.new_tat
    cdef object remaining = r.remaining
    cdef object retry_after = r.retry_after
    cdef object reset_after = r.reset_after
    if kind is tuple:
        return (allowed, tat, remaining, retry_after, reset_after)
    # What tuple.__new__(kind, ...) does, without the intermediate tuple.
    result = PyType_GenericAlloc(<PyTypeObject*>kind, 5)
    _set_item(result, 0, allowed)
    _set_item(result, 1, tat)
    _set_item(result, 2, remaining)
    _set_item(result, 3, retry_after)
    _set_item(result, 4, reset_after)
    return result


cdef inline int64_t _floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef class SharedTable:
    """Bucket times in a shared mapping, updated under a robust mutex."""

    cdef object mapping
    cdef unsigned char[::1] view
    cdef Slot* table
    cdef pthread_mutex_t* mutex
    cdef readonly Py_ssize_t slots
    cdef uint64_t mask
    cdef type result

    def __init__(self, mapping, int fd, Py_ssize_t slots, *, type result=tuple):
        if slots < _WINDOW or slots & (slots - 1):
            raise ValueError("slots must be a power of two of at least 8")
        if not issubclass(result, tuple) or result.__itemsize__ != tuple.__itemsize__:
            raise TypeError("result must be tuple or a subclass with its layout")
        self.result = result
        self.view = mapping
        if self.view.shape[0] < _HEADER + slots * SLOT_BYTES:
            raise ValueError("the mapping is smaller than the table")
        self.mapping = mapping
        self.slots = slots
        self.mask = <uint64_t>(slots - 1)
        self.table = <Slot*>(&self.view[0] + _HEADER)
        self.mutex = <pthread_mutex_t*>(&self.view[0] + _MUTEX)

    def initialize(self):
        """Set up the mutex and header of a new, zero-filled table."""
        cdef pthread_mutexattr_t attributes
        cdef uint64_t* header = <uint64_t*>&self.view[0]
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED)
        pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST)
        memset(<void*>self.mutex, 0, sizeof(pthread_mutex_t))
        if pthread_mutex_init(self.mutex, &attributes) != 0:
            pthread_mutexattr_destroy(&attributes)
            raise OSError("pthread_mutex_init failed for the shared table")
        pthread_mutexattr_destroy(&attributes)
        header[1] = <uint64_t>self.slots
        header[0] = _MAGIC

    def check(self):
        """Tell whether the mapping contains an initialized table of this size."""
        cdef uint64_t* header = <uint64_t*>&self.view[0]
        return header[0] == _MAGIC and header[1] == <uint64_t>self.slots

    cdef Py_ssize_t _probe(self, uint64_t wanted, int64_t now, Request* requests, int count) noexcept nogil:
        cdef Py_ssize_t home = <Py_ssize_t>(wanted & self.mask)
        cdef Py_ssize_t free = -1
        cdef Py_ssize_t slot
        cdef int step, k
        cdef bint taken
        for step in range(_WINDOW):
            slot = <Py_ssize_t>((home + step) & self.mask)
            if self.table[slot].hash == wanted:
                return slot
            if free < 0 and (self.table[slot].hash == 0 or self.table[slot].tat <= now):
                taken = False
                for k in range(count):
                    if requests[k].slot == slot:
                        taken = True
                if not taken:
                    free = slot
        return free

    cdef bint _apply_locked(self, Request* requests, int count, int64_t cost, int64_t now) noexcept nogil:
        cdef int i
        cdef int64_t tat, base, allow_at
        cdef bint admitted = True
        cdef Request* r

        for i in range(count):
            r = &requests[i]
            r.slot = self._probe(r.hash, now, requests, i)
            r.stored_hash = r.hash
            if r.slot < 0:
                r.slot = self._probe(r.overflow, now, requests, i)
                r.stored_hash = r.overflow
            tat = 0
            if r.slot >= 0 and self.table[r.slot].hash == r.stored_hash:
                tat = self.table[r.slot].tat
            base = tat if tat > now else now
            r.new_tat = base + cost * r.interval
            allow_at = r.new_tat - r.tolerance
            if allow_at > now:
                r.allowed = False
                r.remaining = _floor_div(now + r.tolerance - base, r.interval)
                r.retry_after = allow_at - now
                r.reset_after = base - now
                r.new_tat = base
                if not r.shadow:
                    admitted = False
            else:
                r.allowed = True
                r.remaining = _floor_div(now + r.tolerance - r.new_tat, r.interval)
                r.retry_after = 0
                r.reset_after = r.new_tat - now

        if admitted:
            for i in range(count):
                r = &requests[i]
                if r.slot >= 0 and r.allowed:
                    self.table[r.slot].hash = r.stored_hash
                    self.table[r.slot].tat = r.new_tat
        return admitted

    def apply(self, limits, keys, int64_t cost, int64_t now):
        """Check and consume the buckets of one request, all or nothing.

        Returns ``(admitted, results)`` with one kernel result per policy,
        each of the ``result`` type; the TATs are stored only when the
        request is admitted.
        """
        cdef Request requests[32]
        cdef int count = len(keys)
        cdef int i
        cdef int status
        cdef bint admitted

        if count > _MAX:
            raise ValueError(f"at most {_MAX} policies per request")
        for i in range(count):
            limit = limits[i]
            requests[i].hash = _hash_text(keys[i])
            requests[i].overflow = (_hash_text(limit.id) ^ _OVERFLOW_SALT) or 1
            requests[i].interval = limit.interval
            requests[i].tolerance = limit.tolerance
            requests[i].shadow = limit.shadow
            requests[i].slot = -1

        with nogil:
            status = pthread_mutex_lock(self.mutex)
            if status == EOWNERDEAD:
                # A worker died holding the lock; the table is still valid.
                pthread_mutex_consistent(self.mutex)
                status = 0
            if status == 0:
                admitted = self._apply_locked(requests, count, cost, now)
                pthread_mutex_unlock(self.mutex)
        if status != 0:
            raise OSError(status, "locking the shared bucket table failed")

        results = []
        for i in range(count):
            results.append(_result(self.result, &requests[i]))
        return admitted, results
