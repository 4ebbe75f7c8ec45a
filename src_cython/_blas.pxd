# Row-major GEMM over scipy.linalg.cython_blas (column-major Fortran BLAS).
#
# Row-major C (M x N) = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so the operands and
# their transpose flags are swapped (scikit-learn, sklearn/utils/_cython_blas.pyx, _gemm RowMajor).
# A row-major matrix with leading dimension ld is the same memory as its column-major transpose.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "fnn_omp.h" nogil:
    int fnn_omp_enabled()
    int fnn_omp_max_threads()
    int fnn_omp_version()
    void fnn_install_blas_hook(size_t addr)
    int fnn_blas_single_begin()
    void fnn_blas_single_end(int previous)


cdef inline void gemm_rm(bint trans_a, bint trans_b, int M, int N, int K,
                         floating alpha, const floating *A, int lda,
                         const floating *B, int ldb,
                         floating beta, floating *C, int ldc) noexcept nogil:
    """C[M, N] = alpha * op(A) @ op(B) + beta * C, all row-major; op(A) is (M, K), op(B) (K, N)."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if M <= 0 or N <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float *>B, &ldb, <float *>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double *>B, &ldb, <double *>A, &lda, &beta, C, &ldc)

