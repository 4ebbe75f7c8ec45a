"""Mixed precision (``Sequential(dtype="mixed_bfloat16")``): the bfloat16 rounding, the bfloat16
GEMM of every kernel (src_cython/bgemm.h) against a NumPy reference that rounds its inputs the
same way, each layer's gradients against float32, thread-count bit-identity, and the policy's
place in the API (config, model files, CLI)."""
import io

import numpy as np
import pytest

import fastnn
from fastnn import _config, _gemm, models
from fastnn.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                           GlobalAvgPool2D, LayerNorm, MaxPool2D)

# every level; a level the CPU cannot run falls back to the best one it can (still tested)
KERNELS = ["emulated", "avx512_bf16", "amx"]

SHAPES = [  # (M, N, K): edges of the 32 x 32 blocks, pairs of K, KC = 512 slices
    (1, 1, 1), (1, 10, 784), (7, 5, 3), (31, 33, 63), (32, 32, 32), (33, 70, 600),
    (100, 64, 1100), (3, 513, 40), (130, 17, 2),
]

BF16_EPS = 2.0 ** -8  # bfloat16 keeps 8 significant bits: unit roundoff 2^-8


def round_bf16_ref(x):
    """NumPy transcription of the rounding: nearest, ties to even; NaN stays NaN (quiet); zeros
    and float32 subnormals become a signed zero (as AVX512_BF16 and AMX treat them)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    r = np.where((u & 0x7FFFFFFF) > 0x7F800000, (u >> 16) | 0x40, r)
    r = np.where((u & 0x7F800000) == 0, (u >> 16) & 0x8000, r)
    return (r.astype(np.uint32) << 16).view(np.float32).reshape(np.shape(x))


@pytest.fixture(params=KERNELS)
def kernel(request):
    name = _config.set_bf16_kernel(request.param)
    yield name
    _config.set_bf16_kernel(None)


# -- rounding -------------------------------------------------------------------------------------
def _has_bf16_instructions():
    try:
        _gemm.round_bf16(np.ones(1, np.float32), np.empty(1, np.float32), "hardware")
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("simd", [True, False, "hardware"])
def test_rounding_matches_reference_on_every_bit_pattern_class(simd):
    if simd == "hardware" and not _has_bf16_instructions():
        pytest.skip("no AVX512_BF16 on this CPU")
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x7F800000, 0xFF800000,
                        0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x3F808000, 0x3F818000, 0x3F808001,
                        0x7F7FFFFF, 0x3F7FFFFF], np.uint32)
    x = np.concatenate([bits, special]).view(np.float32)
    y = np.empty_like(x)
    _gemm.round_bf16(x, y, simd)
    ref = round_bf16_ref(x)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(y), nan)
    assert np.array_equal(y[~nan].view(np.uint32), ref[~nan].view(np.uint32))
    assert np.array_equal(y[nan].view(np.uint32), ref[nan].view(np.uint32))  # NaN made quiet
    # ties go to the even neighbour; the largest float32 rounds to inf (nearest, as IEEE says)
    assert y[-5] == 1.0 and y[-4] == np.float32(1.015625) and y[-3] == np.float32(1.0078125)
    assert np.isinf(y[-2]) and y[-1] == 1.0


def test_rounding_error_is_at_most_half_an_ulp():
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    y = np.empty_like(x)
    _gemm.round_bf16(x, y)
    assert np.all(np.abs(y - x) <= np.abs(x) * BF16_EPS)
    assert np.max(np.abs(y - x) / np.abs(x)) > BF16_EPS / 2  # not a finer rounding


def test_round_bf16_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="round_bf16"):
        _gemm.round_bf16(np.zeros(3, np.float32), np.zeros(4, np.float32))


# -- the bfloat16 GEMM ---------------------------------------------------------------------------
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_bgemm_matches_reference_with_rounded_inputs(kernel, M, N, K, trans_a, trans_b):
    rng = np.random.default_rng(M * 1000 + N + K)
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    opA = round_bf16_ref(A).astype(np.float64)
    opB = round_bf16_ref(B).astype(np.float64)
    opA, opB = (opA.T if trans_a else opA), (opB.T if trans_b else opB)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    for accumulate in (False, True):
        C = C0.copy()
        _gemm.gemm(A, B, C, trans_a, trans_b, accumulate, True)
        ref = opA @ opB + (C0 if accumulate else 0)
        # the products of bfloat16 values are exact in float32: only the float32 sums round
        bound = 4 * max(K, 1) * np.finfo(np.float32).eps * (np.abs(opA) @ np.abs(opB) + 1)
        assert np.all(np.abs(C - ref) <= bound), (kernel, M, N, K, accumulate)


def test_bgemm_differs_from_float32_by_the_input_rounding():
    """Not the float32 GEMM in disguise: the error against the unrounded float64 product is of
    bfloat16's size, and the rounded-input reference is matched far more closely."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((64, 256)).astype(np.float32)
    B = rng.standard_normal((256, 48)).astype(np.float32)
    C = np.zeros((64, 48), np.float32)
    _gemm.gemm(A, B, C, False, False, False, True)
    exact = A.astype(np.float64) @ B.astype(np.float64)
    rounded = round_bf16_ref(A).astype(np.float64) @ round_bf16_ref(B).astype(np.float64)
    scale = np.abs(A).astype(np.float64) @ np.abs(B)
    assert np.max(np.abs(C - exact) / scale) > 2.0 ** -14
    assert np.max(np.abs(C - rounded) / scale) < 2.0 ** -18


def test_bgemm_kernel_results_do_not_depend_on_the_row_split(kernel):
    """Blocks of rows or columns (what the threads take) give the same bits as one call."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((70, 600)).astype(np.float32)
    B = rng.standard_normal((600, 90)).astype(np.float32)
    whole = np.zeros((70, 90), np.float32)
    _gemm.gemm(A, B, whole, False, False, False, True)
    top = np.zeros((37, 90), np.float32)
    bottom = np.zeros((33, 90), np.float32)
    _gemm.gemm(np.ascontiguousarray(A[:37]), B, top, False, False, False, True)
    _gemm.gemm(np.ascontiguousarray(A[37:]), B, bottom, False, False, False, True)
    left = np.zeros((70, 45), np.float32)
    _gemm.gemm(A, np.ascontiguousarray(B[:, :45]), left, False, False, False, True)
    assert np.array_equal(np.vstack([top, bottom]), whole)
    assert np.array_equal(left, whole[:, :45])


@pytest.mark.parametrize("K,N", [(1, 1), (40, 70), (600, 33), (1100, 512)])
@pytest.mark.parametrize("trans", [False, True])
def test_packing_rounds_alike_with_either_instruction_set(K, N, trans):
    """The packing of B rounds with vcvtne2ps2bf16 where the CPU has it, else with AVX-512F code:
    the same bits either way (and the same as the NumPy rounding, through the GEMM tests)."""
    rng = np.random.default_rng(K * N)
    B = rng.standard_normal((N, K) if trans else (K, N)).astype(np.float32)
    B.ravel()[::7] = rng.integers(0, 2 ** 32, B.size, dtype=np.uint64)[::7].astype(
        np.uint32).view(np.float32)  # every bit-pattern class: NaNs, infinities, subnormals
    auto = np.empty(_gemm.packed_bf16_size(K, N), np.uint16)
    _gemm.pack_bf16(B, trans, auto)
    _gemm._force_sw_rounding(True)
    try:
        sw = np.full_like(auto, 7)
        _gemm.pack_bf16(B, trans, sw)
    finally:
        _gemm._force_sw_rounding(False)
    assert np.array_equal(auto, sw)
    threads = np.full_like(auto, 7)
    _gemm.pack_bf16(B, trans, threads, 2)  # panels shared among threads: the same values
    assert np.array_equal(auto, threads)
    with pytest.raises(ValueError, match="num_threads"):
        _gemm.pack_bf16(B, trans, threads, 0)


@pytest.mark.parametrize("K,N", [(1, 1), (33, 70), (100, 31), (576, 64), (3136, 512)])
@pytest.mark.parametrize("threads", [1, 2])
def test_pack_pair_gives_both_packings_from_one_read(K, N, threads):
    """pack_bf16_pair (a layer's W for the forward and W^T for dX, 32 rows of W at a time) writes
    exactly what pack_bf16 writes for each, zero padding included."""
    W = np.random.default_rng(K + N).standard_normal((K, N)).astype(np.float32)
    want = np.empty(_gemm.packed_bf16_size(K, N), np.uint16)
    want_t = np.empty(_gemm.packed_bf16_size(N, K), np.uint16)
    _gemm.pack_bf16(W, False, want)
    _gemm.pack_bf16(W, True, want_t)
    got, got_t = np.full_like(want, 7), np.full_like(want_t, 7)
    _gemm.pack_bf16_pair(W, got, got_t, threads)
    assert np.array_equal(got, want) and np.array_equal(got_t, want_t)
    with pytest.raises(ValueError, match="pack_bf16_pair"):
        _gemm.pack_bf16_pair(W, got[:-1], got_t)


@pytest.mark.parametrize("K,N", [(1, 1), (40, 70), (600, 33), (1100, 512)])
@pytest.mark.parametrize("trans", [False, True])
def test_packed_weights_give_the_same_bits(kernel, K, N, trans):
    """B packed once (a layer's weights, once per step) gives the bits of packing it per call."""
    rng = np.random.default_rng(K + N)
    A = rng.standard_normal((9, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans else (K, N)).astype(np.float32)
    Bpk = np.empty(_gemm.packed_bf16_size(K, N), np.uint16)
    _gemm.pack_bf16(B, trans, Bpk)
    C1 = np.zeros((9, N), np.float32)
    C2 = np.zeros((9, N), np.float32)
    _gemm.gemm(A, B, C1, False, trans, False, True)
    _gemm.gemm(A, B, C2, False, trans, False, True, Bpk)
    assert np.array_equal(C1, C2)
    with pytest.raises(ValueError, match="pack_bf16: out has"):
        _gemm.pack_bf16(B, trans, Bpk[:-1])
    with pytest.raises(ValueError, match="Bpk has"):
        _gemm.gemm(A, B, C2, False, trans, False, True, Bpk[:-1])


def test_dense_column_blocks_read_the_packed_weights_at_their_panel():
    """A small batch splits the output columns in blocks (panels 0.. and 2.. of the packed W):
    the same bits as the layer without packed weights, and as the whole product at once."""
    from fastnn import _dense

    rng = np.random.default_rng(11)
    X = rng.standard_normal((4, 300)).astype(np.float32)
    W = rng.standard_normal((300, 100)).astype(np.float32)
    b = rng.standard_normal(100).astype(np.float32)
    Wpk = np.empty(_gemm.packed_bf16_size(300, 100), np.uint16)
    _gemm.pack_bf16(W, False, Wpk)
    outs = []
    for threads, packed in ((1, None), (2, Wpk), (1, Wpk)):
        A = np.empty((4, 100), np.float32)
        _dense.forward(X, W, b, A, 0, 0.0, threads, bf16=True, Wpk=packed)
        outs.append(A)
    C = np.zeros((4, 100), np.float32)
    _gemm.gemm(X, W, C, False, False, False, True)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert np.array_equal(outs[0], C + b)
    with pytest.raises(ValueError, match="Wpk has"):
        _dense.forward(X, W, b, A, 0, 0.0, 1, bf16=True, Wpk=Wpk[:-1])


def test_bf16_kernel_names_and_errors():
    assert _gemm.bf16_kernel() in KERNELS
    assert _config.set_bf16_kernel("emulated") == "emulated"
    _config.set_bf16_kernel(None)
    with pytest.raises(ValueError, match="bf16 kernel must be one of"):
        _config.set_bf16_kernel("fp8")
    out = io.StringIO()
    fastnn.show_config(file=out)
    assert f"bf16_kernel          {_gemm.bf16_kernel()}" in out.getvalue()
    assert fastnn._config.config()["bf16_kernel"] == _gemm.bf16_kernel()


# -- layers in the mixed policy -------------------------------------------------------------------
def _flat_weights(model):
    return np.concatenate([p.ravel() for layer in model.layers for p in layer.params.values()])


def _pair(layers_fn, input_shape, seed=0):
    """The same layers (same initial weights) under float32 and mixed_bfloat16."""
    f32 = fastnn.Sequential(layers_fn(), seed=seed, input_shape=input_shape)
    bf = fastnn.Sequential(layers_fn(), dtype="mixed_bfloat16", seed=seed,
                           input_shape=input_shape)
    return f32, bf


# No ReLU here: where a pre-activation is within its rounding error of 0, ReLU's mask differs
# between the policies and the gradient there changes by all of it (a discrete effect on about
# 2^-8 of the positions, which PyTorch's autocast has too); the smooth activations are tested.
GEMM_LAYERS = {  # name -> (layer, per-sample input shape)
    "dense": (lambda: Dense(96, 64), (96,)),
    "dense_gelu": (lambda: Dense(40, 33, activation="gelu"), (40,)),
    "dense_softmax": (lambda: Dense(40, 7, activation="softmax"), (40,)),
    "conv_gemm": (lambda: Conv2D(8, 16, 3, activation="tanh"), (12, 12, 8)),

    "conv_pointwise": (lambda: Conv2D(8, 4, 1), (5, 5, 8)),
    "conv_strided_same": (lambda: Conv2D(5, 8, 4, stride=2, padding="same", activation="silu"),
                          (11, 11, 5)),
    "conv_dqn_like": (lambda: Conv2D(32, 64, 4, stride=2), (20, 20, 32)),
}


def _rel(a, b):
    return np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64))


@pytest.mark.parametrize("name", sorted(GEMM_LAYERS))
def test_gemm_layer_output_and_gradients_close_to_float32(name):
    """Dense and Conv2D, one layer under each policy with the same weights, input and output
    gradient: the output and the weight, bias and input gradients are within bfloat16's unit
    roundoff u = 2^-8 of float32's (relative, as a norm over the array; measured 0.55-0.8 u);
    gradients through an activation's derivative within 2u (it also carries the rounding of the
    forward pass; measured up to 1.3 u for softmax)."""
    layer_fn, shape = GEMM_LAYERS[name]
    f32, bf = _pair(lambda: [layer_fn()], shape)
    bound = BF16_EPS if f32.layers[0].activation is None else 2 * BF16_EPS
    for model in (f32, bf):
        model.layers[0].need_input_grad = True
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6,) + shape).astype(np.float32)
    Y32 = f32.layers[0].forward(X, training=True).copy()
    Ybf = bf.layers[0].forward(X, training=True).copy()
    assert 0 < _rel(Ybf, Y32) <= BF16_EPS, _rel(Ybf, Y32)
    dY = rng.standard_normal(Y32.shape).astype(np.float32)
    dX32 = f32.layers[0].backward(dY).copy()
    dXbf = bf.layers[0].backward(dY).copy()
    assert _rel(dXbf, dX32) <= bound, ("dX", _rel(dXbf, dX32))
    for key, g32 in f32.layers[0].grads.items():
        err = _rel(bf.layers[0].grads[key], g32)
        assert err <= bound, (name, key, err)


def _conv_index(shape, layer):
    """For each im2col element (n, oh, ow, i, j, c): its flat index in the zero-padded input, and
    the padded shape (a NumPy im2col for the reference)."""
    N, H, W, C = shape
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    if layer.padding == "same":
        pads = [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in ((H, kh, sh), (W, kw, sw))]
        (pt, pb), (pl, pr) = [(t // 2, t - t // 2) for t in pads]
    elif layer.padding == "valid":
        pt = pb = pl = pr = 0
    else:
        (pt, pl) = layer.padding
        pb, pr = pt, pl
    Hp, Wp = H + pt + pb, W + pl + pr
    Ho, Wo = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    n, oh, ow, i, j, c = np.ix_(range(N), range(Ho), range(Wo), range(kh), range(kw), range(C))
    idx = ((n * Hp + oh * sh + i) * Wp + ow * sw + j) * C + c
    return idx.reshape(N * Ho * Wo, kh * kw * C), (N, Hp, Wp, C), (pt, pl), (N, Ho, Wo)


BF16_CONVS = {  # im2col + bfloat16 GEMM geometries: padding, odd position counts, K % 32 != 0
    "valid_k72": (lambda: Conv2D(8, 16, 3), (7, 9, 8)),
    "same_stride2": (lambda: Conv2D(5, 40, 4, stride=2, padding="same"), (11, 11, 5)),
    "pad2_stride3": (lambda: Conv2D(6, 33, (5, 3), stride=(3, 1), padding=2), (13, 8, 6)),
    "dqn_conv1": (lambda: Conv2D(4, 32, 8, stride=4), (84, 84, 4)),
    "dqn_conv2": (lambda: Conv2D(32, 64, 4, stride=2), (20, 20, 32)),
}


@pytest.mark.parametrize("name", sorted(BF16_CONVS))
def test_conv_layer_matches_the_reference_with_rounded_inputs(kernel, name):
    """Conv2D in the mixed policy against a float64 im2col reference on the bfloat16-rounded
    input, weight and output gradient: output, dW, db and dX agree up to float32 summation error
    (bounded per element by 2^-20 times the same sums of absolute values), on every kernel: the
    hardware ones take the im2col blocks written straight into bfloat16."""
    layer_fn, shape = BF16_CONVS[name]
    N = 3 if shape[0] < 50 else 2
    model = fastnn.Sequential([layer_fn()], dtype="mixed_bfloat16", seed=1,
                              input_shape=shape)
    layer = model.layers[0]
    layer.need_input_grad = True
    rng = np.random.default_rng(7)
    layer.params["bias"][...] = rng.standard_normal(layer.out_channels)  # not the zeros of init
    X = rng.standard_normal((N,) + shape).astype(np.float32)
    Y = layer.forward(X, training=True).copy()
    dY = rng.standard_normal(Y.shape).astype(np.float32)
    dX = layer.backward(dY).copy()

    idx, pshape, (pt, pl), oshape = _conv_index(X.shape, layer)
    M = layer.out_channels
    Xp = np.zeros(pshape)
    Xp[:, pt:pt + shape[0], pl:pl + shape[1]] = round_bf16_ref(X)
    col = Xp.ravel()[idx]
    acol = np.abs(col)
    W = round_bf16_ref(layer.params["weight"]).reshape(-1, M).astype(np.float64)
    G = round_bf16_ref(dY).reshape(-1, M).astype(np.float64)
    tol = 2.0 ** -20

    b = layer.params["bias"].astype(np.float64)
    Yref = col @ W + b
    assert np.all(np.abs(Y.reshape(-1, M) - Yref) <= tol * (acol @ np.abs(W) + np.abs(b)) + 1e-30)
    dW = layer.grads["weight"].reshape(-1, M)
    assert np.all(np.abs(dW - col.T @ G) <= tol * (acol.T @ np.abs(G)) + 1e-30)
    assert np.allclose(layer.grads["bias"], dY.reshape(-1, M).sum(0), rtol=1e-5, atol=1e-5)
    dXp = np.bincount(idx.ravel(), (G @ W.T).ravel(), minlength=Xp.size).reshape(pshape)
    bnd = np.bincount(idx.ravel(), (np.abs(G) @ np.abs(W.T)).ravel(), minlength=Xp.size)
    crop = (slice(None), slice(pt, pt + shape[0]), slice(pl, pl + shape[1]))
    assert np.all(np.abs(dX - dXp[crop]) <= tol * bnd.reshape(pshape)[crop] + 1e-30)


OTHER_LAYERS = {  # layers without a matrix product: the policy leaves them exactly as they are
    # the direct convolution kernel (receptive field K = kh kw C <= 64) stays in float32
    "conv_direct": (lambda: [Conv2D(1, 8, 3, padding="same", activation="relu"), Flatten(),
                             Dense(648, 3)], (9, 9, 1)),
    "maxpool": (lambda: [MaxPool2D(2), Flatten(), Dense(18, 3)], (6, 6, 2)),
    "avgpool": (lambda: [AvgPool2D(2, padding="same"), Flatten(), Dense(18, 3)], (5, 5, 2)),
    "global_avgpool": (lambda: [GlobalAvgPool2D(), Dense(2, 3)], (5, 5, 2)),
    "batchnorm": (lambda: [BatchNorm(6), Dense(6, 3)], (6,)),
    "layernorm": (lambda: [LayerNorm(6), Dense(6, 3)], (6,)),
    "dropout": (lambda: [Dropout(0.3, seed=1), Dense(6, 3)], (6,)),
}


@pytest.mark.parametrize("name", sorted(OTHER_LAYERS))
def test_layers_without_gemm_are_unchanged_by_the_policy(name):
    """Pooling, normalisation, dropout and flatten compute in float32 in either policy: given
    the same input and output gradient, bit-identical outputs and gradients."""
    layers_fn, shape = OTHER_LAYERS[name]
    f32, bf = _pair(layers_fn, shape)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((5,) + shape).astype(np.float32)
    a32 = f32.layers[0].forward(X, training=True)
    abf = bf.layers[0].forward(X, training=True)
    assert np.array_equal(a32, abf)
    dA = rng.standard_normal(a32.shape).astype(np.float32)
    assert np.array_equal(f32.layers[0].backward(dA), bf.layers[0].backward(dA))
    for k in f32.layers[0].grads:
        assert np.array_equal(f32.layers[0].grads[k], bf.layers[0].grads[k])


def test_emulated_kernel_trains_like_the_hardware_one():
    """The emulated path (CPUs without AVX512_BF16) rounds alike: the same step differs only by
    the order of float32 sums."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((32, 50)).astype(np.float32)
    y = rng.integers(0, 5, 32)
    weights = []
    for name in ("emulated", None):
        _config.set_bf16_kernel(name)
        model = fastnn.Sequential([Dense(50, 40, activation="relu"), Dense(40, 5)],
                                  dtype="mixed_bfloat16", seed=0)
        model.compile(optimizer=fastnn.SGD(0.1), loss="softmax_cross_entropy")
        for _ in range(3):
            model.train_on_batch(X, y)
        weights.append(_flat_weights(model))
    _config.set_bf16_kernel(None)
    assert np.allclose(weights[0], weights[1], rtol=1e-4, atol=1e-5)


def test_training_is_bit_identical_at_any_thread_count():
    rng = np.random.default_rng(8)
    X = rng.random((24, 14, 14, 2), dtype=np.float32)
    y = rng.integers(0, 4, 24)
    results = []
    for threads in (1, 2, 1):
        fastnn.set_num_threads(threads)
        # the last convolution has 32 outputs: whole AMX blocks, started from the bias
        model = fastnn.Sequential([Conv2D(2, 8, 3, activation="relu"), MaxPool2D(2),
                                   Conv2D(8, 16, 3, stride=2, padding="same", activation="relu"),
                                   Conv2D(16, 32, 3, padding="same", activation="relu"),
                                   Flatten(), Dense(288, 32, activation="relu"), Dense(32, 4)],
                                  dtype="mixed_bfloat16", seed=0)
        model.compile(optimizer=fastnn.Adam(1e-3), loss="softmax_cross_entropy")
        model.fit(X, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        results.append(_flat_weights(model))
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


def test_mixed_policy_learns():
    """A small classifier reaches the float32 model's training accuracy on a separable task."""
    rng = np.random.default_rng(9)
    centers = rng.standard_normal((4, 20)) * 3
    y = rng.integers(0, 4, 512)
    X = (centers[y] + rng.standard_normal((512, 20))).astype(np.float32)
    accs = {}
    for dtype in ("float32", "mixed_bfloat16"):
        model = fastnn.Sequential([Dense(20, 32, activation="relu"), Dense(32, 4)], dtype=dtype,
                                  seed=0)
        model.compile(optimizer=fastnn.Adam(1e-2), loss="softmax_cross_entropy")
        model.fit(X, y, epochs=5, batch_size=32, verbose=0)
        accs[dtype] = model.evaluate(X, y)["accuracy"]
    assert accs["mixed_bfloat16"] >= 0.95
    assert abs(accs["mixed_bfloat16"] - accs["float32"]) <= 0.02


# -- the policy in the API ------------------------------------------------------------------------
def test_policy_attributes_config_and_summary():
    model = models.small_cnn(dtype="mixed_bfloat16", seed=0)
    assert model.dtype == np.float32 and model.dtype_policy == "mixed_bfloat16"
    assert all(layer.compute_bf16 for layer in model.layers)
    assert all(p.dtype == np.float32 for layer in model.layers for p in layer.params.values())
    assert model.get_config()["dtype"] == "mixed_bfloat16"
    assert "(mixed_bfloat16)" in model.summary(print_fn=None)
    again = fastnn.Sequential.from_config(model.get_config())
    assert again.dtype_policy == "mixed_bfloat16"
    plain = models.small_cnn(seed=0)
    assert plain.dtype_policy == "float32" and not plain.layers[0].compute_bf16
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fastnn.Sequential([Dense(3, 2)], dtype="mixed_float16")


def test_model_file_keeps_the_policy(tmp_path):
    rng = np.random.default_rng(10)
    X = rng.standard_normal((16, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    model = fastnn.Sequential([Dense(8, 6, activation="relu"), Dense(6, 3)],
                              dtype="mixed_bfloat16", seed=0)
    model.compile(optimizer=fastnn.Adam(1e-2), loss="softmax_cross_entropy")
    model.fit(X, y, epochs=2, batch_size=4, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fastnn.load(path)
    assert loaded.dtype_policy == "mixed_bfloat16" and loaded.layers[0].compute_bf16
    assert np.array_equal(loaded.predict(X), model.predict(X))
    model.fit(X, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    loaded.fit(X, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    assert np.array_equal(_flat_weights(model), _flat_weights(loaded))


@pytest.mark.slow
def test_cli_profile_and_train_take_the_policy(tmp_path, capsys):
    from fastnn import cli

    cli.main(["profile", "--model", "cnn", "--dtype", "mixed_bfloat16", "--batch-size", "8",
              "--repeats", "2", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "mixed_bfloat16" in out and "Conv2D" in out
