# Declarations of the C helpers in simd.h and fused-type (float/double) wrappers around them.
from cython cimport floating
from libc.stdint cimport int64_t

cdef extern from "simd.h" nogil:
    const char *fnn_simd_path()
    float fnn_expf(float x)
    void fnn_act_forward_f32(float *Z, long n, int kind, float alpha)
    void fnn_act_forward_f64(double *Z, long n, int kind, double alpha)
    void fnn_act_forward_keep_f32(float *Z, float *Zs, long n, int kind, float alpha)
    void fnn_act_forward_keep_f64(double *Z, double *Zs, long n, int kind, double alpha)
    void fnn_act_backward_f32(const float *A, const float *dA, float *dZ, long n, int kind, float alpha)
    void fnn_act_backward_f64(const double *A, const double *dA, double *dZ, long n, int kind, double alpha)
    void fnn_fill_rows_f32(float *Z, long rows, long cols, long ld, const float *b)
    void fnn_fill_rows_f64(double *Z, long rows, long cols, long ld, const double *b)
    void fnn_col_sum_f32(const float *dZ, long rows, long cols, long ld, float *db, int accumulate)
    void fnn_col_sum_f64(const double *dZ, long rows, long cols, long ld, double *db, int accumulate)
    double fnn_softmax_ce_row_f32(const float *z, long K, long label, float *dz, float scale, float *prob)
    double fnn_softmax_ce_row_f64(const double *z, long K, long label, double *dz, double scale, double *prob)
    void fnn_softmax_ce_rows_f32(const float *z, long rows, long K, const int64_t *labels, float *dz, float scale, double *row_loss)


cdef inline void act_forward(floating *Z, Py_ssize_t n, int kind, floating alpha) noexcept nogil:
    """Z <- g(Z) in place; kind: a code of simd.h's FNN_ACTIVATION_LIST."""
    if floating is float:
        fnn_act_forward_f32(Z, n, kind, alpha)
    else:
        fnn_act_forward_f64(Z, n, kind, alpha)


cdef inline void act_forward_keep(floating *Z, floating *Zs, Py_ssize_t n, int kind,
                                  floating alpha) noexcept nogil:
    """Z <- g(Z) in place, and, for the activations whose derivative needs the pre-activation
    (gelu, silu) and Zs not NULL, Zs <- the old Z in the same loop (the others ignore Zs)."""
    if floating is float:
        fnn_act_forward_keep_f32(Z, Zs, n, kind, alpha)
    else:
        fnn_act_forward_keep_f64(Z, Zs, n, kind, alpha)


cdef inline void act_backward(const floating *A, const floating *dA, floating *dZ, Py_ssize_t n,
                              int kind, floating alpha) noexcept nogil:
    """dZ <- dA * g'(Z), with g' written in terms of the output A, or of the pre-activation Z
    passed as A for gelu and silu (dZ may alias dA)."""
    if floating is float:
        fnn_act_backward_f32(A, dA, dZ, n, kind, alpha)
    else:
        fnn_act_backward_f64(A, dA, dZ, n, kind, alpha)


cdef inline void fill_rows(floating *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                           const floating *b) noexcept nogil:
    if floating is float:
        fnn_fill_rows_f32(Z, rows, cols, ld, b)
    else:
        fnn_fill_rows_f64(Z, rows, cols, ld, b)


cdef inline void col_sum(const floating *dZ, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         floating *db, bint accumulate) noexcept nogil:
    if floating is float:
        fnn_col_sum_f32(dZ, rows, cols, ld, db, accumulate)
    else:
        fnn_col_sum_f64(dZ, rows, cols, ld, db, accumulate)


cdef inline double softmax_ce_row(const floating *z, Py_ssize_t K, Py_ssize_t label, floating *dz,
                                  floating scale, floating *prob) noexcept nogil:
    if floating is float:
        return fnn_softmax_ce_row_f32(z, K, label, dz, scale, prob)
    else:
        return fnn_softmax_ce_row_f64(z, K, label, dz, scale, prob)
