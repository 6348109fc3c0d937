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
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_DecodeASCII, PyUnicode_GET_LENGTH
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from ._gcra_common import MAX_EXACT, MICROSECONDS
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

__all__ = ["COMPILED", "Admission", "SharedTable", "key_hash", "monotonic_microseconds"]

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
cdef int64_t _MICROSECONDS = MICROSECONDS
_NOT_INITIALIZED = (
    "the shared table is not initialized (build it with SharedTable(mapping, fd, slots))"
)
cdef enum:
    # Longest "id";r= prefix of a state item: policy ids have at most 64 bytes.
    MAX_PREFIX = 72
    # One state item: the prefix, two 20-digit integers, ";t=" and ", ".
    MAX_ITEM = MAX_PREFIX + 45

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


cdef uint64_t _fnv(uint64_t value, const unsigned char* data, Py_ssize_t length) noexcept nogil:
    # FNV-1a is a running state, so hashing "a" then "b" equals hashing "ab".
    cdef Py_ssize_t i
    for i in range(length):
        value = (value ^ data[i]) * _FNV_PRIME
    return value


cdef uint64_t _continue_text(uint64_t value, str text) except? 0:
    # An ASCII string is its own UTF-8: hash it in place, without a copy.
    if PyUnicode_IS_COMPACT_ASCII(text):
        value = _fnv(
            value, <const unsigned char*>PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text)
        )
    else:
        data = text.encode("utf-8", "surrogatepass")
        value = _fnv(value, <const unsigned char*>(<bytes>data), len(data))
    return value if value != 0 else 1


cdef uint64_t _hash_text(str text) except? 0:
    return _continue_text(_FNV_OFFSET, text)


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


cdef Py_ssize_t _write_int(char* out, int64_t value) noexcept nogil:
    """Write the decimal digits of ``value`` (at least 0) and return their count."""
    cdef char digits[20]
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t i
    if value <= 0:
        out[0] = 48  # "0"
        return 1
    while value > 0:
        digits[count] = <char>(48 + value % 10)
        value //= 10
        count += 1
    for i in range(count):
        out[i] = digits[count - 1 - i]
    return count


cdef class Admission:
    """The policies of one route, prepared for :meth:`SharedTable.admit`.

    Every policy is keyed by the client address alone (its bucket key is
    ``id|address``) and none is in shadow mode. The hash state after each
    ``id|`` is computed here once, so a request hashes only its address.
    With ``fields`` true, an admitted request gets its ``RateLimit-Policy``
    and ``RateLimit`` fields formatted in C.
    """

    cdef readonly tuple limits
    cdef readonly int64_t cost
    cdef int count
    cdef uint64_t prefix_hash[32]
    cdef uint64_t overflow[32]
    cdef int64_t interval[32]
    cdef int64_t tolerance[32]
    cdef object policy_field
    cdef bytes prefixes

    def __init__(self, limits, int64_t cost, *, bint fields=True):
        cdef int i
        # admit() reads count entries of the arrays and of prefixes. Until
        # this call has filled them all, count is 0 and admit() raises, also
        # when __init__ runs again on a plan in use and fails.
        self.count = 0
        limits = tuple(limits)
        if not 0 < len(limits) <= _MAX:
            raise ValueError(f"expected 1 to {_MAX} policies")
        prefixes = []
        for i in range(len(limits)):
            limit = limits[i]
            if limit.shadow:
                raise ValueError(f"policy {limit.id!r} is in shadow mode")
            head = (limit.id + "|").encode("ascii")
            self.prefix_hash[i] = _fnv(_FNV_OFFSET, <const unsigned char*>head, len(head))
            self.overflow[i] = (_hash_text(limit.id) ^ _OVERFLOW_SALT) or 1
            self.interval[i] = limit.interval
            self.tolerance[i] = limit.tolerance
            prefix = limit.state_prefix.encode("ascii")
            if len(prefix) > MAX_PREFIX:
                raise ValueError(f"policy id {limit.id!r} is too long")
            prefixes.append(prefix)
        # The state prefixes back to back, each after a length byte.
        self.prefixes = b"".join(bytes((len(prefix),)) + prefix for prefix in prefixes)
        self.policy_field = None
        if fields:
            items = ", ".join(limit.policy_item for limit in limits)
            self.policy_field = ("RateLimit-Policy", items)
        self.limits = limits
        self.cost = cost
        self.count = len(limits)


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
        if self.table == NULL:
            raise ValueError(_NOT_INITIALIZED)
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

    def admit(self, Admission plan not None, str client not None, now=None):
        """Check and consume the buckets of ``plan`` for ``client``, all or nothing.

        Returns the response fields of an admitted request (an empty list
        when the plan formats none), or ``None`` when a policy denied it and
        nothing was consumed. ``now`` defaults to ``CLOCK_MONOTONIC``.
        """
        cdef Request requests[32]
        cdef int count = plan.count
        cdef int i
        cdef int status
        cdef bint admitted
        cdef int64_t at
        cdef timespec clock

        if count == 0:
            raise ValueError(
                "the admission contains no policies (build it with Admission(limits, cost))"
            )
        if self.table == NULL:
            raise ValueError(_NOT_INITIALIZED)
        for i in range(count):
            requests[i].hash = _continue_text(plan.prefix_hash[i], client)
            requests[i].overflow = plan.overflow[i]
            requests[i].interval = plan.interval[i]
            requests[i].tolerance = plan.tolerance[i]
            requests[i].shadow = False
            requests[i].slot = -1
        if now is None:
            clock_gettime(CLOCK_MONOTONIC, &clock)
            at = <int64_t>clock.tv_sec * 1000000 + clock.tv_nsec // 1000
        else:
            at = now

        with nogil:
            status = pthread_mutex_lock(self.mutex)
            if status == EOWNERDEAD:
                # A worker died holding the lock; the table is still valid.
                pthread_mutex_consistent(self.mutex)
                status = 0
            if status == 0:
                admitted = self._apply_locked(requests, count, plan.cost, at)
                pthread_mutex_unlock(self.mutex)
        if status != 0:
            raise OSError(status, "locking the shared bucket table failed")
        if not admitted:
            return None
        if plan.policy_field is None:
            return []
        return [plan.policy_field, ("RateLimit", _state_field(plan, requests))]


cdef str _state_field(Admission plan, Request* requests):
    """Format the ``RateLimit`` field of an admitted request."""
    cdef char text[32 * MAX_ITEM]
    cdef Py_ssize_t length = 0
    cdef const unsigned char* prefixes = plan.prefixes
    cdef Py_ssize_t offset = 0
    cdef Py_ssize_t size
    cdef int i
    for i in range(plan.count):
        if i:
            text[length] = 44  # ","
            text[length + 1] = 32  # " "
            length += 2
        size = prefixes[offset]
        memcpy(&text[length], &prefixes[offset + 1], size)
        offset += size + 1
        length += size
        length += _write_int(&text[length], requests[i].remaining)
        memcpy(&text[length], b";t=", 3)
        length += 3
        # Seconds until the bucket is full again, rounded up.
        length += _write_int(
            &text[length], (requests[i].reset_after + _MICROSECONDS - 1) // _MICROSECONDS
        )
    return PyUnicode_DecodeASCII(text, length, NULL)
