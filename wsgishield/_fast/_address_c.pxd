# Declarations that other compiled kernels cimport to parse addresses with
# the address kernel's grammar, without building Python objects.

from libc.stdint cimport uint64_t

cdef int parse_ascii_address(const unsigned char* text, Py_ssize_t start, Py_ssize_t end,
                             uint64_t* high, uint64_t* low) noexcept nogil
