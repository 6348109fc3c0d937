# Declarations that other compiled kernels cimport to count header fields
# without building a result tuple.

cdef int count_header_fields(dict environ, Py_ssize_t* count,
                             Py_ssize_t* size) except -1
