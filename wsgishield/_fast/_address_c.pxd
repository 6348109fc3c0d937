# Declarations that other compiled kernels cimport to parse addresses with
# the same code as ``parse_address``, without building Python objects.

from libc.stdint cimport uint32_t, uint64_t

cdef bint _parse_ipv4(str text, Py_ssize_t start, Py_ssize_t end, uint32_t* out)
cdef bint _parse_ipv6(str text, Py_ssize_t start, Py_ssize_t end, uint64_t* high, uint64_t* low)
