"""MaxPool2D and AvgPool2D: forward against plain loops, gradients against central differences,
thread-count independence, and clear errors for bad shapes."""
import numpy as np
import pytest

import fastnn
from fastnn.layers import AvgPool2D, MaxPool2D

from conftest import numerical_grad, rel_error


def pool_reference(X, kernel, stride, reduce):
    """Y[n, i, j, c] = reduce(X[n, i*sh : i*sh + kh, j*sw : j*sw + kw, c]) by loops."""
    N, H, W, C = X.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    Y = np.zeros((N, Ho, Wo, C))
    for i in range(Ho):
        for j in range(Wo):
            Y[:, i, j, :] = reduce(X[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :], axis=(1, 2))
    return Y


def distinct_values(shape, seed):
    """Values at least 1e-2 apart (no ties, and a 1e-5 step never changes a window's maximum)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float64) * 1e-2 - n * 5e-3).reshape(shape)


CASES = [
    # N, H, W, C, kernel, stride
    (2, 8, 8, 3, 2, None),
    (3, 7, 9, 4, (2, 3), None),          # sizes the window does not divide
    (2, 9, 8, 2, 3, 2),                  # overlapping windows, stride does not divide
    (1, 10, 7, 5, (3, 2), (1, 3)),
    (4, 5, 5, 1, 1, 2),                  # 1x1 window, strided (subsampling)
    (2, 6, 11, 3, (2, 2), (4, 3)),       # stride > window: skipped inputs
    (2, 4, 6, 2, (4, 6), None),          # window == input
    (9, 28, 28, 32, 2, None),            # the small CNN's pool
    (33, 6, 5, 7, 2, 1),                 # odd batch
]


@pytest.mark.parametrize("cls,reduce", [(MaxPool2D, np.max), (AvgPool2D, np.mean)])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_matches_loops(cls, reduce, case, dtype):
    N, H, W, C, k, s = case
    layer = cls(k, stride=s).build(dtype)
    X = np.random.default_rng(0).standard_normal((N, H, W, C)).astype(dtype)
    Y = layer.forward(X)
    ref = pool_reference(X.astype(np.float64), layer.kernel_size, layer.stride, reduce)
    assert Y.shape == ref.shape == (N,) + layer.output_shape((H, W, C))
    assert Y.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert np.abs(Y - ref).max() < tol


def test_default_stride_is_kernel_size():
    assert MaxPool2D(3).stride == (3, 3)
    assert AvgPool2D((2, 3)).stride == (2, 3)
    assert MaxPool2D(3, stride=1).stride == (1, 1)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("case", CASES[:7])
def test_gradients_match_central_differences(cls, case):
    N, H, W, C, k, s = case
    layer = cls(k, stride=s).build(np.float64)
    X = distinct_values((N, H, W, C), seed=1)
    R = np.random.default_rng(2).standard_normal((N,) + layer.output_shape((H, W, C)))

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert dX.shape == X.shape
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6


def test_maxpool_routes_gradient_to_the_maximum():
    X = np.array([[1.0, 5.0, 2.0], [4.0, 3.0, 9.0], [0.0, 8.0, 7.0]]).reshape(1, 3, 3, 1)
    layer = MaxPool2D(2, stride=1).build(np.float64)
    Y = layer.forward(X)
    assert Y[0, :, :, 0].tolist() == [[5.0, 9.0], [8.0, 9.0]]
    dX = layer.backward(np.ones_like(Y))[0, :, :, 0]
    # 9 is the maximum of two windows: it collects both gradients
    assert dX.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 1.0, 0.0]]


def test_maxpool_ties_go_to_the_first_position():
    X = np.zeros((1, 2, 2, 2))
    layer = MaxPool2D(2).build(np.float64)
    layer.forward(X)
    dX = layer.backward(np.ones((1, 1, 1, 2)))
    assert dX[0, 0, 0].tolist() == [1.0, 1.0] and dX.sum() == 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_propagates_nan(dtype):
    X = np.arange(16, dtype=dtype).reshape(1, 4, 4, 1)
    X[0, 1, 2, 0] = np.nan
    X[0, 3, 0, 0] = np.nan
    Y = MaxPool2D(2).build(dtype).forward(X)[0, :, :, 0]
    assert Y[0, 0] == 5 and np.isnan(Y[0, 1]) and np.isnan(Y[1, 0]) and Y[1, 1] == 15


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_thread_count(cls, dtype):
    X = np.random.default_rng(0).standard_normal((37, 28, 27, 16)).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer = cls(3, stride=2).build(dtype)
        Y = layer.forward(X).copy()
        R = np.random.default_rng(1).standard_normal(Y.shape).astype(dtype)
        results.append((Y, layer.backward(R).copy()))
    for Y, dX in results[1:]:
        assert np.array_equal(Y, results[0][0])
        assert np.array_equal(dX, results[0][1])


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_backward_without_input_grad(cls):
    layer = cls(2).build(np.float64)
    layer.need_input_grad = False
    Y = layer.forward(np.ones((2, 4, 4, 3)))
    assert layer.backward(np.ones_like(Y)) is None


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_empty_batch(cls):
    layer = cls(2).build(np.float64)
    Y = layer.forward(np.zeros((0, 4, 5, 3)))
    assert Y.shape == (0, 2, 2, 3)
    assert layer.backward(np.zeros_like(Y)).shape == (0, 4, 5, 3)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("kwargs,exc", [
    ({"kernel_size": 0}, ValueError), ({"kernel_size": (2, -1)}, ValueError),
    ({"kernel_size": 2, "stride": 0}, ValueError), ({"kernel_size": 2, "stride": -2}, ValueError),
    ({"kernel_size": (2, 2, 2)}, ValueError), ({"kernel_size": 2.0}, TypeError),
    ({"kernel_size": 2, "stride": (1, True)}, TypeError),
])
def test_bad_arguments(cls, kwargs, exc):
    with pytest.raises(exc):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_bad_input_shapes(cls):
    layer = cls((3, 2)).build(np.float32)
    with pytest.raises(ValueError, match="larger than the input"):
        layer.forward(np.zeros((1, 2, 5, 1)))
    with pytest.raises(ValueError, match="channels-last"):
        layer.forward(np.zeros((1, 6, 6)))
    with pytest.raises(RuntimeError):
        cls(2).build(np.float32).backward(np.zeros((1, 1, 1, 1)))
    Y = layer.forward(np.zeros((2, 6, 6, 3)))
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.zeros((2, 2, 3, 4)))
    layer.backward(np.zeros_like(Y))


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_get_config_round_trip(cls):
    layer = cls((3, 2), stride=(1, 2))
    clone = cls(**layer.get_config())
    assert clone.kernel_size == (3, 2) and clone.stride == (1, 2)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", [((3, 28, 28, 32), 2), ((2, 9, 11, 5), 2), ((2, 10, 7, 3), 3),
                                     ((1, 5, 5, 1), (2, 3))])
def test_maxpool_backward_tiled_path_equals_scatter(shape, k, dtype):
    """Tiling windows (stride == kernel) take a write-once path; it must give exactly the general
    zero-then-scatter result, including the rows and columns no window covers."""
    from fastnn import _conv

    rng = np.random.default_rng(4)
    X = rng.standard_normal(shape).astype(dtype)
    X[0, 0, 0, 0] = X[0, 0, 1, 0]  # a tie: the first position wins in both
    layer = MaxPool2D(k).build(dtype)
    Y = layer.forward(X)
    G = rng.standard_normal(Y.shape).astype(dtype)
    fast = layer.backward(G).copy()
    _conv._disable_tiled_pool_backward(True)
    try:
        slow = layer.backward(G).copy()
    finally:
        _conv._disable_tiled_pool_backward(False)
    assert np.array_equal(fast, slow)
    assert np.count_nonzero(fast) == np.count_nonzero(G)
