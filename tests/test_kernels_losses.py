"""Fused loss kernels (fastnn._losses) against plain NumPy written here, in float64.

softmax_cross_entropy: row_loss[n] = logsumexp(z[n]) - z[n, y[n]],
                       dlogits = scale * (softmax(z) - onehot(y)), returns scale * sum(row_loss)
sigmoid_binary_cross_entropy: loss_i = max(z, 0) - z y + log(1 + exp(-|z|)),
                       dlogits = scale * (sigmoid(z) - y), returns scale * sum(loss_i)
mean_squared_error:    returns scale * sum((p - t)^2), dpred = 2 scale (p - t)

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
