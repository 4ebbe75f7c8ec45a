"""Fused loss kernels: softmax + cross-entropy (with label smoothing), sigmoid + binary
cross-entropy, mean squared error, Huber, softmax + KL divergence.

Kernels only (inputs checked by fastnn). Rows are independent and processed in parallel; the loss
is summed from a per-row (or per-block) buffer in a fixed order, so it does not depend on the
number of threads.

Sample weights: every kernel takes an optional ``sample_weight`` (N,) float64. Without it the
loss is ``scale * sum of the terms`` and the gradient ``scale * d term``; with it each term of
sample n is multiplied by ``w[n]`` in the loss and in the gradient (the caller passes
``scale = 1 / sum(w)``, times ``1 / K`` for the elementwise losses: the weighted mean). The flat
(elementwise) kernels get the row length K as ``row_len``: element i belongs to sample i // K.
The unweighted path is the same arithmetic as before weights existed.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, log, log1p, fabs
from libc.stdint cimport int64_t
from _simd cimport softmax_ce_row, fnn_softmax_ce_rows_f32

cdef Py_ssize_t PAR_MIN = 1 << 14
cdef Py_ssize_t BLOCK = 4096
# float32 softmax-CE: rows per block so that a block holds about this many logits (L1-sized)
cdef Py_ssize_t ROWS_ELEMS = 2048
# below this many classes the per-row loops are too short to vectorise (K = 10: 4.8x faster as
# blocks); from it on the row function's vectorised max/sum loops win (K = 100: 2.4x)
cdef Py_ssize_t SMALL_K = 32


cdef inline void _smooth_and_weight_row(const floating *z, Py_ssize_t K, Py_ssize_t label,
                                        floating *dz, double *loss, double scale, double eps,
                                        bint weighted, double w) noexcept nogil:
    """Turn a row done by softmax_ce_row with ``scale`` (dz = scale (p - onehot), loss =
    lse - z_label) into the label-smoothed, weighted row: target t = (1 - eps) onehot + eps / K,
    loss = lse - sum_k t_k z_k = (lse - z_label) + eps (z_label - mean_k z_k),
    dz = w scale (p - t) (the loss stays unweighted: the caller weights the sum)."""
    cdef Py_ssize_t k
    cdef double zsum = 0.0
    cdef floating c_label, c_all, fw
    if eps != 0.0:
        for k in range(K):
            zsum = zsum + z[k]
        loss[0] = loss[0] + eps * (<double>z[label] - zsum / K)
        c_label = <floating>(scale * eps)
        c_all = <floating>(scale * eps / K)
        dz[label] += c_label
        for k in range(K):
            dz[k] -= c_all
    if weighted:
        fw = <floating>w
        for k in range(K):
            dz[k] *= fw


def softmax_cross_entropy(const floating[:, ::1] logits not None, const int64_t[::1] labels not None,
                          floating[:, ::1] dlogits not None, double[::1] row_loss not None,
                          double scale, int num_threads, const double[::1] sample_weight=None,
                          double label_smoothing=0.0):
    """Mean-style softmax cross-entropy of logits (N, K) against labels (N,) in [0, K).

    row_loss[n] <- logsumexp(logits[n]) - sum_k t[n, k] logits[n, k] (float64), with the target
    t = (1 - eps) onehot(labels) + eps / K (eps = label_smoothing in [0, 1]; 0: the one-hot);
    dlogits (N, K) <- scale * w[n] * (softmax(logits) - t). Returns
    scale * sum_n w[n] row_loss[n]. w[n] = sample_weight[n], or 1 when sample_weight is None.
    """
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n
    cdef double total = 0.0, eps = label_smoothing
    cdef bint weighted = sample_weight is not None
    if labels.shape[0] != N or dlogits.shape[0] != N or dlogits.shape[1] != K \
            or row_loss.shape[0] != N:
        raise ValueError("softmax_cross_entropy: labels, dlogits, row_loss do not fit logits")
    if K < 1 or num_threads < 1:
        raise ValueError("softmax_cross_entropy: need K >= 1 and num_threads >= 1")
    if weighted and sample_weight.shape[0] != N:
        raise ValueError("softmax_cross_entropy: sample_weight does not fit logits")
    if not (0.0 <= eps <= 1.0):
        raise ValueError(f"softmax_cross_entropy: label_smoothing must be in [0, 1], got {eps}")
    for n in range(N):
        if labels[n] < 0 or labels[n] >= K:
            raise ValueError(f"labels[{n}] = {labels[n]} is outside [0, {K})")
    cdef bint adjust = weighted or eps != 0.0
    cdef const double *w = &sample_weight[0] if weighted and N > 0 else NULL
    cdef Py_ssize_t rb = max(1, ROWS_ELEMS // K), nb = (N + rb - 1) // rb, blk, r0, r, r1
    with nogil:
        if floating is float and K < SMALL_K:  # blocks of rows: one flat, vectorised exp loop
            for blk in prange(nb, num_threads=num_threads, schedule='static',
                              use_threads_if=N * K >= PAR_MIN):
                r0 = blk * rb
                r1 = min(rb, N - r0)
                fnn_softmax_ce_rows_f32(&logits[r0, 0], r1, K, &labels[r0],
                                        &dlogits[r0, 0], <float>scale, &row_loss[r0])
                if adjust:  # the block's rows are still in cache
                    for r in range(r0, r0 + r1):
                        _smooth_and_weight_row(&logits[r, 0], K, labels[r], &dlogits[r, 0],
                                               &row_loss[r], scale, eps, weighted,
                                               w[r] if weighted else 1.0)
        else:
            for n in prange(N, num_threads=num_threads, schedule='static',
                            use_threads_if=N * K >= PAR_MIN):
                row_loss[n] = softmax_ce_row(&logits[n, 0], K, labels[n], &dlogits[n, 0],
                                             <floating>scale, NULL)
                if adjust:
                    _smooth_and_weight_row(&logits[n, 0], K, labels[n], &dlogits[n, 0],
                                           &row_loss[n], scale, eps, weighted,
                                           w[n] if weighted else 1.0)
        if weighted:
            for n in range(N):
                total += w[n] * row_loss[n]
        else:
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


cdef int _check_flat(str name, Py_ssize_t L, Py_ssize_t target_len, Py_ssize_t grad_len,
                     Py_ssize_t nb, Py_ssize_t blocks_len, int num_threads,
                     const double[::1] sample_weight, Py_ssize_t row_len) except -1:
    """Shape checks shared by the flat (elementwise) kernels."""
    if target_len != L or grad_len != L or blocks_len < nb:
        raise ValueError(f"{name}: array lengths do not fit")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if row_len < 1:
        raise ValueError(f"{name}: row_len must be >= 1, got {row_len}")
    if sample_weight is not None and sample_weight.shape[0] * row_len != L:
        raise ValueError(f"{name}: sample_weight has {sample_weight.shape[0]} entries, the arrays "
                         f"{L} elements in rows of {row_len}")
    return 0


cdef inline double _bce_term(double z, double y, double *g) noexcept nogil:
    """max(z, 0) - z y + log(1 + exp(-|z|)); g <- sigmoid(z) - y."""
    cdef double e = exp(-fabs(z))
    g[0] = (1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)) - y
    return (z if z > 0 else 0.0) - z * y + log1p(e)


def sigmoid_binary_cross_entropy(const floating[::1] logits not None, const floating[::1] target not None,
                                 floating[::1] dlogits not None, double[::1] block_loss not None,
                                 double scale, int num_threads,
                                 const double[::1] sample_weight=None, Py_ssize_t row_len=1):
    """Binary cross-entropy on logits z with targets y in [0, 1], flat arrays of one length L.

    loss_i = max(z, 0) - z y + log(1 + exp(-|z|))  (stable form, as torch's BCEWithLogitsLoss);
    dlogits <- scale * w * (sigmoid(z) - y). block_loss has ceil(L / 4096) entries. Returns the
    sum of w * loss_i times scale; w = sample_weight[i // row_len], or 1 without sample_weight.
    """
    cdef Py_ssize_t L = logits.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef Py_ssize_t n, n0, n1, i0, i1
    cdef double z, y, e, s, g, c, wn, total = 0.0
    _check_flat("sigmoid_binary_cross_entropy", L, target.shape[0], dlogits.shape[0], nb,
                block_loss.shape[0], num_threads, sample_weight, row_len)
    cdef bint weighted = sample_weight is not None
    cdef const double *w = &sample_weight[0] if weighted and L > 0 else NULL
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            s = 0.0
            if weighted:
                n0 = start // row_len
                n1 = (stop - 1) // row_len + 1
                for n in range(n0, n1):
                    wn = w[n]
                    c = scale * wn
                    i0 = max(start, n * row_len)
                    i1 = min(stop, (n + 1) * row_len)
                    for i in range(i0, i1):
                        s = s + wn * _bce_term(logits[i], target[i], &g)
                        dlogits[i] = <floating>(c * g)
            else:
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
                       double scale, int num_threads,
                       const double[::1] sample_weight=None, Py_ssize_t row_len=1):
    """Squared error of flat arrays of one length L: returns scale * sum w (pred - target)^2 and
    sets dpred <- 2 scale w (pred - target); w = sample_weight[i // row_len], or 1 without
    sample_weight. block_loss has ceil(L / 4096) entries."""
    cdef Py_ssize_t L = pred.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef Py_ssize_t n, n0, n1, i0, i1
    cdef double d, s, c, wn, total = 0.0
    _check_flat("mean_squared_error", L, target.shape[0], dpred.shape[0], nb,
                block_loss.shape[0], num_threads, sample_weight, row_len)
    cdef bint weighted = sample_weight is not None
    cdef const double *w = &sample_weight[0] if weighted and L > 0 else NULL
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            s = 0.0
            if weighted:
                n0 = start // row_len
                n1 = (stop - 1) // row_len + 1
                for n in range(n0, n1):
                    wn = w[n]
                    c = 2.0 * scale * wn
                    i0 = max(start, n * row_len)
                    i1 = min(stop, (n + 1) * row_len)
                    for i in range(i0, i1):
                        d = <double>pred[i] - <double>target[i]
                        s = s + wn * (d * d)
                        dpred[i] = <floating>(c * d)
            else:
                for i in range(start, stop):
                    d = <double>pred[i] - <double>target[i]
                    s = s + d * d
                    dpred[i] = <floating>(2.0 * scale * d)
            block_loss[b] = s
        for b in range(nb):
            total += block_loss[b]
    return total * scale


cdef inline double _huber_term(double d, double delta, double *g) noexcept nogil:
    """0.5 d^2 if |d| < delta else delta (|d| - delta / 2); g <- its derivative in d."""
    cdef double a = fabs(d)
    if a < delta:
        g[0] = d
        return 0.5 * d * d
    g[0] = delta if d > 0 else -delta
    return delta * (a - 0.5 * delta)


def huber(const floating[::1] pred not None, const floating[::1] target not None,
          floating[::1] dpred not None, double[::1] block_loss not None, double scale,
          double delta, int num_threads, const double[::1] sample_weight=None,
          Py_ssize_t row_len=1):
    """Huber loss of flat arrays of one length L (torch.nn.HuberLoss's elementwise term).

    With d = pred - target: loss_i = 0.5 d^2 if |d| < delta else delta (|d| - delta / 2);
    dpred <- scale * w * (d if |d| < delta else delta sign(d)). Returns scale * sum w loss_i;
    w = sample_weight[i // row_len], or 1 without sample_weight. block_loss has ceil(L / 4096)
    entries (the block sums, unscaled).
    """
    cdef Py_ssize_t L = pred.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef Py_ssize_t n, n0, n1, i0, i1
    cdef double s, g, c, wn, total = 0.0
    _check_flat("huber", L, target.shape[0], dpred.shape[0], nb, block_loss.shape[0],
                num_threads, sample_weight, row_len)
    if not delta > 0.0:
        raise ValueError(f"huber: delta must be > 0, got {delta}")
    cdef bint weighted = sample_weight is not None
    cdef const double *w = &sample_weight[0] if weighted and L > 0 else NULL
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            s = 0.0
            if weighted:
                n0 = start // row_len
                n1 = (stop - 1) // row_len + 1
                for n in range(n0, n1):
                    wn = w[n]
                    c = scale * wn
                    i0 = max(start, n * row_len)
                    i1 = min(stop, (n + 1) * row_len)
                    for i in range(i0, i1):
                        s = s + wn * _huber_term(<double>pred[i] - <double>target[i], delta, &g)
                        dpred[i] = <floating>(c * g)
            else:
                for i in range(start, stop):
                    s = s + _huber_term(<double>pred[i] - <double>target[i], delta, &g)
                    dpred[i] = <floating>(scale * g)
            block_loss[b] = s
        for b in range(nb):
            total += block_loss[b]
    return total * scale


cdef inline double _kl_row(const floating *z, const double *t, Py_ssize_t K, floating *dz,
                           double c) noexcept nogil:
    """KL(t || softmax(z)) = sum_k t_k (log t_k - log_softmax(z)_k), 0 log 0 = 0 (terms with
    t_k = 0 are skipped); dz <- c (softmax(z) sum_k t_k - t). Stable: lse = max + log sum exp."""
    cdef Py_ssize_t k
    cdef double m = z[0], s = 0.0, tsum = 0.0, loss = 0.0, lse, tk
    for k in range(1, K):
        if z[k] > m:
            m = z[k]
    for k in range(K):
        s = s + exp(<double>z[k] - m)
    lse = m + log(s)
    for k in range(K):
        tk = t[k]
        tsum = tsum + tk
        if tk > 0.0:
            loss = loss + tk * (log(tk) - (<double>z[k] - lse))
    for k in range(K):
        dz[k] = <floating>(c * (exp(<double>z[k] - lse) * tsum - t[k]))
    return loss


def kl_divergence(const floating[:, ::1] logits not None, const double[:, ::1] target not None,
                  floating[:, ::1] dlogits not None, double[::1] row_loss not None,
                  double scale, int num_threads, const double[::1] sample_weight=None):
    """Softmax + KL divergence of logits z (N, K) from target distributions t (N, K), float64.

    row_loss[n] <- sum_k t[n, k] (log t[n, k] - log_softmax(z[n])_k) with 0 log 0 = 0 (float64,
    unweighted); dlogits[n] <- scale * w[n] * (softmax(z[n]) sum_k t[n, k] - t[n]). Returns
    scale * sum_n w[n] row_loss[n]; w = sample_weight, or 1 when it is None.
    """
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n
    cdef double total = 0.0
    cdef bint weighted = sample_weight is not None
    if target.shape[0] != N or target.shape[1] != K or dlogits.shape[0] != N \
            or dlogits.shape[1] != K or row_loss.shape[0] != N:
        raise ValueError("kl_divergence: target, dlogits, row_loss do not fit logits")
    if K < 1 or num_threads < 1:
        raise ValueError("kl_divergence: need K >= 1 and num_threads >= 1")
    if weighted and sample_weight.shape[0] != N:
        raise ValueError("kl_divergence: sample_weight does not fit logits")
    cdef const double *w = &sample_weight[0] if weighted and N > 0 else NULL
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule='static',
                        use_threads_if=N * K >= PAR_MIN):
            row_loss[n] = _kl_row(&logits[n, 0], &target[n, 0], K, &dlogits[n, 0],
                                  scale * w[n] if weighted else scale)
        if weighted:
            for n in range(N):
                total += w[n] * row_loss[n]
        else:
            for n in range(N):
                total += row_loss[n]
    return total * scale
