"""Dropout: the counter-based mask against a NumPy SplitMix64 reference, keep fraction and
expectation (statistical bounds), thread-count and resume determinism, gradients, inference."""
import math

import numpy as np
import pytest
from conftest import numerical_grad

import fastnn
from fastnn import Dense, Dropout, Sequential, SoftmaxCrossEntropy
from fastnn import _norm

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(z):
    """SplitMix64's finaliser (Stafford Mix13) on uint64 arrays, wrapping mod 2^64."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def reference_mask(seed, step, n, rate):
    """The documented mask (src_cython/norm.h) written out in NumPy: element i is kept when the
    top 53 bits of mix64(key + (i + 1) * GOLDEN) are >= floor(rate * 2^53)."""
    with np.errstate(over="ignore"):
        key = mix64(mix64(np.uint64(seed)) ^ mix64(np.array(step, np.uint64) + GOLDEN))
        i = np.arange(1, n + 1, dtype=np.uint64)
        r = mix64(key + i * GOLDEN)
    threshold = np.uint64(int(rate * 2.0 ** 53))
    return (r >> np.uint64(11)) >= threshold


def hoeffding(n, width=1.0, p_fail=1e-9):
    """t with P(|mean - E mean| >= t) <= p_fail for n independent values in an interval of
    ``width`` (Hoeffding: 2 exp(-2 n t^2 / width^2))."""
    return width * math.sqrt(math.log(2.0 / p_fail) / (2.0 * n))


# ---- the kernel against the NumPy reference ---------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.9])
def test_kernel_mask_and_values_match_numpy_reference(dtype, rate):
    rng = np.random.default_rng(1)
    n = 50_000  # several blocks, threaded
    X = rng.standard_normal(n).astype(dtype)
    Y, mask = np.empty_like(X), np.empty(n, np.uint8)
    seed, step = 123456789012345, 7
    _norm.dropout_forward(X, Y, mask, rate, seed, step, 2)
    keep = reference_mask(seed, step, n, rate)
    np.testing.assert_array_equal(mask, keep.astype(np.uint8))
    scale = dtype(1.0 / (1.0 - rate))
    np.testing.assert_array_equal(Y, X * (keep.astype(dtype) * scale))
    dY = rng.standard_normal(n).astype(dtype)
    dX = np.empty_like(dY)
    _norm.dropout_backward(dY, mask, dX, rate, 2)
    np.testing.assert_array_equal(dX, dY * (keep.astype(dtype) * scale))


def test_kernel_rejects_bad_lengths_and_rate():
    X = np.ones(10)
    with pytest.raises(ValueError, match="one length"):
        _norm.dropout_forward(X, np.empty(9), np.empty(10, np.uint8), 0.5, 0, 0, 1)
    with pytest.raises(ValueError, match="rate"):
        _norm.dropout_forward(X, np.empty(10), np.empty(10, np.uint8), 1.0, 0, 0, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _norm.dropout_backward(X, np.empty(10, np.uint8), np.empty(10), 0.5, 0)


# ---- statistics -------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_keep_fraction_and_expectation_within_hoeffding_bounds(rate):
    """For a Bernoulli(1 - rate) mask the bounds fail with probability < 1e-9 each."""
    n = 1 << 18
    layer = Dropout(rate, seed=2024).build(np.float64)
    X = np.ones((n // 64, 64))
    for _ in range(3):  # three steps, three independent masks
        Y = layer.forward(X)
        kept = np.count_nonzero(Y) / n
        assert abs(kept - (1 - rate)) < hoeffding(n)
        # E[Y] = X: Y takes values in [0, 1 / (1 - rate)]
        assert abs(Y.mean() - 1.0) < hoeffding(n, width=1.0 / (1.0 - rate))


def test_masks_are_not_correlated_between_steps_or_neighbours():
    """Agreement of two independent Bernoulli(1/2) masks is 1/2 (Hoeffding, p < 1e-9 each)."""
    n = 1 << 18
    layer = Dropout(0.5, seed=5).build(np.float64)
    X = np.ones((n // 128, 128))
    a = layer.forward(X).copy() != 0
    b = layer.forward(X).copy() != 0
    bound = hoeffding(n)
    assert abs(np.mean(a == b) - 0.5) < bound
    flat = a.reshape(-1)
    assert abs(np.mean(flat[1:] == flat[:-1]) - 0.5) < hoeffding(n - 1)


# ---- determinism ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_and_step_same_mask_at_1_and_2_threads(dtype):
    X = np.random.default_rng(0).standard_normal((512, 32, 3)).astype(dtype)  # threaded
    out = {}
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        layer = Dropout(0.3, seed=99).build(dtype)
        layer.step = 41
        Y = layer.forward(X).copy()
        dX = layer.backward(np.ones_like(X)).copy()
        out[nt] = (Y, dX)
    np.testing.assert_array_equal(out[1][0], out[2][0])
    np.testing.assert_array_equal(out[1][1], out[2][1])


def test_steps_differ_the_step_counts_training_passes_and_replays():
    layer = Dropout(0.5, seed=3).build(np.float64)
    X = np.ones((64, 16))
    first = layer.forward(X).copy()
    assert layer.step == 1
    second = layer.forward(X).copy()
    assert layer.step == 2
    assert not np.array_equal(first, second)
    layer.forward(X, training=False)
    assert layer.step == 2  # inference does not count
    layer.step = 0
    np.testing.assert_array_equal(layer.forward(X), first)


def test_seeds_differ_and_equal_seeds_agree():
    X = np.ones((64, 16))
    a = Dropout(0.5, seed=1).forward(X).copy()
    b = Dropout(0.5, seed=1).forward(X).copy()
    c = Dropout(0.5, seed=2).forward(X).copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _dropout_model(seed):
    return Sequential([Dense(6, 16, activation="relu"), Dropout(0.5), Dense(16, 3)],
                      seed=seed).compile("adam", SoftmaxCrossEntropy())


def test_seed_none_is_drawn_from_the_model_seed():
    a, b, c = _dropout_model(0), _dropout_model(0), _dropout_model(1)
    assert a.layers[1].seed == b.layers[1].seed != c.layers[1].seed
    assert a.layers[1].get_config() == {"rate": 0.5, "seed": a.layers[1].seed}
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    ha = a.fit(X, y, epochs=2, batch_size=8, verbose=0).history["loss"]
    hb = b.fit(X, y, epochs=2, batch_size=8, verbose=0).history["loss"]
    assert ha == hb
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.layers[1].step == 10  # 2 epochs of 5 batches


def test_fit_uses_training_and_predict_inference():
    model = _dropout_model(0)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((32, 6))
    np.testing.assert_array_equal(model.predict(X), model.predict(X))
    assert model.layers[1].step == 0
    model.train_on_batch(X, rng.integers(0, 3, 32))
    assert model.layers[1].step == 1


# ---- gradients and identities -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 4, 2)])
def test_input_gradient_finite_differences_with_a_fixed_mask(shape):
    rng = np.random.default_rng(2)
    X = rng.standard_normal(shape)
    G = rng.standard_normal(shape)
    layer = Dropout(0.4, seed=11).build(np.float64)

    def f():
        layer.step = 6  # the same mask for every evaluation
        return np.sum(layer.forward(X) * G)

    num = numerical_grad(f, X)
    f()
    dX = layer.backward(G)
    np.testing.assert_allclose(dX, num, rtol=1e-7, atol=1e-9)
    dX = dX.copy()
    layer.step = 6  # dX is G times the step-6 mask / (1 - rate)
    mask = layer.forward(np.ones(shape)) != 0
    np.testing.assert_array_equal(dX, np.where(mask, G / 0.6, 0.0))


def test_inference_is_the_identity_and_its_backward_too():
    layer = Dropout(0.5, seed=0).build(np.float32)
    X = np.random.default_rng(0).standard_normal((8, 3, 2)).astype(np.float32)
    Y = layer.forward(X, training=False)
    np.testing.assert_array_equal(Y, X)
    G = np.full_like(X, 2.0)
    np.testing.assert_array_equal(layer.backward(G), G)


def test_rate_zero_is_the_identity_in_training():
    layer = Dropout(0.0, seed=0).build(np.float64)
    X = np.random.default_rng(0).standard_normal((16, 5))
    np.testing.assert_array_equal(layer.forward(X), X)
    np.testing.assert_array_equal(layer.backward(X * 3), X * 3)


def test_first_layer_skips_the_input_gradient():
    model = Sequential([Dropout(0.5), Dense(4, 2)], seed=0)
    X = np.ones((3, 4), np.float32)
    model.forward(X, training=True)
    assert model.backward(np.ones((3, 2))) is None


# ---- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rate_outside_0_1_raises(rate):
    with pytest.raises(ValueError, match="rate"):
        Dropout(rate)


@pytest.mark.parametrize("bad, exc", [("0.5", TypeError), (None, TypeError)])
def test_rate_not_a_number_raises(bad, exc):
    with pytest.raises(exc, match="rate"):
        Dropout(bad)


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (2 ** 64, ValueError),
                                       (1.5, TypeError), (True, TypeError)])
def test_bad_seed_or_step_raises(seed, exc):
    with pytest.raises(exc, match="seed"):
        Dropout(0.5, seed=seed)
    layer = Dropout(0.5, seed=0)
    with pytest.raises(exc, match="step"):
        layer.step = seed


def test_backward_before_forward_and_wrong_shape_raise():
    layer = Dropout(0.5, seed=0).build(np.float64)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 2)))
    layer.forward(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        layer.backward(np.ones((2, 3)))


def test_set_state_validates():
    layer = Dropout(0.5, seed=0)
    layer.set_state({"step": 12})
    assert layer.step == 12 and layer.get_state() == {"step": 12}
    for bad in ({"step": -1}, {"step": "3"}, {"steps": 1}, [1]):
        with pytest.raises(ValueError):
            layer.set_state(bad)
