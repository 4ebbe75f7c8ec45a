"""Fused loss kernels: softmax + cross-entropy, sigmoid + binary cross-entropy, mean squared error.

Kernels only (inputs checked by fastnn). Rows are independent and processed in parallel; the loss
is summed from a per-row (or per-block) buffer in a fixed order, so it does not depend on the
number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, log1p, fabs
from libc.stdint cimport int64_t
from _simd cimport softmax_ce_row, fnn_softmax_ce_rows_f32

cdef Py_ssize_t PAR_MIN = 1 << 14
cdef Py_ssize_t BLOCK = 4096
# float32 softmax-CE: rows per block so that a block holds about this many logits (L1-sized)
cdef Py_ssize_t ROWS_ELEMS = 2048
# below this many classes the per-row loops are too short to vectorise (K = 10: 4.8x faster as
# blocks); from it on the row function's vectorised max/sum loops win (K = 100: 2.4x)
cdef Py_ssize_t SMALL_K = 32


def softmax_cross_entropy(const floating[:, ::1] logits not None, const int64_t[::1] labels not None,
                          floating[:, ::1] dlogits not None, double[::1] row_loss not None,
                          double scale, int num_threads):
    """Mean-style softmax cross-entropy of logits (N, K) against labels (N,) in [0, K).

    row_loss[n] <- logsumexp(logits[n]) - logits[n, labels[n]] (float64);
    dlogits (N, K) <- scale * (softmax(logits) - onehot(labels)). Returns sum_n row_loss[n] * scale.
    """
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n
    cdef double total = 0.0
    if labels.shape[0] != N or dlogits.shape[0] != N or dlogits.shape[1] != K \
            or row_loss.shape[0] != N:
        raise ValueError("softmax_cross_entropy: labels, dlogits, row_loss do not fit logits")
    if K < 1 or num_threads < 1:
        raise ValueError("softmax_cross_entropy: need K >= 1 and num_threads >= 1")
    for n in range(N):
        if labels[n] < 0 or labels[n] >= K:
            raise ValueError(f"labels[{n}] = {labels[n]} is outside [0, {K})")
    cdef Py_ssize_t rb = max(1, ROWS_ELEMS // K), nb = (N + rb - 1) // rb, blk, r0
    with nogil:
        if floating is float and K < SMALL_K:  # blocks of rows: one flat, vectorised exp loop
            for blk in prange(nb, num_threads=num_threads, schedule='static',
                              use_threads_if=N * K >= PAR_MIN):
                r0 = blk * rb
                fnn_softmax_ce_rows_f32(&logits[r0, 0], min(rb, N - r0), K, &labels[r0],
                                        &dlogits[r0, 0], <float>scale, &row_loss[r0])
        else:
            for n in prange(N, num_threads=num_threads, schedule='static',
                            use_threads_if=N * K >= PAR_MIN):
                row_loss[n] = softmax_ce_row(&logits[n, 0], K, labels[n], &dlogits[n, 0],
                                             <floating>scale, NULL)
        for n in range(N):
            total += row_loss[n]
    return total * scale


def softmax(const floating[:, ::1] logits not None, floating[:, ::1] prob not None, int num_threads):
    """prob (N, K) <- row-wise softmax of logits (N, K), stable (max subtracted)."""
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n
    if prob.shape[0] != N or prob.shape[1] != K:
        raise ValueError("softmax: prob does not have the shape of logits")
    if K < 1 or num_threads < 1:
        raise ValueError("softmax: need K >= 1 and num_threads >= 1")
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule='static', use_threads_if=N * K >= PAR_MIN):
            softmax_ce_row(&logits[n, 0], K, -1, NULL, <floating>1, &prob[n, 0])


def sigmoid_binary_cross_entropy(const floating[::1] logits not None, const floating[::1] target not None,
                                 floating[::1] dlogits not None, double[::1] block_loss not None,
                                 double scale, int num_threads):
    """Binary cross-entropy on logits z with targets y in [0, 1], flat arrays of one length L.

    loss_i = max(z, 0) - z y + log(1 + exp(-|z|))  (stable form, as torch's BCEWithLogitsLoss);
    dlogits <- scale * (sigmoid(z) - y). block_loss has ceil(L / 4096) entries. Returns the sum of
    loss_i times scale.
    """
    cdef Py_ssize_t L = logits.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef double z, y, e, s, total = 0.0
    if target.shape[0] != L or dlogits.shape[0] != L or block_loss.shape[0] < nb:
        raise ValueError("sigmoid_binary_cross_entropy: array lengths do not fit")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            s = 0.0
            for i in range(start, stop):
                z = logits[i]
                y = target[i]
                e = exp(-fabs(z))
                s = s + (z if z > 0 else 0.0) - z * y + log1p(e)
                # sigmoid(z) from e = exp(-|z|), stable for both signs
                dlogits[i] = <floating>(scale * ((1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)) - y))
            block_loss[b] = s
        for b in range(nb):
            total += block_loss[b]
    return total * scale


def mean_squared_error(const floating[::1] pred not None, const floating[::1] target not None,
                       floating[::1] dpred not None, double[::1] block_loss not None,
                       double scale, int num_threads):
    """Squared error of flat arrays of one length L: returns scale * sum (pred - target)^2 and
    sets dpred <- 2 scale (pred - target). block_loss has ceil(L / 4096) entries."""
    cdef Py_ssize_t L = pred.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef double d, s, total = 0.0
    if target.shape[0] != L or dpred.shape[0] != L or block_loss.shape[0] < nb:
        raise ValueError("mean_squared_error: array lengths do not fit")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            s = 0.0
            for i in range(start, stop):
                d = <double>pred[i] - <double>target[i]
                s = s + d * d
                dpred[i] = <floating>(2.0 * scale * d)
            block_loss[b] = s
        for b in range(nb):
            total += block_loss[b]
    return total * scale

