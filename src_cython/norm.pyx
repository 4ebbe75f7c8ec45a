"""Dropout, batch normalisation and layer normalisation kernels (inputs checked by fastnn).

Every array is C-contiguous; a normalisation input ``(N, ..., C)`` arrives as its 2-D view
``(M, C)`` with ``M`` the product of the leading axes.

Determinism: results do not depend on the number of threads.
- Dropout is elementwise; its mask comes from a counter-based hash of (seed, step, element index)
  (``norm.h``), with no generator state shared between threads.
- Per-channel sums over ``M`` rows (batch norm statistics and both layers' parameter gradients)
  are taken in float64 over fixed chunks of rows (``chunk_rows``: a function of ``M`` and ``C``
  only), one partial row per chunk, and the partial rows are added in chunk order.
- Batch statistics are two-pass (mean, then the mean of squared deviations), in float64, so
  float32 inputs with a large mean keep their variance.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport malloc, free

cdef extern from "norm.h" nogil:
    uint64_t fnn_dropout_key(uint64_t seed, uint64_t step)
    uint8_t fnn_dropout_keep(uint64_t key, uint64_t i, uint64_t threshold)

# Below this many elements a kernel runs on one thread (fork/join costs more than it saves).
cdef Py_ssize_t PAR_MIN = 1 << 15
# Elementwise work is cut into blocks of this many elements (dropout) or about this many (rows).
cdef Py_ssize_t BLOCK = 1 << 14
# A reduction chunk holds about this many elements (whole rows).
cdef Py_ssize_t CHUNK_ELEMS = 1 << 14
# 2^53: dropout compares the top 53 bits of each hash with floor(rate * 2^53)
cdef double TWO53 = 9007199254740992.0


cdef inline Py_ssize_t chunk_rows(Py_ssize_t M, Py_ssize_t C) noexcept nogil:
    """Rows per reduction chunk: a function of the shape only, never of the thread count."""
    cdef Py_ssize_t r = CHUNK_ELEMS // C if C > 0 else M
    return r if r > 0 else 1


cdef int _check_threads(int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return 0


cdef double *_scratch(Py_ssize_t n) except NULL:
    """n doubles of scratch (the chunks' partial sums); the caller frees them."""
    cdef double *p = <double *>malloc((n if n > 0 else 1) * sizeof(double))
    if p == NULL:
        raise MemoryError(f"cannot allocate {n} doubles of scratch")
    return p


# ---- dropout -----------------------------------------------------------------------------------

def dropout_forward(const floating[::1] X not None, floating[::1] Y not None,
                    uint8_t[::1] mask not None, double rate, uint64_t seed, uint64_t step,
                    int num_threads):
    """Inverted dropout of a flat array of length L, ``0 <= rate < 1``.

    mask[i] <- 0 with probability ``rate`` (the hash of (seed, step, i), ``norm.h``), else 1;
    Y[i] <- X[i] * (mask[i] / (1 - rate)). Y may be X.
    """
    cdef Py_ssize_t L = X.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef uint64_t key = fnn_dropout_key(seed, step)
    cdef uint64_t threshold
    cdef floating scale
    if Y.shape[0] != L or mask.shape[0] != L:
        raise ValueError("dropout_forward: X, Y and mask must have one length")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_forward: rate must be in [0, 1), got {rate}")
    _check_threads(num_threads)
    threshold = <uint64_t>(rate * TWO53)
    scale = <floating>(1.0 / (1.0 - rate))
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static',
                        use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            for i in range(start, stop):
                mask[i] = fnn_dropout_keep(key, <uint64_t>i, threshold)
            for i in range(start, stop):
                Y[i] = X[i] * (<floating>mask[i] * scale)


def dropout_backward(const floating[::1] dY not None, const uint8_t[::1] mask not None,
                     floating[::1] dX not None, double rate, int num_threads):
    """dX[i] <- dY[i] * (mask[i] / (1 - rate)) for flat arrays of length L. dX may be dY."""
    cdef Py_ssize_t L = dY.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef floating scale
    if dX.shape[0] != L or mask.shape[0] != L:
        raise ValueError("dropout_backward: dY, mask and dX must have one length")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_backward: rate must be in [0, 1), got {rate}")
    _check_threads(num_threads)
    scale = <floating>(1.0 / (1.0 - rate))
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static',
                        use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            for i in range(start, stop):
                dX[i] = dY[i] * (<floating>mask[i] * scale)


# ---- batch normalisation -----------------------------------------------------------------------

cdef void _col_sum(const floating[:, ::1] X, const double[::1] shift, bint squares,
                   Py_ssize_t r0, Py_ssize_t r1, double *acc) noexcept nogil:
    """acc[c] <- sum over rows r0..r1-1 of X[r, c] (squares: of (X[r, c] - shift[c])^2)."""
    cdef Py_ssize_t C = X.shape[1], r, c
    cdef double d
    for c in range(C):
        acc[c] = 0.0
    for r in range(r0, r1):
        if squares:
            for c in range(C):
                d = <double>X[r, c] - shift[c]
                acc[c] = acc[c] + d * d
        else:
            for c in range(C):
                acc[c] = acc[c] + <double>X[r, c]


cdef void _combine(const double *part, Py_ssize_t nb, Py_ssize_t width, double *out,
                   double scale) noexcept nogil:
    """out[j] <- scale * sum_b part[b * width + j] for j < width: the chunks' partial rows added
    in chunk order."""
    cdef Py_ssize_t b, j
    cdef double s
    for j in range(width):
        s = 0.0
        for b in range(nb):
            s = s + part[b * width + j]
        out[j] = s * scale


cdef void _affine_rows(const floating[:, ::1] X, const double[::1] mean, const double *a,
                       const floating[::1] bias, floating[:, ::1] Y, Py_ssize_t r0,
                       Py_ssize_t r1) noexcept nogil:
    """Y[r, c] <- (X[r, c] - mean[c]) * a[c] + bias[c] for rows r0..r1-1, in float64."""
    cdef Py_ssize_t C = X.shape[1], r, c
    for r in range(r0, r1):
        for c in range(C):
            Y[r, c] = <floating>((<double>X[r, c] - mean[c]) * a[c] + <double>bias[c])


def batchnorm_forward(const floating[:, ::1] X not None, const floating[::1] weight not None,
                      const floating[::1] bias not None, double[::1] mean not None,
                      double[::1] var not None, double[::1] invstd not None,
                      floating[:, ::1] Y not None, double eps, bint training, int num_threads):
    """Batch normalisation of X (M, C) over its rows, per channel (column).

    training: mean (C,) <- the column means, var (C,) <- the biased column variances (float64,
    two passes); otherwise mean and var are given (the running statistics). Then
    invstd (C,) <- 1 / sqrt(var + eps) and Y (M, C) <- (X - mean) * invstd * weight + bias.
    """
    cdef Py_ssize_t M = X.shape[0], C = X.shape[1]
    cdef Py_ssize_t rb = chunk_rows(M, C), nb = (M + rb - 1) // rb, b, c, r0, r1
    cdef bint threads = M * C >= PAR_MIN
    if (weight.shape[0] != C or bias.shape[0] != C or mean.shape[0] != C or var.shape[0] != C
            or invstd.shape[0] != C or Y.shape[0] != M or Y.shape[1] != C):
        raise ValueError("batchnorm_forward: array shapes do not fit X (M, C)")
    if training and M < 1:
        raise ValueError("batchnorm_forward: training needs at least one row")
    if not eps >= 0.0:
        raise ValueError(f"batchnorm_forward: eps must be >= 0, got {eps}")
    _check_threads(num_threads)
    if C == 0:
        return
    cdef double *a = _scratch(C + (nb * C if training else 0))
    cdef double *part = a + C
    try:
        with nogil:
            if training:
                for b in prange(nb, num_threads=num_threads, schedule='static',
                                use_threads_if=threads):
                    r0 = b * rb
                    r1 = min(M, r0 + rb)
                    _col_sum(X, mean, False, r0, r1, part + b * C)
                _combine(part, nb, C, &mean[0], 1.0 / <double>M)
                for b in prange(nb, num_threads=num_threads, schedule='static',
                                use_threads_if=threads):
                    r0 = b * rb
                    r1 = min(M, r0 + rb)
                    _col_sum(X, mean, True, r0, r1, part + b * C)
                _combine(part, nb, C, &var[0], 1.0 / <double>M)
            for c in range(C):
                invstd[c] = 1.0 / sqrt(var[c] + eps)
                a[c] = invstd[c] * <double>weight[c]
            for b in prange(nb, num_threads=num_threads, schedule='static',
                            use_threads_if=threads):
                r0 = b * rb
                r1 = min(M, r0 + rb)
                _affine_rows(X, mean, a, bias, Y, r0, r1)
    finally:
        free(a)


cdef void _bn_grad_sums(const floating[:, ::1] X, const floating[:, ::1] dY,
                        const double[::1] mean, const double[::1] invstd, Py_ssize_t r0,
                        Py_ssize_t r1, double *acc) noexcept nogil:
    """acc[c] <- sum dY[r, c] * xhat[r, c] and acc[C + c] <- sum dY[r, c] over rows r0..r1-1,
    with xhat = (X - mean) * invstd."""
    cdef Py_ssize_t C = X.shape[1], r, c
    cdef double g
    for c in range(2 * C):
        acc[c] = 0.0
    for r in range(r0, r1):
        for c in range(C):
            g = <double>dY[r, c]
            acc[c] = acc[c] + g * (<double>X[r, c] - mean[c]) * invstd[c]
            acc[C + c] = acc[C + c] + g


cdef void _bn_dx_rows(const floating[:, ::1] X, const floating[:, ::1] dY,
                      const double[::1] mean, const double[::1] invstd, const double *a,
                      const double *sums, double inv_m, bint training,
                      floating[:, ::1] dX, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """dX rows r0..r1-1; sums[c] = sum dY * xhat, sums[C + c] = sum dY (see batchnorm_backward)."""
    cdef Py_ssize_t C = X.shape[1], r, c
    cdef double xhat
    for r in range(r0, r1):
        if training:
            for c in range(C):
                xhat = (<double>X[r, c] - mean[c]) * invstd[c]
                dX[r, c] = <floating>(a[c] * (<double>dY[r, c]
                                              - (sums[C + c] + xhat * sums[c]) * inv_m))
        else:
            for c in range(C):
                dX[r, c] = <floating>(a[c] * <double>dY[r, c])


def batchnorm_backward(const floating[:, ::1] X not None, const floating[:, ::1] dY not None,
                       const floating[::1] weight not None, const double[::1] mean not None,
                       const double[::1] invstd not None, floating[:, ::1] dX,
                       floating[::1] dweight not None, floating[::1] dbias not None,
                       bint training, int num_threads):
    """Backward of ``Y = (X - mean) * invstd * weight + bias`` over X (M, C).

    dweight (C,) <- sum_r dY * xhat, dbias (C,) <- sum_r dY (xhat = (X - mean) * invstd), and,
    unless dX is None, dX (M, C) <- weight * invstd * (dY - (dbias + xhat * dweight) / M) when
    the statistics were the batch's own (training), else weight * invstd * dY (fixed statistics).
    dX may be dY.
    """
    cdef Py_ssize_t M = X.shape[0], C = X.shape[1]
    cdef Py_ssize_t rb = chunk_rows(M, C), nb = (M + rb - 1) // rb, b, c, r0, r1
    cdef bint threads = M * C >= PAR_MIN
    cdef bint need_dx = dX is not None
    cdef double inv_m = 1.0 / <double>M if M > 0 else 0.0
    if (dY.shape[0] != M or dY.shape[1] != C or weight.shape[0] != C or mean.shape[0] != C
            or invstd.shape[0] != C or dweight.shape[0] != C or dbias.shape[0] != C
            or (need_dx and (dX.shape[0] != M or dX.shape[1] != C))):
        raise ValueError("batchnorm_backward: array shapes do not fit X (M, C)")
    _check_threads(num_threads)
    if C == 0:
        return
    cdef double *a = _scratch(3 * C + nb * 2 * C)
    cdef double *sums = a + C
    cdef double *part = a + 3 * C
    try:
        with nogil:
            for b in prange(nb, num_threads=num_threads, schedule='static',
                            use_threads_if=threads):
                r0 = b * rb
                r1 = min(M, r0 + rb)
                _bn_grad_sums(X, dY, mean, invstd, r0, r1, part + b * 2 * C)
            _combine(part, nb, 2 * C, sums, 1.0)
            for c in range(C):
                dweight[c] = <floating>sums[c]
                dbias[c] = <floating>sums[C + c]
                a[c] = <double>weight[c] * invstd[c]
            if need_dx:
                for b in prange(nb, num_threads=num_threads, schedule='static',
                                use_threads_if=threads):
                    r0 = b * rb
                    r1 = min(M, r0 + rb)
                    _bn_dx_rows(X, dY, mean, invstd, a, sums, inv_m, training, dX, r0, r1)
    finally:
        free(a)


# ---- layer normalisation -----------------------------------------------------------------------

cdef void _ln_rows(const floating[:, ::1] X, const floating[::1] weight,
                   const floating[::1] bias, double[::1] mean, double[::1] invstd,
                   floating[:, ::1] Y, double eps, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t C = X.shape[1], r, c
    cdef double s, d, m, inv
    for r in range(r0, r1):
        s = 0.0
        for c in range(C):
            s = s + <double>X[r, c]
        m = s / <double>C
        s = 0.0
        for c in range(C):
            d = <double>X[r, c] - m
            s = s + d * d
        inv = 1.0 / sqrt(s / <double>C + eps)
        mean[r] = m
        invstd[r] = inv
        for c in range(C):
            Y[r, c] = <floating>((<double>X[r, c] - m) * inv * <double>weight[c]
                                 + <double>bias[c])


def layernorm_forward(const floating[:, ::1] X not None, const floating[::1] weight not None,
                      const floating[::1] bias not None, double[::1] mean not None,
                      double[::1] invstd not None, floating[:, ::1] Y not None, double eps,
                      int num_threads):
    """Layer normalisation of each row of X (M, C) (float64, two passes):
    mean (M,) <- the row means, invstd (M,) <- 1 / sqrt(biased row variance + eps),
    Y (M, C) <- (X - mean) * invstd * weight + bias."""
    cdef Py_ssize_t M = X.shape[0], C = X.shape[1]
    cdef Py_ssize_t rb = chunk_rows(M, C), nb = (M + rb - 1) // rb, b, r0, r1
    if (weight.shape[0] != C or bias.shape[0] != C or mean.shape[0] != M
            or invstd.shape[0] != M or Y.shape[0] != M or Y.shape[1] != C):
        raise ValueError("layernorm_forward: array shapes do not fit X (M, C)")
    if C < 1:
        raise ValueError("layernorm_forward: need at least one column")
    if not eps >= 0.0:
        raise ValueError(f"layernorm_forward: eps must be >= 0, got {eps}")
    _check_threads(num_threads)
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static',
                        use_threads_if=M * C >= PAR_MIN):
            r0 = b * rb
            r1 = min(M, r0 + rb)
            _ln_rows(X, weight, bias, mean, invstd, Y, eps, r0, r1)


cdef void _ln_back_rows(const floating[:, ::1] X, const floating[:, ::1] dY,
                        const floating[::1] weight, const double[::1] mean,
                        const double[::1] invstd, bint need_dx, floating[:, ::1] dX,
                        double *acc, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1-1: acc[c] <- sum dY * xhat, acc[C + c] <- sum dY, and dX unless need_dx is
    False (see layernorm_backward)."""
    cdef Py_ssize_t C = X.shape[1], r, c
    cdef double m, inv, xhat, g, dy, s1, s2
    for c in range(2 * C):
        acc[c] = 0.0
    for r in range(r0, r1):
        m = mean[r]
        inv = invstd[r]
        s1 = 0.0
        s2 = 0.0
        for c in range(C):
            dy = <double>dY[r, c]
            xhat = (<double>X[r, c] - m) * inv
            acc[c] = acc[c] + dy * xhat
            acc[C + c] = acc[C + c] + dy
            g = dy * <double>weight[c]
            s1 = s1 + g
            s2 = s2 + g * xhat
        if need_dx:
            s1 = s1 / <double>C
            s2 = s2 / <double>C
            for c in range(C):
                xhat = (<double>X[r, c] - m) * inv
                g = <double>dY[r, c] * <double>weight[c]
                dX[r, c] = <floating>(inv * (g - s1 - xhat * s2))


def layernorm_backward(const floating[:, ::1] X not None, const floating[:, ::1] dY not None,
                       const floating[::1] weight not None, const double[::1] mean not None,
                       const double[::1] invstd not None, floating[:, ::1] dX,
                       floating[::1] dweight not None, floating[::1] dbias not None,
                       int num_threads):
    """Backward of layer normalisation over the rows of X (M, C), xhat = (X - mean) * invstd:
    dweight (C,) <- sum_r dY * xhat, dbias (C,) <- sum_r dY, and, unless dX is None,
    dX <- invstd * (g - mean_c(g) - xhat * mean_c(g * xhat)) with g = dY * weight. dX may be
    dY."""
    cdef Py_ssize_t M = X.shape[0], C = X.shape[1]
    cdef Py_ssize_t rb = chunk_rows(M, C), nb = (M + rb - 1) // rb, b, c, r0, r1
    cdef bint need_dx = dX is not None
    if (dY.shape[0] != M or dY.shape[1] != C or weight.shape[0] != C or mean.shape[0] != M
            or invstd.shape[0] != M or dweight.shape[0] != C or dbias.shape[0] != C
            or (need_dx and (dX.shape[0] != M or dX.shape[1] != C))):
        raise ValueError("layernorm_backward: array shapes do not fit X (M, C)")
    if C < 1:
        raise ValueError("layernorm_backward: need at least one column")
    _check_threads(num_threads)
    cdef double *sums = _scratch(2 * C + nb * 2 * C)
    cdef double *part = sums + 2 * C
    try:
        with nogil:
            for b in prange(nb, num_threads=num_threads, schedule='static',
                            use_threads_if=M * C >= PAR_MIN):
                r0 = b * rb
                r1 = min(M, r0 + rb)
                _ln_back_rows(X, dY, weight, mean, invstd, need_dx, dX, part + b * 2 * C, r0, r1)
            _combine(part, nb, 2 * C, sums, 1.0)
            for c in range(C):
                dweight[c] = <floating>sums[c]
                dbias[c] = <floating>sums[C + c]
    finally:
        free(sums)
