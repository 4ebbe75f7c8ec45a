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
    void fnn_blas_single_enter()
    void fnn_blas_single_end(int previous)

cdef extern from "gemm.h" nogil:
    int fnn_gemm_get_level()
    int fnn_gemm_set_level(int level)
    int fnn_gemm_own(Py_ssize_t M)
    int fnn_gemm_auto
    const char *fnn_gemm_names[]
    int fnn_sgemm(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A,
                  Py_ssize_t ars, Py_ssize_t acs, const float *B, Py_ssize_t brs, Py_ssize_t bcs,
                  int beta1, float *C, Py_ssize_t ldc)

cdef extern from "bgemm.h" nogil:
    int fnn_bf16_get_level()
    int fnn_bf16_set_level(int level)
    const char *fnn_bf16_names[]
    int fnn_bgemm(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A,
                  Py_ssize_t ars, Py_ssize_t acs, const float *B, Py_ssize_t brs, Py_ssize_t bcs,
                  int beta1, float *C, Py_ssize_t ldc, const unsigned short *Bpk, Py_ssize_t np,
                  Py_ssize_t panel0, int ctrans)
    void fnn_bgemm_pack_full(Py_ssize_t K, Py_ssize_t N, const float *B, Py_ssize_t brs,
                             Py_ssize_t bcs, unsigned short *Bpk)
    int fnn_bgemm_vnni(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A,
                       Py_ssize_t ars, Py_ssize_t acs, const unsigned short *A16,
                       Py_ssize_t lda16, const unsigned short *Bv, Py_ssize_t ldb2,
                       Py_ssize_t pstride, int beta1, float *C, Py_ssize_t ldc, int ctrans)

cdef inline void gemm_rm(bint trans_a, bint trans_b, int M, int N, int K,
                         floating alpha, const floating *A, int lda,
                         const floating *B, int ldb,
                         floating beta, floating *C, int ldc, bint bf16=False,
                         const unsigned short *Bpk=NULL, Py_ssize_t bpk_panels=0,
                         Py_ssize_t bpk_panel0=0) noexcept nogil:
    """C[M, N] = alpha * op(A) @ op(B) + beta * C, all row-major; op(A) is (M, K), op(B) (K, N).

    ``bf16`` (float32 only, alpha 1, beta 0 or 1): the mixed-precision GEMM of bgemm.h, both
    operands rounded to bfloat16, float32 sums; ``Bpk`` (optional): op(B) already packed by
    ``fnn_bgemm_pack_full`` (``bpk_panels`` panels of 32 columns; op(B)'s column 0 is panel
    ``bpk_panel0``), B itself then unused.

    float32 with alpha 1 and beta 0 or 1 (every call in fastnn) runs fastnn's own GEMM (gemm.h)
    where ``fnn_gemm_own`` says so; everything else runs the system BLAS.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int level
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if bf16 and alpha == 1 and (beta == 0 or beta == 1):
            if trans_a and not trans_b and Bpk == NULL and M > N and K > N:
                # a weight gradient X^T dZ over many rows (a convolution's im2col block): C^T =
                # dZ^T X packs the smaller operand transposed and the larger one row-major, the
                # fast way (over few rows, e.g. a Dense layer's batch, writing C^T costs more)
                if fnn_bgemm(fnn_bf16_get_level(), N, M, K, <const float *>B, 1, ldb,
                             <const float *>A, lda, 1, beta == 1, <float *>C, ldc, NULL, 0, 0,
                             1) == 0:
                    return
            elif fnn_bgemm(fnn_bf16_get_level(), M, N, K, <const float *>A, 1 if trans_a else lda,
                           lda if trans_a else 1, <const float *>B, 1 if trans_b else ldb,
                           ldb if trans_b else 1, beta == 1, <float *>C, ldc, Bpk, bpk_panels,
                           bpk_panel0, 0) == 0:
                return
        level = fnn_gemm_get_level()
        if alpha == 1 and (beta == 0 or beta == 1) and fnn_gemm_own(M):
            if fnn_sgemm(level, M, N, K, <const float *>A, 1 if trans_a else lda,
                         lda if trans_a else 1, <const float *>B, 1 if trans_b else ldb,
                         ldb if trans_b else 1, beta == 1, <float *>C, ldc) == 0:
                return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float *>B, &ldb, <float *>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double *>B, &ldb, <double *>A, &lda, &beta, C, &ldc)



cdef inline str gemm_kernel_name(int level):
    """Set (level >= 0 forces, -1 back to automatic, -2 leaves it) and name this module's float32
    GEMM kernel: "avx512", "avx2", "generic", "blas", or "avx2+blas" (automatic on an AVX2 CPU:
    fastnn's kernel below 6 rows, the system BLAS above)."""
    if level != -2:
        fnn_gemm_set_level(level)
    cdef int cur = fnn_gemm_get_level()
    name = fnn_gemm_names[cur].decode()
    return name + "+blas" if cur == 2 and fnn_gemm_auto else name


cdef inline str bf16_kernel_name(int level):
    """Set (level >= 0 forces, -1 back to automatic, -2 leaves it) and name this module's bfloat16
    GEMM kernel: "amx", "avx512_bf16" or "emulated"."""
    if level != -2:
        fnn_bf16_set_level(level)
    return fnn_bf16_names[fnn_bf16_get_level()].decode()


cdef inline const unsigned short *packed_bf16_data(const unsigned short[::1] P, Py_ssize_t K,
                                                   Py_ssize_t N, bint bf16,
                                                   str name) except? NULL:
    """The data of a matrix (K, N) packed by fastnn._gemm.pack_bf16 (its size checked), or NULL
    when there is none (or no bf16)."""
    if P is None or not bf16:
        return NULL
    cdef Py_ssize_t want = ((K + 31) // 32) * 32 * (((N + 31) // 32) * 32)
    if P.shape[0] != want:
        raise ValueError(f"{name} has {P.shape[0]} values, a packed ({K}, {N}) matrix has {want}")
    return &P[0] if want > 0 else NULL
