"""MaxPool2D, AvgPool2D (padding "same", "valid" and ints) and GlobalAvgPool2D: forward against
plain loops and explicitly padded arrays, gradients against central differences, thread-count
independence, and clear errors for bad shapes and arguments."""
import numpy as np
import pytest

import fastnn
from fastnn.layers import AvgPool2D, GlobalAvgPool2D, MaxPool2D

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


# ---- padding: "same" (TensorFlow's arithmetic), "valid", ints (symmetric) ------------------------

def tf_same_pads(size, kernel, stride):
    """TensorFlow's "same" padding of one axis: ``out = ceil(size / stride)``, total
    ``max((out - 1) stride + kernel - size, 0)``, ``total // 2`` before, the rest after."""
    out = int(np.ceil(size / stride))
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def padded_pool_reference(X, kernel, stride, pads, kind):
    """Pool ``X`` padded explicitly by np.pad, ``pads = (top, bottom, left, right)``: max with
    -inf padding; average = window sum (zero padding) / number of real positions (a padded ones
    mask pooled the same way)."""
    pt, pb, pl, pr = pads
    width = ((0, 0), (pt, pb), (pl, pr), (0, 0))
    X = np.asarray(X, np.float64)
    if kind == "max":
        Xp = np.pad(X, width, constant_values=-np.inf)
        return pool_reference(Xp, kernel, stride, np.max)
    sums = pool_reference(np.pad(X, width), kernel, stride, np.sum)
    counts = pool_reference(np.pad(np.ones_like(X[:1, :, :, :1]), width), kernel, stride, np.sum)
    assert counts.min() >= 1
    return sums / counts


SAME_CASES = [
    # N, H, W, C, kernel, stride
    (2, 7, 6, 3, 3, 1),            # (1, 1)
    (2, 7, 6, 3, 2, 1),            # (0, 1): the extra row / column at the bottom / right
    (2, 8, 9, 2, 4, 1),            # (1, 2)
    (3, 7, 8, 2, 3, 2),            # H (1, 1), W (0, 1)
    (2, 9, 10, 3, (3, 4), 3),      # H (0, 0), W (1, 2)
    (2, 5, 5, 4, 2, None),         # stride 2 (= kernel): (0, 1), out 3
    (2, 11, 10, 4, (5, 2), (3, 2)),
    (2, 3, 2, 2, 5, 1),            # window larger than the input
    (2, 2, 3, 2, 4, 3),            # one output
    (9, 28, 27, 16, 3, 2),         # larger
]


def _same_pads(layer, H, W):
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    Ho, pt, pb = tf_same_pads(H, kh, sh)
    Wo, pl, pr = tf_same_pads(W, kw, sw)
    return (Ho, Wo), (pt, pb, pl, pr)


@pytest.mark.parametrize("cls,kind", [(MaxPool2D, "max"), (AvgPool2D, "avg")])
@pytest.mark.parametrize("case", SAME_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_padding_matches_explicit_padding(cls, kind, case, dtype):
    N, H, W, C, k, s = case
    layer = cls(k, stride=s, padding="same").build(dtype)
    (Ho, Wo), pads = _same_pads(layer, H, W)
    assert layer.output_shape((H, W, C)) == (Ho, Wo, C)
    assert (Ho, Wo) == (-(-H // layer.stride[0]), -(-W // layer.stride[1]))
    assert layer.pads(H, W) == pads
    X = np.random.default_rng(0).standard_normal((N, H, W, C)).astype(dtype)
    Y = layer.forward(X)
    ref = padded_pool_reference(X, layer.kernel_size, layer.stride, pads, kind)
    assert Y.shape == ref.shape == (N, Ho, Wo, C)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert np.abs(Y - ref).max() < tol


def test_same_cases_put_the_extra_padding_at_the_bottom_right():
    uneven = set()
    for _, H, W, _, k, s in SAME_CASES:
        _, (pt, pb, pl, pr) = _same_pads(MaxPool2D(k, stride=s), H, W)
        uneven |= {"H"} if pb > pt else set()
        uneven |= {"W"} if pr > pl else set()
    assert uneven == {"H", "W"}


INT_PAD_CASES = [
    # N, H, W, C, kernel, stride, padding
    (2, 7, 6, 3, 3, 1, 1),
    (2, 8, 9, 2, 2, 2, 1),
    (3, 7, 8, 2, (3, 4), (2, 3), (1, 2)),
    (2, 5, 6, 3, (5, 2), 2, (2, 0)),
]


@pytest.mark.parametrize("cls,kind", [(MaxPool2D, "max"), (AvgPool2D, "avg")])
@pytest.mark.parametrize("case", INT_PAD_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_int_padding_is_symmetric_and_matches_explicit_padding(cls, kind, case, dtype):
    N, H, W, C, k, s, p = case
    layer = cls(k, stride=s, padding=p).build(dtype)
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    assert layer.pads(H, W) == (ph, ph, pw, pw)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1  # torch's formula
    assert layer.output_shape((H, W, C)) == (Ho, Wo, C)
    X = np.random.default_rng(1).standard_normal((N, H, W, C)).astype(dtype)
    ref = padded_pool_reference(X, layer.kernel_size, layer.stride, (ph, ph, pw, pw), kind)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert np.abs(layer.forward(X) - ref).max() < tol


def test_average_divides_by_the_real_count_not_the_window():
    """Ones stay ones: count_include_pad=False (PyTorch's default True would give 4/9 in the
    corners of a 3x3 window with padding 1)."""
    for layer in (AvgPool2D(3, stride=1, padding=1), AvgPool2D(3, stride=2, padding="same")):
        Y = layer.build(np.float64).forward(np.ones((1, 5, 6, 2)))
        assert np.array_equal(Y, np.ones_like(Y))
    Y = AvgPool2D(2, padding="same").build(np.float64).forward(
        np.arange(1.0, 10.0).reshape(1, 3, 3, 1))[0, :, :, 0]
    assert Y.tolist() == [[3.0, 4.5], [7.5, 9.0]]  # (1+2+4+5)/4, (3+6)/2, (7+8)/2, 9/1


def test_max_ignores_the_padding():
    """All-negative inputs: a zero-padded max would return 0 at the borders."""
    X = -np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    for layer in (MaxPool2D(2, padding="same"), MaxPool2D(3, stride=1, padding=1)):
        Y = layer.build(np.float64).forward(X)
        assert Y.max() < 0
    Y = MaxPool2D(2, padding="same").build(np.float64).forward(X)[0, :, :, 0]
    assert Y.tolist() == [[-1.0, -3.0], [-7.0, -9.0]]


GRAD_PAD_CASES = [
    # N, H, W, C, kernel, stride, padding
    (2, 7, 6, 3, 2, 1, "same"),
    (2, 7, 8, 2, 3, 2, "same"),
    (2, 9, 10, 2, (3, 4), 3, "same"),
    (2, 5, 5, 2, 2, None, "same"),
    (2, 3, 2, 2, 5, 1, "same"),
    (2, 7, 6, 2, 3, 1, 1),
    (2, 8, 9, 2, (3, 4), (2, 3), (1, 2)),
]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("case", GRAD_PAD_CASES)
def test_padded_gradients_match_central_differences(cls, case):
    N, H, W, C, k, s, p = case
    layer = cls(k, stride=s, padding=p).build(np.float64)
    X = distinct_values((N, H, W, C), seed=1)
    R = np.random.default_rng(2).standard_normal((N,) + layer.output_shape((H, W, C)))

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert dX.shape == X.shape
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p", [(3, 2, "same"), (2, None, "same"), (3, 1, 1)])
def test_padded_results_do_not_depend_on_thread_count(cls, dtype, k, s, p):
    X = np.random.default_rng(0).standard_normal((37, 28, 27, 16)).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer = cls(k, stride=s, padding=p).build(dtype)
        Y = layer.forward(X).copy()
        R = np.random.default_rng(1).standard_normal(Y.shape).astype(dtype)
        results.append((Y, layer.backward(R).copy()))
    for Y, dX in results[1:]:
        assert np.array_equal(Y, results[0][0])
        assert np.array_equal(dX, results[0][1])


@pytest.mark.parametrize("shape,k", [((2, 5, 5, 3), 2), ((2, 7, 9, 2), 3), ((1, 4, 4, 1), 2)])
def test_maxpool_backward_with_same_padding_equals_scatter(shape, k):
    """Stride == kernel with "same" padding at the end: the tiled write-once path does not apply
    where the last window reaches into the padding; both settings give the scatter result."""
    from fastnn import _conv

    X = np.random.default_rng(4).standard_normal(shape)
    layer = MaxPool2D(k, padding="same").build(np.float64)
    Y = layer.forward(X)
    G = np.random.default_rng(5).standard_normal(Y.shape)
    fast = layer.backward(G).copy()
    _conv._disable_tiled_pool_backward(True)
    try:
        slow = layer.backward(G).copy()
    finally:
        _conv._disable_tiled_pool_backward(False)
    assert np.array_equal(fast, slow)
    ref = np.zeros_like(X)
    (Ho, Wo), (pt, _, pl, _) = _same_pads(layer, shape[1], shape[2])
    for n in range(shape[0]):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(shape[3]):
                    r0, c0 = max(i * k - pt, 0), max(j * k - pl, 0)
                    win = X[n, r0:i * k - pt + k, c0:j * k - pl + k, c]
                    a, b = np.unravel_index(np.argmax(win), win.shape)
                    ref[n, r0 + a, c0 + b, c] += G[n, i, j, c]
    assert np.array_equal(fast, ref)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("padding,saved", [("same", "same"), ("Same", "same"),
                                           ("valid", "valid"), (1, [1, 1]), ((0, 1), [0, 1])])
def test_padding_config_round_trip(cls, padding, saved):
    layer = cls((3, 2), stride=(1, 2), padding=padding)
    assert layer.get_config()["padding"] == saved
    clone = cls(**layer.get_config())
    assert clone.padding == layer.padding and clone.get_config() == layer.get_config()


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_config_without_padding_loads_as_valid(cls):
    """Files written before pools had padding store no "padding": the default is no padding."""
    layer = cls(**{"kernel_size": [2, 2], "stride": [2, 2]})
    assert layer.padding == (0, 0) and layer.pads(5, 5) == (0, 0, 0, 0)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_bad_padding_arguments(cls):
    with pytest.raises(ValueError, match="'valid', 'same'") as info:
        cls(2, padding="full")
    assert "'full'" in str(info.value)
    with pytest.raises(ValueError, match="at most half"):
        cls(3, padding=2)                # torch: pad should be at most half of kernel size
    with pytest.raises(ValueError, match="at most half"):
        cls((4, 3), padding=(2, 2))
    with pytest.raises(ValueError, match=">= 0"):
        cls(3, padding=-1)
    with pytest.raises(TypeError):
        cls(3, padding=None)
    with pytest.raises(TypeError):
        cls(3, padding=0.5)
    cls((4, 3), padding=(2, 1))          # at the limit: accepted


def test_pool_kernels_refuse_padding_not_smaller_than_the_window():
    from fastnn import _conv

    X = np.zeros((1, 4, 4, 1))
    Y = np.zeros((1, 3, 3, 1))
    with pytest.raises(ValueError, match="smaller than the window"):
        _conv.avgpool_forward(X, Y, 2, 2, 2, 2, 1, ph=2, pw=0, ph_end=0, pw_end=2)
    with pytest.raises(ValueError, match="smaller than the window"):
        _conv.maxpool_forward(X, Y, np.zeros((1, 3, 3, 1), np.intc), 2, 2, 2, 2, 1, ph_end=2)
    _conv.avgpool_forward(X, Y, 2, 2, 2, 2, 1, ph=1, pw=1)  # (4 + 2 - 2) // 2 + 1 = 3


# ---- GlobalAvgPool2D -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (1, 1, 1, 1), (2, 1, 9, 3), (33, 6, 5, 17),
                                   (4, 28, 28, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avgpool_is_the_mean_over_height_and_width(shape, dtype):
    X = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    layer = GlobalAvgPool2D()
    Y = layer.forward(X)
    assert Y.shape == (shape[0], shape[3]) and Y.dtype == dtype
    assert layer.output_shape(shape[1:]) == (shape[3],)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert np.abs(Y - X.astype(np.float64).mean(axis=(1, 2))).max() < tol


@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (2, 1, 3, 2), (1, 4, 4, 1)])
def test_global_avgpool_gradient_matches_central_differences(shape):
    layer = GlobalAvgPool2D().build(np.float64)
    rng = np.random.default_rng(3)
    X = rng.standard_normal(shape)
    R = rng.standard_normal((shape[0], shape[3]))

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert dX.shape == X.shape
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-8
    expected = np.broadcast_to(R[:, None, None, :] / (shape[1] * shape[2]), shape)
    assert np.allclose(dX, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 9, 11, 33), (2, 40, 40, 8)])
def test_global_avgpool_does_not_depend_on_thread_count(dtype, shape):
    X = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    R = np.random.default_rng(1).standard_normal((shape[0], shape[3])).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer = GlobalAvgPool2D().build(dtype)
        results.append((layer.forward(X).copy(), layer.backward(R).copy()))
    for Y, dX in results[1:]:
        assert np.array_equal(Y, results[0][0]) and np.array_equal(dX, results[0][1])


def test_global_avgpool_errors_and_edge_cases():
    layer = GlobalAvgPool2D().build(np.float64)
    with pytest.raises(RuntimeError):
        layer.backward(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="channels-last"):
        layer.forward(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="non-empty"):
        layer.forward(np.zeros((2, 0, 5, 3)))
    Y = layer.forward(np.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.zeros((2, 4)))
    assert layer.backward(np.zeros_like(Y)).shape == (2, 3, 4, 5)
    assert layer.forward(np.zeros((0, 3, 4, 5))).shape == (0, 5)
    assert layer.backward(np.zeros((0, 5))).shape == (0, 3, 4, 5)
    layer.need_input_grad = False
    layer.forward(np.ones((2, 3, 4, 5)))
    assert layer.backward(np.ones((2, 5))) is None
    assert GlobalAvgPool2D().get_config() == {}
    assert fastnn.GlobalAvgPool2D is GlobalAvgPool2D


def test_global_avgpool_kernels_check_shapes():
    from fastnn import _conv

    with pytest.raises(ValueError):
        _conv.global_avgpool_forward(np.zeros((2, 3, 3, 4)), np.zeros((2, 3)), 1)
    with pytest.raises(ValueError):
        _conv.global_avgpool_backward(np.zeros((3, 4)), np.zeros((2, 3, 3, 4)), 1)
    with pytest.raises(ValueError):
        _conv.global_avgpool_forward(np.zeros((2, 3, 3, 4)), np.zeros((2, 4)), 0)


@pytest.mark.parametrize("cls,kind", [(MaxPool2D, "max"), (AvgPool2D, "avg")])
@pytest.mark.parametrize("pads", [(0, 2, 1, 0), (2, 0, 0, 1), (1, 2, 2, 2)])
def test_arbitrary_asymmetric_padding_in_the_kernels(cls, kind, pads):
    """The pool kernels take any (top, bottom, left, right) padding below the window, not only
    TensorFlow's split (the layer's pads() overridden on the instance)."""
    layer = cls(3, stride=2).build(np.float64)
    layer.pads = lambda H, W: pads
    X = distinct_values((2, 7, 6, 3), seed=3)
    ref = padded_pool_reference(X, (3, 3), (2, 2), pads, kind)
    Y = layer.forward(X)
    assert Y.shape == ref.shape == (2,) + layer.output_shape((7, 6, 3))
    assert np.abs(Y - ref).max() < 1e-14
    R = np.random.default_rng(2).standard_normal(Y.shape)

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6
