"""Elementwise activations, forward and backward (kernels only; inputs validated by fastnn)."""
from cython cimport floating
from cython.parallel cimport prange
from _simd cimport act_forward, act_backward, fnn_expf

# The activation codes are the C enum of simd.h (FNN_ACTIVATION_LIST); names and codes come from
# there at build time.
cdef extern from "simd.h":
    int FNN_ACTIVATION_COUNT
    const char *fnn_activation_names[]
    const int fnn_activation_from_z[]

# Elementwise work below this many elements runs on one thread (no fork/join).
cdef Py_ssize_t PAR_MIN = 1 << 15
cdef Py_ssize_t BLOCK = 1 << 14


def activation_codes():
    """``{name: code}`` of every elementwise activation the kernels know (simd.h's list)."""
    return {fnn_activation_names[i].decode(): i for i in range(FNN_ACTIVATION_COUNT)}


def activations_from_z():
    """Names of the activations whose derivative the kernels write with the pre-activation Z
    (simd.h's FROM_Z column): their ``backward`` takes Z where the others take the output A."""
    return tuple(fnn_activation_names[i].decode() for i in range(FNN_ACTIVATION_COUNT)
                 if fnn_activation_from_z[i])


def forward_inplace(floating[::1] Z not None, int kind, double alpha, int num_threads):
    """Z <- g(Z) for a flat C-contiguous array; kind: a code of ``activation_codes()``."""
    cdef Py_ssize_t n = Z.shape[0], nb = (n + BLOCK - 1) // BLOCK, b, start, stop
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=n >= PAR_MIN):
            start = b * BLOCK
            stop = min(n, start + BLOCK)
            act_forward(&Z[start], stop - start, kind, <floating>alpha)


def backward(const floating[::1] A not None, const floating[::1] dA not None,
             floating[::1] dZ not None, int kind, double alpha, int num_threads):
    """dZ <- dA * g'(Z), g' written with the output A (with Z itself, passed as A, for the
    activations of ``activations_from_z()``); flat arrays of one length (caller checks)."""
    cdef Py_ssize_t n = A.shape[0], nb = (n + BLOCK - 1) // BLOCK, b, start, stop
    if dA.shape[0] != n or dZ.shape[0] != n:
        raise ValueError("activations.backward: A, dA and dZ must have one length")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=n >= PAR_MIN):
            start = b * BLOCK
            stop = min(n, start + BLOCK)
            act_backward(&A[start], &dA[start], &dZ[start], stop - start, kind, <floating>alpha)


def fast_expf(const float[::1] x not None, float[::1] out not None):
    """out <- exp(x) with the float32 polynomial exp of simd.h (for tests of its error bound)."""
    cdef Py_ssize_t i
    if out.shape[0] != x.shape[0]:
        raise ValueError("fast_expf: out must have the length of x")
    with nogil:
        for i in range(x.shape[0]):
            out[i] = fnn_expf(x[i])


