# Declarations that other compiled kernels cimport to pre-scan a body
# without building a result tuple.

cdef int scan_buffer(const unsigned char* data, Py_ssize_t n, Py_ssize_t max_depth,
                     Py_ssize_t max_tokens, Py_ssize_t* offset) noexcept nogil
