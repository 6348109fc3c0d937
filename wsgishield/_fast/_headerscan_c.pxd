# Declarations that other compiled kernels cimport to classify environ keys
# as the header scan kernel does.

from cpython.object cimport PyObject


cdef extern from "Python.h":
    Py_ssize_t _key_length "PyUnicode_GET_LENGTH"(PyObject* key)
    Py_UCS4 _key_char "PyUnicode_READ_CHAR"(PyObject* key, Py_ssize_t index)


cdef inline bint is_http_key(PyObject* key) noexcept:
    """Tell whether a ``str`` environ key names a header field: ``HTTP_*``."""
    return (
        _key_length(key) >= 5
        and _key_char(key, 0) == u"H"
        and _key_char(key, 1) == u"T"
        and _key_char(key, 2) == u"T"
        and _key_char(key, 3) == u"P"
        and _key_char(key, 4) == u"_"
    )
