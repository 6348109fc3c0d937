# Declarations that other compiled kernels cimport to join the chain of
# compiled request paths.

cdef class Hop:
    cdef object _app
    cdef Hop _next_hop

    cdef object call(self, dict environ, object start_response)
    cdef object forward(self, dict environ, object start_response)
