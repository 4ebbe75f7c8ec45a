"""Fused loss kernels (fastnn._losses) against plain NumPy written here, in float64.

softmax_cross_entropy: row_loss[n] = logsumexp(z[n]) - z[n, y[n]],
                       dlogits = scale * (softmax(z) - onehot(y)), returns scale * sum(row_loss)
sigmoid_binary_cross_entropy: loss_i = max(z, 0) - z y + log(1 + exp(-|z|)),
                       dlogits = scale * (sigmoid(z) - y), returns scale * sum(loss_i)
mean_squared_error:    returns scale * sum((p - t)^2), dpred = 2 scale (p - t)
huber:                 h(d) = 0.5 d^2 if |d| < delta else delta (|d| - delta / 2), d = p - t;
                       returns scale * sum h(d), dpred = scale * h'(d)
kl_divergence:         row_loss[n] = sum_k t (log t - log_softmax(z)), 0 log 0 = 0,
                       dlogits = scale * (softmax(z) sum_k t - t), returns scale * sum(row_loss)
With sample_weight w (N,): every term of sample n (element i of a flat kernel: n = i // row_len)
is multiplied by w[n], in the loss and in the gradient; softmax_cross_entropy's label_smoothing
eps replaces the one-hot by (1 - eps) onehot + eps / K.

The references take the kernel's inputs upcast to float64, so only the kernel's own rounding is
measured. Tolerances scale with the magnitude of the terms (float64 1e-12, float32 1e-5).
"""
import numpy as np
import pytest

from fastnn import _losses

from conftest import assert_within, sigmoid, softmax, softmax_ce_rows

DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# probabilities below the smallest normal float32 are flushed to 0 by the float32 exp
PROB_ATOL = {np.float32: 1e-30, np.float64: 1e-300}
BLOCK = 4096  # block length of the BCE / MSE partial sums (documented in losses.pyx)

SOFTMAX_SHAPES = [(1, 1), (1, 10), (7, 3), (7, 13), (64, 10), (64, 33), (257, 1), (257, 10),
                  (257, 784), (1000, 3)]  # (1000, 3): several row blocks of the small-K path
SOFTMAX_IDS = ["x".join(map(str, s)) for s in SOFTMAX_SHAPES]
FLAT_LENGTHS = [1, 7, 64, 257, 4096, 4097, 3 * 4096 + 5, 40_000]


# ---------------------------------------------------------------- references (float64, plainly)
def softmax_ce_ref(z, y):
    """(row losses, softmax, onehot) in float64."""
    p = softmax(z)
    onehot = np.zeros_like(p)
    onehot[np.arange(z.shape[0]), y] = 1.0
    return softmax_ce_rows(z, y), p, onehot


def bce_terms_ref(z, y):
    z = z.astype(np.float64)
    y = y.astype(np.float64)
    return np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))


def run_softmax_ce(z, y, scale, nt):
    N = z.shape[0]
    d = np.full_like(z, np.nan)
    row_loss = np.full(N, np.nan)
    total = _losses.softmax_cross_entropy(z, y, d, row_loss, scale, nt)
    return total, d, row_loss


def check_softmax_ce(z, y, scale, nt, dtype):
    total, d, row_loss = run_softmax_ce(z, y, scale, nt)
    loss, p, onehot = softmax_ce_ref(z, y)
    z64 = z.astype(np.float64)
    rows = np.arange(z.shape[0])
    # the loss is m + log(s) - z_y: its rounding scales with |max z| + |z_y| (+1 for log(s))
    loss_mag = 1.0 + np.abs(z64.max(axis=1)) + np.abs(z64[rows, y]) + np.log(z.shape[1])
    assert_within(row_loss, loss, RTOL[dtype] * loss_mag, "row_loss")
    # the returned total is scale * the float64 sum of row_loss, in a fixed order
    assert np.isfinite(total)
    assert total == pytest.approx(scale * row_loss.sum(), rel=1e-12, abs=1e-300)
    assert total == pytest.approx(scale * loss.sum(), rel=RTOL[dtype],
                                  abs=RTOL[dtype] * scale * loss_mag.sum())
    assert d.dtype == dtype
    d_ref = scale * (p - onehot)
    assert_within(d, d_ref, scale * (RTOL[dtype] * (p + onehot) + PROB_ATOL[dtype]), "dlogits")


# ---------------------------------------------------------------- softmax cross-entropy
@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("sigma", [1.0, 30.0, 1e4], ids=["s1", "s30", "s1e4"])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=SOFTMAX_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_ce_matches_numpy(dtype, shape, sigma, nt):
    N, K = shape
    rng = np.random.default_rng([N, K, int(sigma)])
    z = (sigma * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    check_softmax_ce(z, y, 1.0 / N, nt, dtype)


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_ce_extreme_logits(dtype, nt):
    """Logits of +-1e4: finite loss and gradient, equal to the stable float64 reference."""
    K = 10
    big = 1e4
    rows, labels = [], []
    rows.append(np.full(K, big))                                    # all equal, huge: log K
    labels.append(3)
    rows.append(np.full(K, -big))                                   # all equal, very negative
    labels.append(0)
    r = np.full(K, -big)
    r[2] = big
    rows.append(r.copy())                                           # confident and right: 0
    labels.append(2)
    rows.append(r.copy())                                           # confident and wrong: 2e4
    labels.append(5)
    r = np.full(K, -big)
    r[0] = big
    r[1] = big
    rows.append(r)                                                  # two-way tie: log 2
    labels.append(1)
    rng = np.random.default_rng(7)
    for _ in range(11):
        rows.append(rng.uniform(-big, big, K))
        labels.append(int(rng.integers(0, K)))
    z = np.array(rows).astype(dtype)
    y = np.array(labels, dtype=np.int64)
    scale = 1.0 / len(rows)
    check_softmax_ce(z, y, scale, nt, dtype)
    _, d, row_loss = run_softmax_ce(z, y, scale, nt)
    assert row_loss[0] == pytest.approx(np.log(K), rel=RTOL[dtype])
    assert row_loss[1] == pytest.approx(np.log(K), rel=RTOL[dtype])
    assert row_loss[2] == 0.0
    assert row_loss[3] == pytest.approx(2 * big, rel=1e-12)
    assert row_loss[4] == pytest.approx(np.log(2), rel=RTOL[dtype])
    assert np.all(d[2] == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_ce_gradient_rows_sum_to_zero(dtype):
    """softmax sums to 1 and the one-hot to 1: each row of dlogits sums to ~0."""
    rng = np.random.default_rng(3)
    z = (5 * rng.standard_normal((64, 33))).astype(dtype)
    y = rng.integers(0, 33, 64).astype(np.int64)
    _, d, _ = run_softmax_ce(z, y, 1.0, 2)
    assert np.all(np.abs(d.astype(np.float64).sum(axis=1)) < 33 * RTOL[dtype])


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=SOFTMAX_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_matches_numpy(dtype, shape, nt):
    N, K = shape
    rng = np.random.default_rng([N, K, 11])
    z = (10 * rng.standard_normal((N, K))).astype(dtype)
    z[0, 0] = 1e4  # one extreme row
    prob = np.full_like(z, np.nan)
    _losses.softmax(z, prob, nt)
    _, p, _ = softmax_ce_ref(z, np.zeros(N, dtype=np.int64))
    assert prob.dtype == dtype
    assert_within(prob, p, RTOL[dtype] * p + PROB_ATOL[dtype], "prob")
    assert np.allclose(prob.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=K * RTOL[dtype])


# ---------------------------------------------------------------- sigmoid + binary cross-entropy
def run_bce(z, y, scale, nt):
    L = z.shape[0]
    d = np.full_like(z, np.nan)
    block_loss = np.full((L + BLOCK - 1) // BLOCK, np.nan)
    total = _losses.sigmoid_binary_cross_entropy(z, y, d, block_loss, scale, nt)
    return total, d, block_loss


def check_bce(z, y, scale, nt, dtype):
    total, d, block_loss = run_bce(z, y, scale, nt)
    terms = bce_terms_ref(z, y)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    term_mag = np.abs(z64) + np.abs(z64 * y64) + 1.0
    nb = block_loss.shape[0]
    block_ref = np.array([terms[b * BLOCK:(b + 1) * BLOCK].sum() for b in range(nb)])
    block_mag = np.array([term_mag[b * BLOCK:(b + 1) * BLOCK].sum() for b in range(nb)])
    assert_within(block_loss, block_ref, RTOL[dtype] * block_mag, "block_loss")
    assert np.isfinite(total)
    assert total == pytest.approx(scale * block_loss.sum(), rel=1e-12, abs=1e-300)
    assert abs(total - scale * terms.sum()) <= RTOL[dtype] * scale * term_mag.sum()
    assert d.dtype == dtype
    d_ref = scale * (sigmoid(z64) - y64)
    # sigmoid and y are in [0, 1]: the gradient's rounding scales with scale * 1
    assert_within(d, d_ref, np.full(d.shape, RTOL[dtype] * scale), "dlogits")


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("L", FLAT_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_bce_matches_numpy(dtype, L, soft, nt):
    rng = np.random.default_rng([L, soft])
    z = (4 * rng.standard_normal(L)).astype(dtype)
    y = (rng.uniform(0, 1, L) if soft else rng.integers(0, 2, L)).astype(dtype)
    check_bce(z, y, 1.0 / L, nt, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_bce_extreme_logits(dtype):
    z = np.array([1e4, 1e4, -1e4, -1e4, 0.0, 1e-30, -1e-30, 40.0, -40.0, 800.0, -800.0],
                 dtype=dtype)
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5], dtype=dtype)
    check_bce(z, y, 1.0, 1, dtype)
    _, d, block_loss = run_bce(z, y, 1.0, 1)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(block_loss))
    # right and confident: exactly zero gradient; wrong and confident: -1 / +1
    assert d[0] == 0 and d[3] == 0 and d[1] == 1 and d[2] == -1


# ---------------------------------------------------------------- mean squared error
def run_mse(p, t, scale, nt):
    L = p.shape[0]
    d = np.full_like(p, np.nan)
    block_loss = np.full((L + BLOCK - 1) // BLOCK, np.nan)
    total = _losses.mean_squared_error(p, t, d, block_loss, scale, nt)
    return total, d, block_loss


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("L", FLAT_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_mse_matches_numpy(dtype, L, nt):
    rng = np.random.default_rng([L, 5])
    p = (3 * rng.standard_normal(L)).astype(dtype)
    t = rng.standard_normal(L).astype(dtype)
    scale = 1.0 / L
    total, d, block_loss = run_mse(p, t, scale, nt)
    diff = p.astype(np.float64) - t.astype(np.float64)
    sq = diff * diff
    nb = block_loss.shape[0]
    block_ref = np.array([sq[b * BLOCK:(b + 1) * BLOCK].sum() for b in range(nb)])
    assert_within(block_loss, block_ref, RTOL[dtype] * block_ref, "block_loss")
    assert total == pytest.approx(scale * block_loss.sum(), rel=1e-12, abs=1e-300)
    assert total == pytest.approx(scale * sq.sum(), rel=RTOL[dtype])
    assert d.dtype == dtype
    assert_within(d, 2 * scale * diff, RTOL[dtype] * 2 * scale * np.abs(diff), "dpred")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_mse_zero_when_equal(dtype):
    p = np.linspace(-3, 3, 1001).astype(dtype)
    total, d, block_loss = run_mse(p, p.copy(), 0.5, 2)
    assert total == 0.0 and np.all(d == 0) and np.all(block_loss == 0)


# ---------------------------------------------------------------- thread count independence
@pytest.mark.parametrize("shape", [(257, 100), (4096, 10), (64, 784), (7, 3)],
                         ids=["257x100", "4096x10", "64x784", "7x3"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_ce_bit_identical_across_threads(dtype, shape):
    N, K = shape
    rng = np.random.default_rng([N, K, 99])
    z = (20 * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    runs = [run_softmax_ce(z, y, 1.0 / N, nt) for nt in (1, 2, 3)]
    for other in runs[1:]:
        assert runs[0][0] == other[0]
        assert np.array_equal(runs[0][1], other[1])
        assert np.array_equal(runs[0][2], other[2])
    probs = []
    for nt in (1, 2, 3):
        prob = np.empty_like(z)
        _losses.softmax(z, prob, nt)
        probs.append(prob)
    assert np.array_equal(probs[0], probs[1]) and np.array_equal(probs[0], probs[2])


@pytest.mark.parametrize("L", [4097, 100_003])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_bce_and_mse_bit_identical_across_threads(dtype, L):
    rng = np.random.default_rng([L, 1])
    z = (4 * rng.standard_normal(L)).astype(dtype)
    y = rng.uniform(0, 1, L).astype(dtype)
    for run in (run_bce, run_mse):
        results = [run(z, y, 1.0 / L, nt) for nt in (1, 2, 3)]
        for other in results[1:]:
            assert results[0][0] == other[0], run.__name__
            assert np.array_equal(results[0][1], other[1]), run.__name__
            assert np.array_equal(results[0][2], other[2]), run.__name__


# ---------------------------------------------------------------- sample weights, smoothing
def weights_for(rng, N, zeros=True):
    w = rng.uniform(0.0, 3.0, N)
    if zeros and N > 2:
        w[1] = 0.0
    return w


def smoothed_ce_ref(z, y, eps):
    """(row losses, target) of the label-smoothed cross-entropy in float64."""
    z64 = z.astype(np.float64)
    N, K = z.shape
    t = np.full((N, K), eps / K)
    t[np.arange(N), y] += 1.0 - eps
    lse = np.log(np.exp(z64 - z64.max(axis=1, keepdims=True)).sum(axis=1)) + z64.max(axis=1)
    return lse - (t * z64).sum(axis=1), t


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", [(7, 3), (1000, 3), (64, 33), (257, 10)],
                         ids=["7x3", "1000x3", "64x33", "257x10"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_ce_weighted_and_smoothed_match_numpy(dtype, shape, weighted, eps, nt):
    N, K = shape
    rng = np.random.default_rng([N, K, int(10 * eps), weighted])
    z = (4 * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    w = weights_for(rng, N) if weighted else None
    scale = 1.0 / (w.sum() if weighted else N)
    d = np.full_like(z, np.nan)
    row_loss = np.full(N, np.nan)
    total = _losses.softmax_cross_entropy(z, y, d, row_loss, scale, nt, w, eps)
    rows, t = smoothed_ce_ref(z, y, eps)
    z64 = z.astype(np.float64)
    mag = 1.0 + 2 * np.abs(z64).max(axis=1) + np.log(K)
    assert_within(row_loss, rows, RTOL[dtype] * mag, "row_loss")
    wf = np.ones(N) if w is None else w
    assert total == pytest.approx(scale * (wf * row_loss).sum(), rel=1e-12, abs=1e-300)
    assert total == pytest.approx(scale * (wf * rows).sum(), rel=RTOL[dtype] * 10)
    d_ref = scale * wf[:, None] * (softmax(z) - t)
    assert_within(d, d_ref, scale * wf[:, None] * (RTOL[dtype] * 4 + PROB_ATOL[dtype]), "dlogits")
    if weighted:
        assert np.all(d[1] == 0)  # a zero weight: no gradient


@pytest.mark.parametrize("shape", [(7, 3), (1000, 3), (64, 33)], ids=["7x3", "1000x3", "64x33"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_ce_unit_weights_and_zero_smoothing_are_the_unweighted_path(dtype, shape):
    """w = 1 and eps = 0 give bit-identical results: the weighting multiplies by exactly 1."""
    N, K = shape
    rng = np.random.default_rng([N, K, 5])
    z = (3 * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    base = run_softmax_ce(z, y, 1.0 / N, 2)
    d = np.empty_like(z)
    row_loss = np.empty(N)
    total = _losses.softmax_cross_entropy(z, y, d, row_loss, 1.0 / N, 2, np.ones(N), 0.0)
    assert total == base[0] and np.array_equal(d, base[1]) and np.array_equal(row_loss, base[2])


def run_flat(kernel, p, t, scale, nt, *extra, w=None, row_len=1):
    L = p.shape[0]
    d = np.full_like(p, np.nan)
    block_loss = np.full((L + BLOCK - 1) // BLOCK, np.nan)
    total = kernel(p, t, d, block_loss, scale, *extra, nt, w, row_len)
    return total, d, block_loss


def huber_ref(p, t, delta):
    d = p.astype(np.float64) - t.astype(np.float64)
    a = np.abs(d)
    return (np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)),
            np.where(a < delta, d, delta * np.sign(d)))


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("delta", [0.3, 1.0, 5.0])
@pytest.mark.parametrize("L", FLAT_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_huber_matches_numpy(dtype, L, delta, nt):
    rng = np.random.default_rng([L, int(10 * delta)])
    p = (3 * rng.standard_normal(L)).astype(dtype)
    t = rng.standard_normal(L).astype(dtype)
    scale = 1.0 / L
    total, d, block_loss = run_flat(_losses.huber, p, t, scale, nt, delta)
    h, g = huber_ref(p, t, delta)
    nb = block_loss.shape[0]
    block_ref = np.array([h[b * BLOCK:(b + 1) * BLOCK].sum() for b in range(nb)])
    assert_within(block_loss, block_ref, RTOL[dtype] * (block_ref + 1e-300), "block_loss")
    assert total == pytest.approx(scale * block_loss.sum(), rel=1e-12, abs=1e-300)
    assert total == pytest.approx(scale * h.sum(), rel=RTOL[dtype])
    assert d.dtype == dtype
    assert_within(d, scale * g, RTOL[dtype] * scale * np.abs(g), "dpred")
    # both branches are taken in this data
    a = np.abs(p.astype(np.float64) - t)
    assert L < 64 or (np.any(a < delta) and np.any(a > delta))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_huber_at_and_around_delta(dtype):
    """|d| = delta takes the linear branch (torch: quadratic only for |d| < delta); the two
    branches meet there in value and slope."""
    delta = 0.5
    t = np.zeros(7, dtype=dtype)
    p = np.array([-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0], dtype=dtype)
    total, d, _ = run_flat(_losses.huber, p, t, 1.0, 1, delta)
    np.testing.assert_array_equal(d, np.array([-0.5, -0.5, -0.25, 0.0, 0.25, 0.5, 0.5], dtype))
    h = [0.5 * (2.0 - 0.25), 0.125, 0.03125, 0.0, 0.03125, 0.125, 0.5 * (2.0 - 0.25)]
    assert total == pytest.approx(sum(h), rel=1e-15)


FLAT_KERNELS = {
    "bce": (_losses.sigmoid_binary_cross_entropy, (),
            lambda z, y: (bce_terms_ref(z, y), sigmoid(z) - y.astype(np.float64))),
    "mse": (_losses.mean_squared_error, (),
            lambda p, t: ((p.astype(np.float64) - t) ** 2, 2 * (p.astype(np.float64) - t))),
    "huber": (_losses.huber, (0.7,), lambda p, t: huber_ref(p, t, 0.7)),
}


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("N,K", [(1, 1), (5, 3), (4099, 1), (37, 300), (3000, 7)])
@pytest.mark.parametrize("name", sorted(FLAT_KERNELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_flat_kernels_weighted_match_numpy(dtype, name, N, K, nt):
    """Rows of K elements that straddle the 4096-element blocks: w[i // K] weights element i."""
    kernel, extra, ref = FLAT_KERNELS[name]
    rng = np.random.default_rng([N, K, len(name)])
    L = N * K
    z = (3 * rng.standard_normal(L)).astype(dtype)
    y = rng.uniform(0, 1, L).astype(dtype)
    w = weights_for(rng, N)
    scale = 1.0 / (K * w.sum())
    total, d, block_loss = run_flat(kernel, z, y, scale, nt, *extra, w=w, row_len=K)
    terms, grads = ref(z, y)
    we = np.repeat(w, K)
    nb = block_loss.shape[0]
    block_ref = np.array([(we * terms)[b * BLOCK:(b + 1) * BLOCK].sum() for b in range(nb)])
    mag = np.array([(we * (np.abs(terms) + np.abs(z) + 1))[b * BLOCK:(b + 1) * BLOCK].sum()
                    for b in range(nb)])
    assert_within(block_loss, block_ref, RTOL[dtype] * mag, "block_loss")
    assert total == pytest.approx(scale * block_loss.sum(), rel=1e-12, abs=1e-300)
    assert_within(d, scale * we * grads, RTOL[dtype] * scale * we * (np.abs(grads) + 1), "grad")
    if N > 2:
        assert np.all(d[K:2 * K] == 0)


@pytest.mark.parametrize("name", ["mse", "huber"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_flat_kernels_unit_weights_are_the_unweighted_path(dtype, name):
    kernel, extra, _ = FLAT_KERNELS[name]
    rng = np.random.default_rng(8)
    N, K = 3000, 7
    z = (3 * rng.standard_normal(N * K)).astype(dtype)
    y = rng.standard_normal(N * K).astype(dtype)
    a = run_flat(kernel, z, y, 1.0 / (N * K), 2, *extra)
    b = run_flat(kernel, z, y, 1.0 / (N * K), 2, *extra, w=np.ones(N), row_len=K)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


# ---------------------------------------------------------------- softmax + KL divergence
def kl_ref(z, t):
    """(row losses, gradient of the summed losses) in float64, 0 log 0 = 0."""
    z64 = z.astype(np.float64)
    m = z64.max(axis=1, keepdims=True)
    logp = z64 - m - np.log(np.exp(z64 - m).sum(axis=1, keepdims=True))
    safe = np.where(t > 0, t, 1.0)
    rows = np.where(t > 0, t * (np.log(safe) - logp), 0.0).sum(axis=1)
    return rows, np.exp(logp) * t.sum(axis=1, keepdims=True) - t


def run_kl(z, t, scale, nt, w=None):
    N = z.shape[0]
    d = np.full_like(z, np.nan)
    row_loss = np.full(N, np.nan)
    total = _losses.kl_divergence(z, t, d, row_loss, scale, nt, w)
    return total, d, row_loss


def prob_rows(rng, N, K, zeros=True):
    t = rng.dirichlet(np.ones(K), N)
    if zeros and K > 1:
        t[rng.uniform(size=(N, K)) < 0.3] = 0.0   # zeros in the target: 0 log 0 = 0
        t[:, 0] += 1e-3
        t /= t.sum(axis=1, keepdims=True)
    if N > 1 and K > 1:
        t[0] = 0.0
        t[0, K - 1] = 1.0                          # a one-hot row
    return t


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("sigma", [1.0, 30.0])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 33), (257, 10), (50, 784)],
                         ids=["1x1", "7x3", "64x33", "257x10", "50x784"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_kl_divergence_matches_numpy(dtype, shape, sigma, weighted, nt):
    N, K = shape
    rng = np.random.default_rng([N, K, int(sigma), weighted])
    z = (sigma * rng.standard_normal((N, K))).astype(dtype)
    t = prob_rows(rng, N, K)
    w = weights_for(rng, N) if weighted else None
    wf = np.ones(N) if w is None else w
    scale = 1.0 / wf.sum()
    total, d, row_loss = run_kl(z, t, scale, nt, w)
    rows, g = kl_ref(z, t)
    z64 = z.astype(np.float64)
    mag = 1.0 + 2 * np.abs(z64).max(axis=1) + np.log(K)
    assert_within(row_loss, rows, RTOL[dtype] * mag, "row_loss")
    assert np.all(row_loss >= -RTOL[dtype] * mag)
    assert total == pytest.approx(scale * (wf * row_loss).sum(), rel=1e-12, abs=1e-300)
    assert d.dtype == dtype
    p = softmax(z)
    assert_within(d, scale * wf[:, None] * g,
                  scale * wf[:, None] * (RTOL[dtype] * 4 * (p + t) + PROB_ATOL[dtype]), "dlogits")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_kl_divergence_extreme_logits_and_exact_targets(dtype):
    """Logits of +-1e4 stay finite; a target equal to softmax(z) gives 0; a one-hot target gives
    the cross-entropy."""
    K = 4
    z = np.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, -1e4], [0.5, -1.0, 2.0, 0.0],
                  [1e4, 1e4, -1e4, 0.0]], dtype=dtype)
    t = np.zeros((4, K))
    t[0, 1] = 1.0                      # confident and wrong: 2e4
    t[1] = 0.25                        # uniform logits, uniform target: 0
    t[2] = softmax(z[2:3])[0]          # the target is the prediction: 0
    t[3, 0] = t[3, 1] = 0.5            # two-way tie, matched: 0
    _, d, row_loss = run_kl(z, t, 1.0, 1)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(row_loss))
    assert row_loss[0] == pytest.approx(2e4, rel=1e-12)
    assert abs(row_loss[1]) < 1e-12
    assert abs(row_loss[2]) < 10 * RTOL[dtype]
    assert abs(row_loss[3]) < 1e-12
    assert np.all(np.abs(d[1:]) < 10 * RTOL[dtype])
    # one-hot rows: the loss and gradient of softmax cross-entropy
    y = np.array([1, 3, 0, 2], dtype=np.int64)
    ce_total, ce_d, ce_rows = run_softmax_ce(z, y, 0.25, 1)
    kl_total, kl_d, kl_rows = run_kl(z, np.eye(K)[y], 0.25, 1)
    np.testing.assert_allclose(kl_rows, ce_rows, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(kl_d, ce_d, rtol=0, atol=4 * RTOL[dtype])


# ---------------------------------------------------------------- new paths: thread count, checks
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_weighted_smoothed_huber_kl_bit_identical_across_threads(dtype):
    rng = np.random.default_rng(21)
    N, K = 4099, 10  # above the parallel thresholds, rows straddling the blocks
    z = (5 * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    t = prob_rows(rng, N, K)
    u = rng.uniform(0, 1, N * K).astype(dtype)
    w = weights_for(rng, N)

    def run_all(nt):
        out = []
        d, r = np.empty_like(z), np.empty(N)
        out.append((_losses.softmax_cross_entropy(z, y, d, r, 1 / w.sum(), nt, w, 0.1), d, r))
        out.append(run_kl(z, t, 1 / w.sum(), nt, w))
        out.append(run_kl(z, t, 1 / N, nt))
        flat = z.reshape(-1)
        out.append(run_flat(_losses.huber, flat, u, 1 / (N * K), nt, 1.0))
        for kernel, extra, _ in FLAT_KERNELS.values():
            out.append(run_flat(kernel, flat, u, 1 / (K * w.sum()), nt, *extra, w=w, row_len=K))
        return out

    runs = [run_all(nt) for nt in (1, 2, 3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a[0] == b[0]
            assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


def test_new_kernel_arguments_are_checked():
    z = np.zeros((4, 3))
    y = np.zeros(4, dtype=np.int64)
    d, r = np.zeros((4, 3)), np.zeros(4)
    with pytest.raises(ValueError, match="sample_weight"):
        _losses.softmax_cross_entropy(z, y, d, r, 1.0, 1, np.ones(3))
    for eps in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="label_smoothing"):
            _losses.softmax_cross_entropy(z, y, d, r, 1.0, 1, None, eps)
    with pytest.raises(ValueError, match="fit"):
        _losses.kl_divergence(z, np.zeros((4, 2)), d, r, 1.0, 1)
    with pytest.raises(ValueError, match="sample_weight"):
        _losses.kl_divergence(z, np.zeros((4, 3)), d, r, 1.0, 1, np.ones(5))
    with pytest.raises(ValueError, match="need K >= 1"):
        _losses.kl_divergence(z, np.zeros((4, 3)), d, r, 1.0, 0)
    p, b = np.zeros(12), np.zeros(1)
    for kernel, extra, _ in FLAT_KERNELS.values():
        with pytest.raises(ValueError, match="sample_weight has 3 entries"):
            kernel(p, p, p.copy(), b, 1.0, *extra, 1, np.ones(3), 3)
        with pytest.raises(ValueError, match="row_len"):
            kernel(p, p, p.copy(), b, 1.0, *extra, 1, None, 0)
        with pytest.raises(ValueError, match="lengths"):
            kernel(p, p[:5], p.copy(), b, 1.0, *extra, 1)
    for delta in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="delta"):
            _losses.huber(p, p, p.copy(), b, 1.0, delta, 1)
    with pytest.raises(ValueError, match="dtype"):  # a float32 weight array is not float64
        _losses.mean_squared_error(p, p, p.copy(), b, 1.0, 1, np.ones(12, np.float32), 1)
