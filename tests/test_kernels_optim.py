"""Optimizer update kernels (fastnn._optim) against PyTorch's documented algorithms, in NumPy
(SGD, Adam here; AdamW, RMSprop, Adagrad, the fused clipping and grad_norm further down).

torch.optim.SGD (dampening 0), for t = 1, 2, ...:
    g <- g + wd * p
    if mu != 0:  b <- g if t == 1 else mu * b + g
                 g <- g + mu * b if nesterov else b
    p <- p - lr * g
torch.optim.Adam (amsgrad=False), for t = 1, 2, ...:
    g <- g + wd * p
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t);   v_hat = v / (1 - b2^t)
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)

The kernels start from a zero velocity / zero moments (b = mu * 0 + g at t = 1 is PyTorch's b = g).
Several steps are run so that state errors would accumulate. Tolerances are relative to the
magnitude of the parameters and of the updates (float64 1e-12, float32 1e-5).
"""
import numpy as np
import pytest

from fastnn import _optim

DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
LENGTHS = [1, 7, 64, 257, 13 * 33, 784 * 256 + 256, 100_003]
STEPS = 5


def sgd_torch_ref(p, grads, lr, mu, nesterov, wd):
    """PyTorch's SGD, float64, written as documented."""
    p = p.astype(np.float64).copy()
    b = None
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64) + wd * p
        if mu != 0:
            b = g.copy() if t == 1 else mu * b + g
            g = g + mu * b if nesterov else b
        p = p - lr * g
    return p, b


def adam_torch_ref(p, grads, lr, b1, b2, eps, wd):
    """PyTorch's Adam (amsgrad=False), float64, written as documented.

    Also returns ``cond``: sum over steps of max_{s<=t} (|grad_s| + wd |p_s|) /
    (sqrt(v_hat_t) + eps).
    A rounding error u * (|grad| + wd |p|) in g (cancellation in grad + wd p, or across steps in m)
    moves p by lr * that / (sqrt(v_hat) + eps): large where g is tiny next to eps, whatever the
    precision. The tolerance includes u * lr * cond for that reason.
    """
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    g_max = np.zeros_like(p)
    cond = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g_max = np.maximum(g_max, np.abs(g.astype(np.float64)) + wd * np.abs(p))
        g = g.astype(np.float64) + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        cond += g_max / (np.sqrt(v_hat) + eps)
    return p, m, v, cond


def problem(n, dtype, seed):
    rng = np.random.default_rng([n, seed])
    p = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(dtype)
             for _ in range(STEPS)]
    return p, grads


def run_sgd(p0, grads, lr, mu, nesterov, wd, nt):
    p = p0.copy()
    vel = np.zeros_like(p)
    for g in grads:
        _optim.sgd_update(p, g, vel, lr, mu, nesterov, wd, nt)
    return p, vel


def run_adam(p0, grads, lr, b1, b2, eps, wd, nt):
    p = p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        _optim.adam_update(p, g, m, v, lr, b1, b2, eps, wd, t, nt)
    return p, m, v


SGD_CASES = [  # lr, momentum, nesterov, weight_decay
    (0.1, 0.0, False, 0.0),
    (0.1, 0.0, False, 1e-2),
    (0.05, 0.9, False, 0.0),
    (0.05, 0.9, False, 5e-4),
    (0.05, 0.9, True, 0.0),
    (0.01, 0.99, True, 1e-3),
]
SGD_IDS = ["plain", "plain-wd", "momentum", "momentum-wd", "nesterov", "nesterov-wd"]

ADAM_CASES = [  # lr, beta1, beta2, eps, weight_decay
    (1e-3, 0.9, 0.999, 1e-8, 0.0),
    (1e-2, 0.9, 0.999, 1e-8, 1e-2),
    (3e-4, 0.5, 0.9, 1e-6, 0.0),
    (1e-1, 0.0, 0.99, 1e-7, 0.0),
]
ADAM_IDS = ["default", "wd", "betas-0.5-0.9", "beta1-0"]


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("case", SGD_CASES, ids=SGD_IDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_sgd_matches_torch_formula(dtype, n, case, nt):
    lr, mu, nesterov, wd = case
    p0, grads = problem(n, dtype, 1)
    p, vel = run_sgd(p0, grads, lr, mu, nesterov, wd, nt)
    p_ref, b_ref = sgd_torch_ref(p0, grads, lr, mu, nesterov, wd)
    assert p.dtype == dtype
    # scale: |p| plus the sum over steps of |lr g| (a bound on how much was added up)
    g_mag = sum(np.abs(g.astype(np.float64)) for g in grads)
    mag_p = np.abs(p0.astype(np.float64)) + np.abs(p_ref) + lr * g_mag / (1 - mu)
    err = np.abs(p - p_ref)
    assert np.all(err <= RTOL[dtype] * mag_p), f"param: max err/mag {np.max(err / mag_p):.3e}"
    if mu != 0:
        mag_b = (g_mag + wd * STEPS * np.max(np.abs(p_ref))) / (1 - mu)
        assert np.all(np.abs(vel - b_ref) <= RTOL[dtype] * mag_b), "velocity"


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("case", ADAM_CASES, ids=ADAM_IDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adam_matches_torch_formula(dtype, n, case, nt):
    lr, b1, b2, eps, wd = case
    p0, grads = problem(n, dtype, 2)
    p, m, v = run_adam(p0, grads, lr, b1, b2, eps, wd, nt)
    p_ref, m_ref, v_ref, cond = adam_torch_ref(p0, grads, lr, b1, b2, eps, wd)
    assert p.dtype == dtype
    g_mag = sum(np.abs(g.astype(np.float64)) + wd * np.abs(p_ref) for g in grads)
    assert np.all(np.abs(m - m_ref) <= RTOL[dtype] * g_mag), "m"
    assert np.all(np.abs(v - v_ref) <= RTOL[dtype] * g_mag ** 2), "v"
    # each Adam step moves p by about lr (|m_hat| / sqrt(v_hat) <~ 1 / sqrt(1 - b2)); the error of
    # a step is relative to its size, the rounding of p - step relative to |p|, and the rounding of
    # g is amplified where sqrt(v_hat) + eps is small next to |grad| + wd |p| (see adam_torch_ref)
    step_mag = STEPS * lr / np.sqrt(1 - b2)
    mag_p = np.abs(p0.astype(np.float64)) + np.abs(p_ref) + step_mag + lr * cond
    err = np.abs(p - p_ref)
    assert np.all(err <= RTOL[dtype] * mag_p), f"param: max err/mag {np.max(err / mag_p):.3e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adam_first_step_is_lr_times_sign(dtype):
    """With zero moments and eps -> 0, Adam's first step is lr * sign(g) (bias correction)."""
    g = np.array([3.0, -2.0, 1e-3, -1e3, 0.5], dtype=dtype)
    p = np.zeros_like(g)
    m = np.zeros_like(g)
    v = np.zeros_like(g)
    _optim.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-30, 0.0, 1, 1)
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=1e-5 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_sgd_without_momentum_leaves_velocity_alone(dtype):
    p0, grads = problem(257, dtype, 3)
    p = p0.copy()
    vel = np.full_like(p, 123.0)
    _optim.sgd_update(p, grads[0], vel, 0.1, 0.0, False, 0.0, 2)
    assert np.all(vel == 123.0)
    expected = (p0.astype(np.float64) - 0.1 * grads[0].astype(np.float64))
    np.testing.assert_allclose(p, expected, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("n", [257, 100_003])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_bit_identical_across_threads(dtype, n):
    p0, grads = problem(n, dtype, 4)
    for case in SGD_CASES:
        runs = [run_sgd(p0, grads, *case, nt) for nt in (1, 2, 3)]
        for other in runs[1:]:
            assert np.array_equal(runs[0][0], other[0]) and np.array_equal(runs[0][1], other[1])
    for case in ADAM_CASES:
        runs = [run_adam(p0, grads, *case, nt) for nt in (1, 2, 3)]
        for other in runs[1:]:
            for a, c in zip(runs[0], other):
                assert np.array_equal(a, c)


# -- subnormals are flushed to 0 (src_cython/optim.h) -------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_flushes_subnormal_velocity_and_grad(dtype, nesterov):
    tiny = np.finfo(dtype).tiny  # smallest normal number
    n = 40
    p = np.ones(n, dtype)
    v = np.full(n, tiny * 1.01, dtype)  # normal now; 0.9 * v is subnormal
    g = np.zeros(n, dtype)
    g[:10] = tiny / 4  # subnormal gradients
    g[30:] = 1.0  # normal ones are used as is
    _optim.sgd_update(p, g, v, 0.1, 0.9, nesterov, 0.0, 1)
    assert np.all(v[:30] == 0), "subnormal velocity must be flushed to 0"
    assert np.all(p[:30] == 1)
    ref_v = dtype(0.9) * dtype(tiny * 1.01) + dtype(1.0)
    np.testing.assert_allclose(v[30:], ref_v, rtol=RTOL[dtype])
    assert not np.any((v != 0) & (np.abs(v) < tiny))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adam_flushes_subnormal_moments_and_grad(dtype):
    tiny = np.finfo(dtype).tiny
    n = 40
    p = np.ones(n, dtype)
    m = np.full(n, tiny * 1.01, dtype)
    v = np.full(n, tiny * 1.0001, dtype)
    g = np.zeros(n, dtype)
    g[:10] = tiny / 4
    g[30:] = 0.5
    _optim.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3, 1)
    assert np.all(m[:30] == 0) and np.all(v[:30] == 0)
    assert np.all(p[:30] == 1)
    assert np.all(m[30:] > 0) and np.all(v[30:] > 0) and np.all(p[30:] < 1)
    for a in (m, v, p):
        assert not np.any((a != 0) & (np.abs(a) < tiny))


# -- AdamW, RMSprop, Adagrad (torch.optim.AdamW / RMSprop / Adagrad, written as documented) -----
def adamw_torch_ref(p, grads, lr, b1, b2, eps, wd):
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p, m, v


def rmsprop_torch_ref(p, grads, lr, rho, eps, wd, mu, centered):
    p = p.astype(np.float64).copy()
    s = np.zeros_like(p)
    a = np.zeros_like(p)
    b = np.zeros_like(p)
    for g in grads:
        g = g.astype(np.float64) + wd * p
        s = rho * s + (1 - rho) * g * g
        if centered:
            a = rho * a + (1 - rho) * g
            d = np.sqrt(s - a * a) + eps
        else:
            d = np.sqrt(s) + eps
        if mu > 0:
            b = mu * b + g / d
            p = p - lr * b
        else:
            p = p - lr * g / d
    return p, s, a, b


def adagrad_torch_ref(p, grads, lr, eps, wd, lr_decay, init):
    p = p.astype(np.float64).copy()
    s = np.full_like(p, init)
    for t, g in enumerate(grads, start=1):
        clr = lr / (1 + (t - 1) * lr_decay)
        g = g.astype(np.float64) + wd * p
        s = s + g * g
        p = p - clr * g / (np.sqrt(s) + eps)
    return p, s


def run_adamw(p0, grads, lr, b1, b2, eps, wd, nt, **clip):
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        _optim.adamw_update(p, g, m, v, lr, b1, b2, eps, wd, t, nt, **clip)
    return p, m, v


def run_rmsprop(p0, grads, lr, rho, eps, wd, mu, centered, nt, **clip):
    p, s, a, b = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)
    for g in grads:
        _optim.rmsprop_update(p, g, s, a, b, lr, rho, eps, wd, mu, centered, nt, **clip)
    return p, s, a, b


def run_adagrad(p0, grads, lr, eps, wd, lr_decay, init, nt, **clip):
    p, s = p0.copy(), np.full_like(p0, init)
    for t, g in enumerate(grads, start=1):
        _optim.adagrad_update(p, g, s, lr, eps, wd, lr_decay, t, nt, **clip)
    return p, s


ADAMW_CASES = [(1e-3, 0.9, 0.999, 1e-8, 1e-2), (1e-2, 0.5, 0.9, 1e-6, 0.5)]
RMSPROP_CASES = [  # lr, rho, eps, weight_decay, momentum, centered
    (1e-2, 0.99, 1e-8, 0.0, 0.0, False),
    (1e-3, 0.9, 1e-6, 1e-2, 0.0, False),
    (1e-2, 0.99, 1e-8, 0.0, 0.9, False),
    (1e-2, 0.9, 1e-8, 0.0, 0.0, True),
    (1e-3, 0.95, 1e-7, 1e-3, 0.5, True),
]
RMSPROP_IDS = ["default", "wd", "momentum", "centered", "centered-momentum-wd"]
ADAGRAD_CASES = [(1e-2, 1e-10, 0.0, 0.0, 0.0), (1e-1, 1e-8, 1e-2, 0.1, 0.5)]
KERNEL_LENGTHS = [1, 7, 257, 100_003]


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("case", ADAMW_CASES, ids=["default", "betas-wd"])
@pytest.mark.parametrize("n", KERNEL_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adamw_matches_torch_formula(dtype, n, case, nt):
    lr, b1, b2, eps, wd = case
    p0, grads = problem(n, dtype, 5)
    p, m, v = run_adamw(p0, grads, *case, nt)
    p_ref, m_ref, v_ref = adamw_torch_ref(p0, grads, *case)
    g_mag = sum(np.abs(g.astype(np.float64)) for g in grads)
    assert np.all(np.abs(m - m_ref) <= RTOL[dtype] * g_mag), "m"
    assert np.all(np.abs(v - v_ref) <= RTOL[dtype] * g_mag ** 2), "v"
    _, _, _, cond = adam_torch_ref(p0, grads, lr, b1, b2, eps, 0.0)
    mag_p = np.abs(p0.astype(np.float64)) + np.abs(p_ref) + STEPS * lr / np.sqrt(1 - b2) \
        + lr * cond
    assert np.all(np.abs(p - p_ref) <= RTOL[dtype] * mag_p), "param"


def test_adamw_without_weight_decay_is_adam_bit_for_bit():
    p0, grads = problem(1000, np.float32, 6)
    a = run_adamw(p0, grads, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    b = run_adam(p0, grads, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("case", RMSPROP_CASES, ids=RMSPROP_IDS)
@pytest.mark.parametrize("n", KERNEL_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_rmsprop_matches_torch_formula(dtype, n, case, nt):
    lr, rho, eps, wd, mu, centered = case
    p0, grads = problem(n, dtype, 7)
    p, s, a, b = run_rmsprop(p0, grads, *case, nt)
    p_ref, s_ref, a_ref, b_ref = rmsprop_torch_ref(p0, grads, *case)
    g_mag = sum(np.abs(g.astype(np.float64)) + wd * np.abs(p_ref) for g in grads)
    assert np.all(np.abs(s - s_ref) <= RTOL[dtype] * g_mag ** 2), "square_avg"
    if centered:
        assert np.all(np.abs(a - a_ref) <= RTOL[dtype] * g_mag), "grad_avg"
    else:
        assert np.all(a == 0), "grad_avg written although not centered"
    if mu == 0:
        assert np.all(b == 0), "momentum_buffer written without momentum"
    # a step is at most lr |g| / sqrt(s) <= lr / sqrt(1 - rho) (/ (1 - mu) with momentum); the
    # centered denominator sqrt(s - a^2) loses relative precision u * s / (s - a^2)
    denom2 = s_ref - a_ref ** 2 if centered else s_ref
    amplify = s_ref / np.maximum(denom2, 1e-300)
    step_mag = STEPS * lr / np.sqrt(1 - rho) / (1 - mu)
    mag_p = np.abs(p0.astype(np.float64)) + np.abs(p_ref) + step_mag * amplify
    assert np.all(np.abs(p - p_ref) <= RTOL[dtype] * mag_p), \
        f"param: max err/mag {np.max(np.abs(p - p_ref) / mag_p):.3e}"


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("case", ADAGRAD_CASES, ids=["default", "decay-wd-init"])
@pytest.mark.parametrize("n", KERNEL_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adagrad_matches_torch_formula(dtype, n, case, nt):
    lr = case[0]
    p0, grads = problem(n, dtype, 8)
    p, s = run_adagrad(p0, grads, *case, nt)
    p_ref, s_ref = adagrad_torch_ref(p0, grads, *case)
    assert np.all(np.abs(s - s_ref) <= RTOL[dtype] * s_ref), "sum"
    # each step moves p by at most lr (|g| <= sqrt(sum))
    mag_p = np.abs(p0.astype(np.float64)) + np.abs(p_ref) + STEPS * lr
    assert np.all(np.abs(p - p_ref) <= RTOL[dtype] * mag_p), "param"


# -- fused clipping and the global norm ----------------------------------------------------------
def clipped(grads, scale, cv):
    return [np.clip(g.astype(np.float64) * scale, -cv, cv) for g in grads]


@pytest.mark.parametrize("clip", [dict(grad_scale=0.37), dict(clip_value=0.2),
                                  dict(grad_scale=0.0)], ids=["scale", "value", "scale-0"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_every_kernel_reads_the_clipped_gradient_and_leaves_it(dtype, clip):
    """Each update with grad_scale / clip_value equals the update of clamp(grad * scale, -cv, cv)
    (the clipped values given as the gradient), and the gradient arrays are not written."""
    scale, cv = clip.get("grad_scale", 1.0), clip.get("clip_value", np.inf)
    p0, grads = problem(257, dtype, 9)
    kept = [g.copy() for g in grads]
    pre = [g.astype(dtype) for g in clipped(grads, scale, cv)]
    assert not all(np.array_equal(a, b) for a, b in zip(pre, grads))  # clipping changes them
    for run, args in [(run_adamw, (1e-2, 0.9, 0.99, 1e-8, 0.1)),
                      (run_rmsprop, (1e-2, 0.9, 1e-8, 0.01, 0.5, True)),
                      (run_adagrad, (1e-1, 1e-10, 0.01, 0.1, 0.1))]:
        got = run(p0, grads, *args, 2, **clip)
        want = run(p0, pre, *args, 2)
        for x, y in zip(got, want):
            np.testing.assert_allclose(x, y, rtol=RTOL[dtype], atol=RTOL[dtype])
    for fn, args in [(_optim.sgd_update, (0.05, 0.9, True, 1e-3, 2)),
                     (_optim.adam_update, (1e-2, 0.9, 0.99, 1e-8, 0.1, 1, 2))]:
        results = []
        for gs, kw in ((grads, clip), (pre, {})):
            p = p0.copy()
            slots = [np.zeros_like(p) for _ in range(1 if fn is _optim.sgd_update else 2)]
            for g in gs:
                fn(p, g, *slots, *args, **kw)
            results.append((p, *slots))
        for x, y in zip(*results):
            np.testing.assert_allclose(x, y, rtol=RTOL[dtype], atol=RTOL[dtype])
    for g, k in zip(grads, kept):
        assert np.array_equal(g, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_clip_value_keeps_nan_and_clamps_inf(dtype):
    p = np.zeros(4, dtype)
    g = np.array([np.nan, np.inf, -np.inf, 0.5], dtype)
    _optim.sgd_update(p, g, p, 1.0, 0.0, False, 0.0, 1, 1.0, 2.0)
    assert np.isnan(p[0]) and list(p[1:]) == [-2.0, 2.0, -0.5]


@pytest.mark.parametrize("n", [0, 1, 9, 16384, 16385, 100_003])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_grad_norm_matches_numpy_and_ignores_thread_count(dtype, n):
    g = (np.random.default_rng(n).standard_normal(n) * 3).astype(dtype)
    norms = [_optim.grad_norm(g, nt) for nt in (1, 2, 3)]
    assert norms[0] == norms[1] == norms[2]  # bit-identical
    assert norms[0] == pytest.approx(np.linalg.norm(g.astype(np.float64)), rel=1e-13, abs=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_grad_norm_reads_subnormals_as_zero_and_propagates_nan(dtype):
    tiny = np.finfo(dtype).tiny
    g = np.array([3.0, 4.0, tiny / 8, -tiny / 2], dtype)
    assert _optim.grad_norm(g, 1) == 5.0
    g[2] = np.nan
    assert np.isnan(_optim.grad_norm(g, 1))
    g[2] = np.inf
    assert _optim.grad_norm(g, 1) == np.inf


@pytest.mark.parametrize("n", [257, 100_003])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_new_kernels_bit_identical_across_threads(dtype, n):
    p0, grads = problem(n, dtype, 10)
    clip = dict(grad_scale=0.75, clip_value=2.0)
    for run, cases in ((run_adamw, ADAMW_CASES), (run_rmsprop, RMSPROP_CASES),
                       (run_adagrad, ADAGRAD_CASES)):
        for case in cases:
            runs = [run(p0, grads, *case, nt, **clip) for nt in (1, 2, 3)]
            for other in runs[1:]:
                for a, c in zip(runs[0], other):
                    assert np.array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_rmsprop_and_adagrad_flush_subnormals(dtype):
    tiny = np.finfo(dtype).tiny
    n = 40
    g = np.zeros(n, dtype)
    g[:10] = tiny / 4
    g[30:] = 0.5
    p = np.ones(n, dtype)
    s = np.full(n, tiny * 1.01, dtype)  # rho * s is subnormal
    a = np.full(n, tiny * 1.01, dtype)
    b = np.full(n, tiny * 1.01, dtype)
    _optim.rmsprop_update(p, g, s, a, b, 1e-3, 0.9, 1e-8, 0.0, 0.9, True, 1)
    for arr in (s, a, b):
        assert np.all(arr[:30] == 0)
        assert not np.any((arr != 0) & (np.abs(arr) < tiny))
    assert np.all(p[:30] == 1) and np.all(p[30:] < 1)
    p = np.ones(n, dtype)
    s = np.zeros(n, dtype)
    _optim.adagrad_update(p, g, s, 0.1, 1e-10, 0.0, 0.0, 1, 1)
    assert np.all(s[:30] == 0) and np.all(p[:30] == 1) and np.all(s[30:] == dtype(0.25))


@pytest.mark.parametrize("call,match", [
    (lambda p: _optim.sgd_update(p, p, p, 0.1, 0.0, False, 0.0, 1, 1.0, 0.0), "clip_value"),
    (lambda p: _optim.sgd_update(p, p, p, 0.1, 0.0, False, 0.0, 1, 1.0, np.nan), "clip_value"),
    (lambda p: _optim.adam_update(p, p, p, p, 0.1, 0.9, 0.9, 1e-8, 0.0, 1, 1, -1.0), "grad_scale"),
    (lambda p: _optim.adamw_update(p, p, p, p, 0.1, 0.9, 0.9, 1e-8, 0.0, 1, 1, np.inf),
     "grad_scale"),
    (lambda p: _optim.adamw_update(p, p, p, p, 0.1, 0.9, 0.9, 1e-8, 0.0, 0, 1), "step"),
    (lambda p: _optim.adagrad_update(p, p, p, 0.1, 1e-10, 0.0, 0.0, 0, 1), "step"),
    (lambda p: _optim.adagrad_update(p, p, p[:3], 0.1, 1e-10, 0.0, 0.0, 1, 1), "length"),
    (lambda p: _optim.adagrad_update(p, p, p, 0.1, 1e-10, 0.0, 0.0, 1, 0), "num_threads"),
    (lambda p: _optim.rmsprop_update(p, p, p, p[:2], p, 0.1, 0.9, 1e-8, 0.0, 0.0, True, 1),
     "length"),
    (lambda p: _optim.rmsprop_update(p, p[:2], p, p, p, 0.1, 0.9, 1e-8, 0.0, 0.0, False, 1),
     "length"),
    (lambda p: _optim.rmsprop_update(p, p, p, p, p[:1], 0.1, 0.9, 1e-8, 0.0, 0.5, False, 1),
     "length"),
    (lambda p: _optim.grad_norm(p, 0), "num_threads"),
])
def test_kernel_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones(5))


def test_rmsprop_unused_slots_may_have_any_length():
    p = np.ones(5)
    g = np.full(5, 0.5)
    s = np.zeros(5)
    _optim.rmsprop_update(p, g, s, p[:1], np.zeros(0), 0.1, 0.9, 1e-8, 0.0, 0.0, False, 1)
    np.testing.assert_allclose(p, 1 - 0.1 * 0.5 / (np.sqrt(0.1 * 0.25) + 1e-8))
