"""OpenMP thread count and build facts (kernels only, no API)."""
from _blas cimport fnn_omp_enabled, fnn_omp_max_threads, fnn_omp_version

from _simd cimport fnn_simd_path


def openmp_enabled():
    """True if the extension was compiled with OpenMP."""
    return bool(fnn_omp_enabled())


def openmp_version():
    """The ``_OPENMP`` date macro of the compiler (0 without OpenMP)."""
    return fnn_omp_version()


def omp_max_threads():
    """``omp_get_max_threads()``: OMP_NUM_THREADS or a threadpoolctl limit; 1 without OpenMP."""
    return fnn_omp_max_threads()


def simd_path():
    """The instruction-set clone the C helpers dispatch to on this CPU."""
    return fnn_simd_path().decode()
