"""Property-based (hypothesis) tests of every kernel wrapper and of the public layer calls.

The kernels run with bounds checks off and the GIL released, so a bad array that got through would
corrupt memory instead of raising. Here hypothesis draws random sizes, dtypes, memory layouts
(C / Fortran order, strided and negatively strided views, read-only arrays), mismatched shapes
between arguments, ``None``, plain lists and bad scalar arguments, and every call must either

* return exactly what the NumPy reference (written plainly below, in float64) computes from the
  arguments actually passed, or
* raise a clean Python exception (``ValueError``, ``TypeError``, ``BufferError``,
  ``OverflowError``; ``RuntimeError`` for a layer's backward before forward),

and must never write outside the arrays it was given: every array lives inside a larger buffer
filled with a sentinel value, checked after each call (an out-of-bounds write that does not crash
at once is caught here; the ASan run in ``tools/asan_check.sh`` catches the reads).

A third of the drawn calls are valid (the reference must match); the rest change one or two
arguments. By default every run draws the same 60 examples per test (hypothesis profile "ci" in
conftest.py, the whole file in well under a minute); ``FASTNN_FUZZ_EXAMPLES=2000`` runs 2000
random ones per test instead (profile "wide").
"""
import contextlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastnn import _activations, _conv, _dense, _losses, _norm, _optim  # noqa: E402
from fastnn.layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout,  # noqa: E402
                           GlobalAvgPool2D, LayerNorm, MaxPool2D)

from conftest import (EPS32, EPS64, KERNEL_CODES, SIGMOID, TANH, act_forward,  # noqa: E402
                      act_grad_from_saved, act_saved, assert_within, softmax)

CLEAN = (ValueError, TypeError, BufferError, OverflowError)
try:
    from fastnn._build_info import BUILD_INFO
    DEBUG_BUILD = bool(BUILD_INFO.get("debug"))
except ImportError:  # pragma: no cover - a build without the generated file
    DEBUG_BUILD = False
# In the FASTNN_DEBUG=1 build, Cython's bounds checks turn an out-of-bounds index into
# IndexError. For a call with broken arguments that is the debug build doing its job (e.g. the
# address of an unused, wrongly shaped workspace); for a valid call it is a bug.
CLEAN_IF_BROKEN = CLEAN + ((IndexError,) if DEBUG_BUILD else ())
# examples, deadline, derandomization: the profile loaded in conftest.py
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
FLOATS = (np.float32, np.float64)


def child_env():
    """Environment of a child process that reproduces a known memory bug on purpose. Under
    tools/asan_check.sh its (expected) ASan report goes to a folder of its own, not to the log
    folder whose reports fail the ASan run."""
    env = dict(os.environ)
    opts = [o for o in env.get("ASAN_OPTIONS", "").split(":") if o]
    log_paths = [o[len("log_path="):] for o in opts if o.startswith("log_path=")]
    if log_paths:
        folder = os.path.dirname(os.path.abspath(log_paths[-1])) + "-expected"
        os.makedirs(folder, exist_ok=True)
        kept = [o for o in opts if not o.startswith("log_path=")]
        env["ASAN_OPTIONS"] = ":".join(kept + [f"log_path={folder}/asan"])
    return env


# ---- arrays in guarded buffers ----------------------------------------------------------------

GUARD = 19  # sentinel elements before and after every array
SENTINEL = {"f": 12345.5, "i": -777777, "u": 777777, "b": True, "c": 12345.5 + 1j}


class Guarded:
    """``values`` copied into a view (of the requested layout) of a larger sentinel-filled buffer.

    ``untouched()`` is True when every buffer element outside the view still holds the sentinel.
    """

    def __init__(self, values, layout="c"):
        values = np.asarray(values)
        n = values.size
        dt = values.dtype
        self.sentinel = np.array(SENTINEL.get(dt.kind, 0)).astype(dt)
        step = 2 if layout == "strided" else 1
        self.base = np.full(2 * GUARD + max(step * n, 1), self.sentinel, dtype=dt)
        mark = np.zeros(self.base.shape, dtype=bool)
        self.view = self._layout(self.base, values.shape, layout, step, n)
        mview = self._layout(mark, values.shape, layout, step, n)
        assert values.size == 0 or np.shares_memory(self.view, self.base)
        self.view[...] = values
        mview[...] = True
        self.outside = ~mark
        if layout == "readonly":
            self.view.flags.writeable = False

    @staticmethod
    def _layout(buf, shape, layout, step, n):
        flat = buf[GUARD:GUARD + step * n:step]
        if layout == "f":
            return flat.reshape(shape[::-1]).T
        view = flat.reshape(shape)
        if layout == "neg" and view.ndim:
            view = view[::-1]
        return view

    def untouched(self):
        want = self.sentinel.reshape(1).view(np.uint8)
        got = np.ascontiguousarray(self.base[self.outside]).view(np.uint8).reshape(-1, want.size)
        return bool((got == want).all())


def rand_values(rng, shape, dtype, lo=-1.0, hi=1.0):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return rng.integers(0, 3, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind == "c":
        return (rng.uniform(lo, hi, shape) + 1j).astype(dt)
    if dt.kind == "O":
        return rng.uniform(lo, hi, shape).astype(object)
    return rng.uniform(lo, hi, shape).astype(dt)


# ---- drawing a call: valid arguments, then perhaps one or two broken ones --------------------

class Arr:
    """A valid array argument: its values (right shape and dtype) and whether it is written."""

    def __init__(self, name, values, out=False, optional=False, other_dtypes=None):
        self.name, self.values, self.out, self.optional = name, values, out, optional
        self.other_dtypes = other_dtypes


class Val:
    """A scalar argument and the bad values hypothesis may swap in."""

    def __init__(self, name, value, bad=()):
        self.name, self.value, self.bad = name, value, tuple(bad)


BAD_FLOAT_DTYPES = (np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object)


def _mutations(item):
    kinds = ["none", "dtype", "shape", "ndim", "f", "strided", "neg", "list"]
    if item.values.ndim == 0:
        kinds.remove("ndim")
    return kinds + (["readonly"] if item.out else ["readonly_in"])


def draw_call(data, rng, items):
    """Return ``(args, guards, broken)``: the positional arguments (arrays in guarded buffers),
    the Guarded objects to check afterwards, and a description of what was broken."""
    arr_idx = [i for i, it in enumerate(items) if isinstance(it, Arr)]
    val_idx = [i for i, it in enumerate(items) if isinstance(it, Val) and it.bad]
    n_broken = data.draw(st.sampled_from([0, 0, 1, 1, 1, 2]), label="n_broken")
    pool = arr_idx + val_idx
    chosen = data.draw(st.lists(st.sampled_from(pool), min_size=min(n_broken, len(pool)),
                                max_size=min(n_broken, len(pool)), unique=True),
                       label="broken args") if pool and n_broken else []
    args, guards, broken = [], [], []
    for i, it in enumerate(items):
        if isinstance(it, Val):
            if i in chosen:
                v = data.draw(st.sampled_from(it.bad), label=f"bad {it.name}")
                broken.append(f"{it.name}={v!r}")
                args.append(v)
            else:
                args.append(it.value)
            continue
        values = it.values
        layout = "c"
        if i in chosen:
            kind = data.draw(st.sampled_from(_mutations(it)), label=f"mutation of {it.name}")
            broken.append(f"{it.name}:{kind}")
            if kind == "none":
                args.append(None)
                continue
            if kind == "list":
                args.append(values.tolist())
                continue
            if kind == "dtype":
                choices = it.other_dtypes or [d for d in (np.float32, np.float64)
                                              if d != values.dtype] + list(BAD_FLOAT_DTYPES)
                dt = np.dtype(data.draw(st.sampled_from(choices), label=f"dtype of {it.name}"))
                if dt.kind == "O":
                    args.append(values.astype(object))
                    continue
                values = rand_values(rng, values.shape, dt)
            elif kind == "shape":
                shape = list(values.shape) or [1]
                ax = data.draw(st.integers(0, len(shape) - 1), label="axis")
                delta = data.draw(st.sampled_from([-2, -1, 1, 2, 5]), label="delta")
                shape[ax] = max(0, shape[ax] + delta)
                values = rand_values(rng, tuple(shape), values.dtype)
            elif kind == "ndim":
                how = data.draw(st.sampled_from(["add", "drop", "scalar"]), label="ndim change")
                if how == "add":
                    values = values[None]
                elif how == "drop" and values.ndim > 1:
                    values = values.reshape(values.shape[:-2]
                                            + (values.shape[-2] * values.shape[-1],))
                else:
                    values = rand_values(rng, (), values.dtype)
            elif kind in ("f", "strided", "neg"):
                layout = kind
            elif kind == "readonly":
                layout = "readonly"
            elif kind == "readonly_in":
                layout = "readonly"
        g = Guarded(values, layout)
        guards.append((it.name, g))
        args.append(g.view)
    return args, guards, broken


def check_call(fn, args, guards, broken, reference):
    """Call ``fn(*args)``; it must raise a clean exception or match ``reference``; no writes outside
    the arrays either way."""
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
    clean = CLEAN_IF_BROKEN if broken else CLEAN
    try:
        result = fn(*args)
    except clean as exc:
        result, accepted = None, False
        event(f"refused: {type(exc).__name__}")
    else:
        accepted = True
        event("accepted" + (" (valid call)" if not broken else " (changed arguments)"))
    for name, g in guards:
        assert g.untouched(), f"{fn.__name__} wrote outside {name} (broken: {broken})"
    if accepted:
        try:
            reference(before, args, result)
        except AssertionError as exc:
            raise AssertionError(f"{fn.__name__} accepted the call (broken: {broken}) but does "
                                 f"not match the reference: {exc}") from None
    return accepted


def tol(dtype):
    return dict(rtol=2e-4, atol=2e-4) if np.dtype(dtype) == np.float32 else \
        dict(rtol=1e-9, atol=1e-10)


def close(actual, expected, dtype, what):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, **tol(dtype),
                               err_msg=what)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def shape_is(a, shape, what):
    assert isinstance(a, np.ndarray) and a.shape == tuple(shape), \
        f"{what}: got {getattr(a, 'shape', type(a))}, consistent shape is {tuple(shape)}"


def dtype_of(*arrays):
    dts = {np.asarray(a).dtype for a in arrays if a is not None}
    assert len(dts) == 1 and next(iter(dts)) in (np.float32, np.float64), f"dtypes {dts}"
    return next(iter(dts))


# ---- plain references -------------------------------------------------------------------------

def _known(kind):
    """The kernels treat an unknown activation code (past the list, -1) as identity."""
    kind = int(kind)
    return kind if kind in KERNEL_CODES else 0


def act_ref(Z, kind, alpha):
    return act_forward(Z, _known(kind), alpha)


def saved_ref(Z, kind, alpha):
    """What the backward kernels take: g(Z), or Z itself for gelu and silu."""
    return act_saved(Z, _known(kind), alpha)


def act_grad_ref(A, dA, kind, alpha):
    """dZ from what the backward kernels take (A, or Z for gelu and silu)."""
    return f64(dA) * act_grad_from_saved(A, _known(kind), alpha)


def pads4(padding):
    """(top, bottom, left, right) from (ph, pw) (symmetric) or the four values."""
    padding = tuple(padding)
    return padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])


def conv_ref(X, W4, b, stride, padding):
    """Y (N, Ho, Wo, M) = sum over taps of the strided window of X_pad @ W4[i, j]; padding
    (ph, pw) or (top, bottom, left, right)."""
    X, W4 = f64(X), f64(W4)
    N, H, W, C = X.shape
    kh, kw, _, M = W4.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads4(padding)
    Ho, Wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
    Xp = np.zeros((N, H + pt + pb, W + pl + pr, C))
    Xp[:, pt:pt + H, pl:pl + W] = X
    Y = np.zeros((N, Ho, Wo, M)) + f64(b)
    for i in range(kh):
        for j in range(kw):
            Y += Xp[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] @ W4[i, j]
    return Y


def conv_backward_ref(X, W4, dZ, stride, padding):
    """(dW4, db, dX) of Y = conv(X, W4) + b for the output gradient dZ."""
    X, W4, dZ = f64(X), f64(W4), f64(dZ)
    N, H, W, C = X.shape
    kh, kw, _, M = W4.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads4(padding)
    Ho, Wo = dZ.shape[1:3]
    Xp = np.zeros((N, H + pt + pb, W + pl + pr, C))
    Xp[:, pt:pt + H, pl:pl + W] = X
    dXp = np.zeros_like(Xp)
    dW4 = np.zeros_like(W4)
    for i in range(kh):
        for j in range(kw):
            win = (slice(None), slice(i, i + sh * (Ho - 1) + 1, sh),
                   slice(j, j + sw * (Wo - 1) + 1, sw))
            dW4[i, j] = np.einsum("nhwc,nhwm->cm", Xp[win], dZ)
            dXp[win] += dZ @ W4[i, j].T
    return dW4, dZ.sum(axis=(0, 1, 2)), dXp[:, pt:pt + H, pl:pl + W]


def pool_windows(X, k, s):
    """(N, Ho, Wo, C, kh*kw) windows of X (no padding), in row-major window order."""
    X = f64(X)
    N, H, W, C = X.shape
    (kh, kw), (sh, sw) = k, s
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = np.empty((N, Ho, Wo, C, kh * kw))
    pos = np.empty((Ho, Wo, kh * kw), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            out[..., i * kw + j] = X[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
            ih = np.arange(Ho)[:, None] * sh + i
            iw = np.arange(Wo)[None, :] * sw + j
            pos[:, :, i * kw + j] = ih * W + iw
    return out, pos


def maxpool_ref(X, k, s):
    win, pos = pool_windows(X, k, s)
    first = np.argmax(win, axis=-1)  # first maximum in window order
    Y = np.take_along_axis(win, first[..., None], axis=-1)[..., 0]
    flat = np.take_along_axis(np.broadcast_to(pos[None, :, :, None, :], win.shape),
                              first[..., None], axis=-1)[..., 0]
    return Y, flat


def maxpool_backward_ref(dY, argmax, dX_shape):
    dY = f64(dY)
    N, H, W, C = dX_shape
    dX = np.zeros((N, H * W, C))
    for n in range(N):
        for c in range(C):
            np.add.at(dX[n, :, c], argmax[n, ..., c].ravel(), dY[n, ..., c].ravel())
    return dX.reshape(dX_shape)


def avgpool_backward_ref(dY, dX_shape, k, s):
    dY = f64(dY)
    N, H, W, C = dX_shape
    (kh, kw), (sh, sw) = k, s
    Ho, Wo = dY.shape[1:3]
    dX = np.zeros(dX_shape)
    for i in range(kh):
        for j in range(kw):
            dX[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] += dY / (kh * kw)
    return dX


# ---- shared strategies ------------------------------------------------------------------------

def sizes(lo=0, hi=9, big=(33, 70)):
    return st.one_of(st.integers(lo, hi), st.sampled_from(big))


THREADS = Val("num_threads", 1, bad=(0, -1, -(2 ** 31), 2 ** 31, 2.5, None, "2"))
# every kernel code (sigmoid/tanh twice: the polynomial paths), and two unknown codes (identity)
KINDS = st.sampled_from(list(KERNEL_CODES) + [TANH, SIGMOID, max(KERNEL_CODES) + 3, -1])


def rng_from(data):
    return np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="values seed"))


def threads_item(data, negative=True):
    """num_threads: 1-3, or a bad value. The convolution and pooling kernels do not check it, and
    a negative count aborts the process (see test_conv_kernels_refuse_negative_num_threads), so
    they are not given negative ones here."""
    bad = THREADS.bad if negative else tuple(v for v in THREADS.bad
                                              if not isinstance(v, int) or v >= 0)
    return Val("num_threads", data.draw(st.sampled_from([1, 2, 3]), label="threads"), bad=bad)


# ---- dense ----

def repro_dense_empty_dim(which):
    """The dense kernels with an empty inner dimension (K = 0 or M = 0) on a valid call:
    A = relu(b) for K = 0; dW empty, db = sum(dA), dX = 0 for K = 0 or M = 0."""
    f = np.float32
    if which == "forward_K0":
        A = np.full((2, 3), 9, f)
        _dense.forward(np.ones((2, 0), f), np.ones((0, 3), f), np.array([-1, 0, 2], f), A, 1, 0.0,
                       1)
        np.testing.assert_array_equal(A, [[0, 0, 2], [0, 0, 2]])
        return
    N, K, M = (2, 0, 3) if which == "backward_K0" else (2, 3, 0)
    dA = np.arange(N * M, dtype=f).reshape(N, M)
    dW, db, dX = np.full((K, M), 9, f), np.full(M, 9, f), np.full((N, K), 9, f)
    _dense.backward(np.ones((N, K), f), np.ones((K, M), f), np.ones((N, M), f), dA,
                    np.empty((N, M), f), dW, db, dX, 0, 0.0, 1)
    np.testing.assert_array_equal(db, dA.sum(axis=0))
    np.testing.assert_array_equal(dX, np.zeros((N, K)))


@pytest.mark.parametrize("which", ["forward_K0", "backward_K0", "backward_M0"])
def test_dense_kernels_with_an_empty_inner_dimension(which):
    repro_dense_empty_dim(which)


@FUZZ
@given(st.data())
def test_dense_forward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K, M = data.draw(sizes()), data.draw(sizes()), data.draw(sizes())
    kind = data.draw(KINDS)
    alpha = data.draw(st.sampled_from([0.01, 0.2, 1.0]))
    items = [Arr("X", rand_values(rng, (N, K), dt)), Arr("W", rand_values(rng, (K, M), dt)),
             Arr("b", rand_values(rng, (M,), dt)), Arr("A", np.zeros((N, M), dt), out=True),
             Val("kind", kind, bad=(None, 1.5, 2 ** 40)), Val("alpha", alpha, bad=(None, "a")),
             threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        X, W, b, A = before[:4]
        N, K = X.shape
        M = W.shape[1]
        shape_is(W, (K, M), "W")
        shape_is(b, (M,), "b")
        shape_is(after[3], (N, M), "A")
        d = dtype_of(X, W, b, after[3])
        close(after[3], act_ref(f64(X) @ f64(W) + f64(b), after[4], after[5]), d, "A")

    check_call(_dense.forward, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_dense_backward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K, M = data.draw(sizes()), data.draw(sizes()), data.draw(sizes())
    kind = data.draw(KINDS)
    alpha = data.draw(st.sampled_from([0.01, 0.3]))
    A = saved_ref(rand_values(rng, (N, M), dt), kind, alpha).astype(dt)
    items = [Arr("X", rand_values(rng, (N, K), dt)), Arr("W", rand_values(rng, (K, M), dt)),
             Arr("A", A), Arr("dA", rand_values(rng, (N, M), dt)),
             Arr("dZ", np.zeros((N, M), dt), out=True), Arr("dW", np.zeros((K, M), dt), out=True),
             Arr("db", np.zeros(M, dt), out=True),
             Arr("dX", np.zeros((N, K), dt), out=True, optional=True),
             Val("kind", kind, bad=(None,)), Val("alpha", alpha, bad=(None,)),
             threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)
    alias = data.draw(st.booleans(), label="dZ is dA")
    if alias and isinstance(args[3], np.ndarray) and args[3].flags.writeable:
        args[4] = args[3]  # documented: dZ may be dA itself
        broken.append("dZ is dA")

    def reference(before, after, result):
        X, W, A, dA = before[:4]
        N, K = X.shape
        M = W.shape[1]
        shape_is(W, (K, M), "W")
        for name, a in (("A", A), ("dA", dA), ("dZ", after[4])):
            shape_is(a, (N, M), name)
        shape_is(after[5], (K, M), "dW")
        shape_is(after[6], (M,), "db")
        d = dtype_of(X, W, A, dA, after[4], after[5], after[6], after[7])
        dZ = act_grad_ref(A, dA, after[8], after[9])
        if N and (_known(after[8]) != 0 or after[4] is not after[3]):
            close(after[4], dZ, d, "dZ")
        close(after[5], f64(X).T @ dZ, d, "dW")
        close(after[6], dZ.sum(axis=0), d, "db")
        if after[7] is not None:
            shape_is(after[7], (N, K), "dX")
            close(after[7], dZ @ f64(W).T, d, "dX")

    check_call(_dense.backward, args, guards, broken, reference)


# ---- activations ------------------------------------------------------------------------------

LENGTHS = st.one_of(st.integers(0, 40), st.sampled_from([16383, 16384, 16385, 40000]))


@FUZZ
@given(st.data())
def test_activation_forward_inplace(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(LENGTHS)
    kind = data.draw(KINDS)
    items = [Arr("Z", rand_values(rng, (L,), dt, -6, 6), out=True), Val("kind", kind, bad=(None,)),
             Val("alpha", 0.05, bad=(None,)), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        close(after[0], act_ref(before[0], after[1], after[2]), dtype_of(after[0]), "Z")

    check_call(_activations.forward_inplace, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_activation_backward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(LENGTHS)
    kind = data.draw(KINDS)
    items = [Arr("A", saved_ref(rand_values(rng, (L,), dt), kind, 0.05).astype(dt)),
             Arr("dA", rand_values(rng, (L,), dt)), Arr("dZ", np.zeros(L, dt), out=True),
             Val("kind", kind, bad=(None,)), Val("alpha", 0.05, bad=(None,)), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        A, dA = before[:2]
        shape_is(dA, A.shape, "dA")
        shape_is(after[2], A.shape, "dZ")
        close(after[2], act_grad_ref(A, dA, after[3], after[4]), dtype_of(A, dA, after[2]), "dZ")

    check_call(_activations.backward, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_fast_expf(data):
    rng = rng_from(data)
    L = data.draw(st.integers(0, 50))
    items = [Arr("x", rand_values(rng, (L,), np.float32, -80, 80)),
             Arr("out", np.zeros(L, np.float32), out=True)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        shape_is(after[1], before[0].shape, "out")
        dtype_of(before[0], after[1])
        assert after[1].dtype == np.float32
        np.testing.assert_allclose(after[1], np.exp(f64(before[0])), rtol=1e-5, atol=0)

    check_call(_activations.fast_expf, args, guards, broken, reference)


# ---- losses -----------------------------------------------------------------------------------

def softmax_ce_rows_and_tolerance(logits, labels, dtype):
    """Float64 row losses logsumexp(z) - z_label and the rounding error the kernel may make.

    Per row the kernel computes exp(z - m) in the logits' dtype (the argument rounded; float32:
    fast_expf, within 1.4 ulp), sums the K terms in that dtype, then log(s) + m - z_label in
    float64: |error| <= u (K + sum_k p_k (m - z_k) + 2) + u64 (|lse| + |z_label|), u = eps / 2
    of the dtype, p = softmax(z). Allowed: twice that. An absolute bound, not relative to the
    loss: a near-zero loss keeps the absolute error of the sum of exponentials (a float32 row of
    2.5034e-06 against 2.4959e-06 in float64 is right; PyTorch's float32 gives the same).
    """
    Z = f64(logits)
    N, K = Z.shape
    m = Z.max(axis=1)
    lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
    z_label = Z[np.arange(N), labels]
    eps = EPS32 if np.dtype(dtype) == np.float32 else EPS64
    spread = (softmax(Z) * (m[:, None] - Z)).sum(axis=1)  # exp argument rounding, weighted
    row_tol = eps * (K + spread + 2) + EPS64 * (np.abs(lse) + np.abs(z_label))
    return lse - z_label, row_tol


def check_softmax_ce_total(total, rows, row_tol, scale):
    """The returned total is scale * the float64 sum of the rows: their tolerances add up."""
    want = rows.sum() * scale
    tol = abs(scale) * (row_tol.sum() + rows.size * EPS64 * rows.sum())
    assert abs(total - want) <= tol, f"total {total!r}, expected {want!r}, tolerance {tol:.3e}"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("logits, label", [
    ([[3.0, -9.9]], 0),                 # loss 2.5e-6: float32 was 3e-3 off relative, and right
    ([[-8.0, 7.5, 0.25]], 1),           # small loss, three classes
    (np.linspace(-8, 8, 130)[None], 7),  # many classes, large loss
], ids=["near_zero_loss", "small_loss", "K130"])
def test_softmax_cross_entropy_tolerance(logits, label, dtype):
    """The fuzz test's bound holds for the kernel on rows whose loss is near zero, and it is
    tight enough to catch a wrong label, a missing max term or a dropped exponential."""
    z = np.array(logits, dtype=dtype)
    lab = np.array([label], dtype=np.int64)
    row_loss, d = np.zeros(1), np.zeros_like(z)
    total = _losses.softmax_cross_entropy(z, lab, d, row_loss, 1.0, 1)
    rows, row_tol = softmax_ce_rows_and_tolerance(z, lab, dtype)
    assert_within(row_loss, rows, row_tol, "row_loss")
    check_softmax_ce_total(total, rows, row_tol, 1.0)
    Z = f64(z)[0]
    m = Z.max()
    wrong_label = rows - Z[label] + Z[(label + 1) % Z.size]
    no_max = rows - m
    e = np.exp(Z - m)
    others = np.delete(np.arange(Z.size), label)
    k = others[np.argmax(Z[others])]  # the largest exponential but the label's
    dropped = np.log(e.sum() - e[k]) + m - Z[label]
    for bug in (wrong_label, no_max, dropped):
        assert np.all(np.abs(bug - rows) > row_tol)


@FUZZ
@given(st.data())
def test_softmax_cross_entropy(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K = data.draw(sizes(0, 9, (130,))), data.draw(sizes(0, 9, (130,)))
    labels = rng.integers(0, max(K, 1), size=N).astype(np.int64)
    bad_label = data.draw(st.sampled_from([None, -1, K, 2 ** 40]), label="bad label")
    if bad_label is not None and N:
        labels[data.draw(st.integers(0, N - 1))] = bad_label
    scale = data.draw(st.sampled_from([1.0, 0.5, 1.0 / max(N, 1)]))
    items = [Arr("logits", rand_values(rng, (N, K), dt, -8, 8)),
             Arr("labels", labels, other_dtypes=[np.int32, np.uint64, np.float64, np.intc]),
             Arr("dlogits", np.zeros((N, K), dt), out=True),
             Arr("row_loss", np.zeros(N), out=True, other_dtypes=[np.float32, np.int64]),
             Val("scale", scale, bad=(None, "x")), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        logits, lab = before[:2]
        N, K = logits.shape
        shape_is(lab, (N,), "labels")
        assert K >= 1 or N == 0
        assert np.all((lab >= 0) & (lab < K)), f"labels out of [0, {K}) accepted: {lab}"
        shape_is(after[2], (N, K), "dlogits")
        shape_is(after[3], (N,), "row_loss")
        d = dtype_of(logits, after[2])
        if N == 0:
            assert result == 0
            return
        P = softmax(logits)
        rows, row_tol = softmax_ce_rows_and_tolerance(logits, lab, d)
        assert_within(after[3], rows, row_tol, "row_loss")
        onehot = np.zeros((N, K))
        onehot[np.arange(N), lab] = 1
        close(after[2], after[4] * (P - onehot), d, "dlogits")
        check_softmax_ce_total(result, rows, row_tol, after[4])

    check_call(_losses.softmax_cross_entropy, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_softmax(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K = data.draw(sizes(0, 9, (130,))), data.draw(sizes(0, 9, (130,)))
    items = [Arr("logits", rand_values(rng, (N, K), dt, -30, 30)),
             Arr("prob", np.zeros((N, K), dt), out=True), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        N, K = before[0].shape
        shape_is(after[1], (N, K), "prob")
        assert K >= 1 or N == 0
        if N:
            close(after[1], softmax(before[0]), dtype_of(before[0], after[1]), "prob")

    check_call(_losses.softmax, args, guards, broken, reference)


BLOCK = 4096
FLAT_LENGTHS = st.one_of(st.integers(0, 30), st.sampled_from([4095, 4096, 4097, 20000]))


def _flat_loss_items(data, rng, dt, L, target_lo, target_hi):
    nb = -(-L // BLOCK)
    extra = data.draw(st.integers(0, 2), label="extra block_loss entries")
    return [Arr("z", rand_values(rng, (L,), dt, -20, 20)),
            Arr("target", rand_values(rng, (L,), dt, target_lo, target_hi)),
            Arr("dz", np.zeros(L, dt), out=True),
            Arr("block_loss", np.zeros(nb + extra), out=True,
                other_dtypes=[np.float32, np.int64]),
            Val("scale", data.draw(st.sampled_from([1.0, 0.25])), bad=(None,)), threads_item(data)]


@FUZZ
@given(st.data())
def test_sigmoid_binary_cross_entropy(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(FLAT_LENGTHS)
    args, guards, broken = draw_call(data, rng, _flat_loss_items(data, rng, dt, L, 0, 1))

    def reference(before, after, result):
        z, y = f64(before[0]), f64(before[1])
        L = z.shape[0]
        shape_is(before[1], (L,), "target")
        shape_is(after[2], (L,), "dlogits")
        assert after[3].shape[0] >= -(-L // BLOCK), "block_loss too short accepted"
        d = dtype_of(before[0], before[1], after[2])
        loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        np.testing.assert_allclose(result, loss.sum() * after[4], rtol=1e-6, atol=1e-9)
        close(after[2], after[4] * (1 / (1 + np.exp(-z)) - y), d, "dlogits")

    check_call(_losses.sigmoid_binary_cross_entropy, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_mean_squared_error(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(FLAT_LENGTHS)
    args, guards, broken = draw_call(data, rng, _flat_loss_items(data, rng, dt, L, -3, 3))

    def reference(before, after, result):
        p, t = f64(before[0]), f64(before[1])
        L = p.shape[0]
        shape_is(before[1], (L,), "target")
        shape_is(after[2], (L,), "dpred")
        assert after[3].shape[0] >= -(-L // BLOCK), "block_loss too short accepted"
        d = dtype_of(before[0], before[1], after[2])
        np.testing.assert_allclose(result, ((p - t) ** 2).sum() * after[4], rtol=1e-9, atol=1e-9)
        close(after[2], 2 * after[4] * (p - t), d, "dpred")

    check_call(_losses.mean_squared_error, args, guards, broken, reference)


# ---- optimizers -------------------------------------------------------------------------------

OPT_LENGTHS = st.one_of(st.integers(0, 30), st.sampled_from([8191, 8192, 8193, 40000]))


def clip_items(data):
    """The trailing grad_scale and clip_value of every update (defaults 1 and inf)."""
    return [Val("grad_scale", data.draw(st.sampled_from([1.0, 1.0, 0.5, 3.0, 0.0]),
                                        label="grad_scale"),
                bad=(-1.0, float("nan"), float("inf"), None, "1")),
            Val("clip_value", data.draw(st.sampled_from([float("inf"), float("inf"), 0.3, 2.0]),
                                        label="clip_value"),
                bad=(0.0, -1.0, float("nan"), None))]


def clipped_grad(g, grad_scale, clip_value, dtype):
    """clamp(grad * grad_scale, -clip_value, clip_value), as the updates read the gradient; the
    scale and the bound in the dtype, as the kernels take them."""
    assert grad_scale >= 0 and np.isfinite(grad_scale), f"grad_scale {grad_scale} accepted"
    assert clip_value > 0, f"clip_value {clip_value} accepted"
    sc = f64(np.asarray(grad_scale, dtype=dtype))
    cv = f64(np.asarray(clip_value, dtype=dtype))
    return np.clip(f64(g) * sc, -cv, cv)


@FUZZ
@given(st.data())
def test_sgd_update(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(OPT_LENGTHS)
    mu = data.draw(st.sampled_from([0.0, 0.0, 0.9]))
    nesterov = mu > 0 and data.draw(st.booleans())
    # with momentum 0 the velocity is not used and may have any length (documented)
    vlen = L if mu else data.draw(st.sampled_from([L, 0, 1]))
    items = [Arr("param", rand_values(rng, (L,), dt), out=True),
             Arr("grad", rand_values(rng, (L,), dt)),
             Arr("velocity", rand_values(rng, (vlen,), dt), out=True),
             Val("learning_rate", 0.1, bad=(None,)), Val("momentum", mu, bad=(None,)),
             Val("nesterov", nesterov),
             Val("weight_decay", data.draw(st.sampled_from([0.0, 0.01]))),
             threads_item(data)] + clip_items(data)
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        p, g, v = f64(before[0]), f64(before[1]), f64(before[2])
        L = p.shape[0]
        shape_is(before[1], (L,), "grad")
        lr, mu, nest, wd, nt = after[3:8]
        d = dtype_of(before[0], before[1], after[2])
        g = clipped_grad(g, after[8], after[9], d) + wd * p
        assert np.array_equal(after[1], before[1]), "grad written"
        if mu == 0:
            close(after[0], p - lr * g, d, "param")
            return
        shape_is(after[2], (L,), "velocity")
        v = mu * v + g
        close(after[2], v, d, "velocity")
        close(after[0], p - lr * (g + mu * v if nest else v), d, "param")

    check_call(_optim.sgd_update, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_adam_update(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(OPT_LENGTHS)
    step = data.draw(st.sampled_from([1, 2, 10, 10 ** 6]))
    items = [Arr("param", rand_values(rng, (L,), dt), out=True),
             Arr("grad", rand_values(rng, (L,), dt)),
             Arr("m", rand_values(rng, (L,), dt), out=True),
             Arr("v", rand_values(rng, (L,), dt, 0, 1), out=True),
             Val("learning_rate", 1e-3, bad=(None,)), Val("beta1", 0.9, bad=(None,)),
             Val("beta2", 0.999, bad=(None,)), Val("eps", 1e-8, bad=(None,)),
             Val("weight_decay", data.draw(st.sampled_from([0.0, 0.01]))),
             Val("step", step, bad=(0, -1, None, 2 ** 70)), threads_item(data)] \
        + clip_items(data)
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        p, g, m, v = (f64(a) for a in before[:4])
        L = p.shape[0]
        for name, a in (("grad", before[1]), ("m", after[2]), ("v", after[3])):
            shape_is(a, (L,), name)
        lr, b1, b2, eps, wd, t, nt = after[4:11]
        d = dtype_of(before[0], before[1], after[2], after[3])
        assert t >= 1, "step < 1 accepted"
        g = clipped_grad(g, after[11], after[12], d) + wd * p
        assert np.array_equal(after[1], before[1]), "grad written"
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        close(after[2], m, d, "m")
        close(after[3], v, d, "v")
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        close(after[0], p - lr * mhat / (np.sqrt(vhat) + eps), d, "param")

    check_call(_optim.adam_update, args, guards, broken, reference)


# ---- convolution and pooling ------------------------------------------------------------------

def draw_geometry(data, pool=False):
    N = data.draw(st.integers(0, 3), label="N")
    H, W = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
    C = data.draw(st.sampled_from([1, 2, 3, 8]), label="C")
    kh, kw = data.draw(st.integers(1, 4), label="kh"), data.draw(st.integers(1, 4), label="kw")
    sh, sw = data.draw(st.integers(1, 3), label="sh"), data.draw(st.integers(1, 3), label="sw")
    if pool:
        H, W = max(H, kh), max(W, kw)
        return N, H, W, C, kh, kw, sh, sw
    ph, pw = data.draw(st.integers(0, 2), label="ph"), data.draw(st.integers(0, 2), label="pw")
    H, W = max(H, kh - 2 * ph), max(W, kw - 2 * pw)
    M = data.draw(st.sampled_from([1, 3, 5, 16]), label="M")
    return N, H, W, C, M, kh, kw, sh, sw, ph, pw


GEOM_BAD = (0, -1, -(2 ** 31), 2 ** 31, None)
# INT_ARGS_NOTE: a C int argument of a kernel wrapper (Cython 3) takes a Python float and
# truncates it (kh=2.5 runs as kh=2, row_len=1.5 as 1): no memory hazard (the layers pass ints,
# checked by fastnn._validation), so the references read such arguments through int().


@contextlib.contextmanager
def conv_path(path):
    """Force the convolution kernels' path (None: by geometry) for the duration."""
    _conv._force_path(path)
    try:
        yield
    finally:
        _conv._force_path(None)


def _end_pad(data, size, k, p, name):
    """An end padding (bottom / right): -1 (the same as before), or 0..2 where the kernel still
    fits the padded input."""
    pe = data.draw(st.sampled_from([-1, -1, 0, 1, 2]), label=name)
    return pe if pe == -1 or size + p + pe >= k else -1


def _conv_items(data, rng, dt, geom, backward):
    N, H, W, C, M, kh, kw, sh, sw, ph, pw = geom
    pe, we = _end_pad(data, H, kh, ph, "ph_end"), _end_pad(data, W, kw, pw, "pw_end")
    pb, pr = ph if pe == -1 else pe, pw if we == -1 else we
    Ho, Wo = (H + ph + pb - kh) // sh + 1, (W + pw + pr - kw) // sw + 1
    K = kh * kw * C
    rows, K2, nch = _conv.conv_workspace(N, H, W, C, M, kh, kw, sh, sw, ph, pw,
                                         np.dtype(dt).itemsize, pe, we)
    assert K2 == K
    slots = data.draw(st.integers(1, 3), label="col thread slots")
    X = Arr("X", rand_values(rng, (N, H, W, C), dt))
    Wm = Arr("W", rand_values(rng, (K, M), dt))
    col = Arr("col", np.zeros((slots, rows, K), dt), out=True)
    geo = [Val("kh", kh, GEOM_BAD), Val("kw", kw, GEOM_BAD), Val("sh", sh, GEOM_BAD),
           Val("sw", sw, GEOM_BAD), Val("ph", ph, (-1, -(2 ** 31), 2 ** 31, None)),
           Val("pw", pw, (-1, None))]
    kind = data.draw(KINDS, label="kind")
    tail = [Val("kind", kind, bad=(None,)), Val("alpha", 0.1, bad=(None,)),
            Val("num_threads", data.draw(st.sampled_from([1, 2, 3])),
                bad=(0, -1, None, 2 ** 31, "1")),
            Val("ph_end", pe, bad=(-2, -(2 ** 31), 2 ** 31, None)),
            Val("pw_end", we, bad=(-2, None, 1.5))]
    if not backward:
        return [X, Wm, Arr("b", rand_values(rng, (M,), dt)),
                Arr("A", np.zeros((N, Ho, Wo, M), dt), out=True), col] + geo + tail
    A = saved_ref(rand_values(rng, (N, Ho, Wo, M), dt), kind, 0.1).astype(dt)
    return [X, Wm, Arr("A", A), Arr("dA", rand_values(rng, (N, Ho, Wo, M), dt)),
            Arr("dZ", np.zeros((N, Ho, Wo, M), dt), out=True),
            Arr("dW", np.zeros((K, M), dt), out=True), Arr("db", np.zeros(M, dt), out=True),
            Arr("dX", np.zeros((N, H, W, C), dt), out=True, optional=True), col,
            Arr("pdW", np.zeros((nch, K, M), dt), out=True),
            Arr("pdb", np.zeros((nch, M), dt), out=True)] + geo + tail


def _conv_geometry_of(X, Wm, kh, kw, sh, sw, ph, pw, pe, we):
    N, H, Wd, C = X.shape
    K, M = Wm.shape
    assert min(kh, kw, sh, sw) >= 1 and min(ph, pw, pe + 1, we + 1) >= 0, "bad geometry accepted"
    pb, pr = ph if pe == -1 else pe, pw if we == -1 else we
    assert H + ph + pb >= kh and Wd + pw + pr >= kw, "kernel larger than padded input accepted"
    assert K == kh * kw * C, f"W of {K} rows accepted for kh kw C = {kh * kw * C}"
    Ho, Wo = (H + ph + pb - kh) // sh + 1, (Wd + pw + pr - kw) // sw + 1
    return N, H, Wd, C, M, Ho, Wo, (ph, pb, pw, pr)


@FUZZ
@given(st.data(), st.sampled_from([None, "gemm", "direct"]))
def test_conv_forward(data, path):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    items = _conv_items(data, rng, dt, draw_geometry(data), backward=False)
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        X, Wm, b = before[:3]
        kh, kw, sh, sw, ph, pw, kind, alpha, nt, pe, we = after[5:16]
        pe, we = int(pe), int(we)  # a float C int argument is truncated (see INT_ARGS_NOTE)
        N, H, Wd, C, M, Ho, Wo, pads = _conv_geometry_of(X, Wm, kh, kw, sh, sw, ph, pw, pe, we)
        shape_is(b, (M,), "b")
        shape_is(after[3], (N, Ho, Wo, M), "A")
        d = dtype_of(X, Wm, b, after[3], after[4])
        Y = conv_ref(X, f64(Wm).reshape(kh, kw, C, M), b, (sh, sw), pads)
        close(after[3], act_ref(Y, kind, alpha), d, "A")

    with conv_path(path):
        check_call(_conv.conv_forward, args, guards, broken, reference)


@FUZZ
@given(st.data(), st.sampled_from([None, "gemm", "direct"]))
def test_conv_backward(data, path):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    items = _conv_items(data, rng, dt, draw_geometry(data), backward=True)
    args, guards, broken = draw_call(data, rng, items)
    if data.draw(st.booleans(), label="dZ is dA") and isinstance(args[3], np.ndarray) \
            and args[3].flags.writeable:
        args[4] = args[3]  # documented: dZ may be dA itself
        broken.append("dZ is dA")

    def reference(before, after, result):
        X, Wm, A, dA = before[:4]
        kh, kw, sh, sw, ph, pw, kind, alpha, nt, pe, we = after[11:22]
        pe, we = int(pe), int(we)  # a float C int argument is truncated (see INT_ARGS_NOTE)
        N, H, Wd, C, M, Ho, Wo, pads = _conv_geometry_of(X, Wm, kh, kw, sh, sw, ph, pw, pe, we)
        for name, a in (("A", A), ("dA", dA), ("dZ", after[4])):
            shape_is(a, (N, Ho, Wo, M), name)
        shape_is(after[5], (Wm.shape), "dW")
        shape_is(after[6], (M,), "db")
        d = dtype_of(X, Wm, A, dA, after[4], after[5], after[6], after[7], after[8], after[9],
                     after[10])
        dZ = act_grad_ref(A, dA, kind, alpha)
        if N and (_known(kind) != 0 or after[4] is not after[3]):
            close(after[4], dZ, d, "dZ")
        dW4, db, dX = conv_backward_ref(X, f64(Wm).reshape(kh, kw, C, M), dZ, (sh, sw), pads)
        close(after[5], dW4.reshape(Wm.shape), d, "dW")
        close(after[6], db, d, "db")
        if after[7] is not None:
            shape_is(after[7], X.shape, "dX")
            close(after[7], dX, d, "dX")

    with conv_path(path):
        check_call(_conv.conv_backward, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_conv_workspace_and_path(data):
    """Geometry helpers: sane sizes or a clean error, for small or out-of-range integers (sizes
    whose products overflow, and itemsize 0, are test_conv_workspace_refuses_overflow's)."""
    small = st.integers(-3, 12)
    c_int = st.one_of(small, st.sampled_from([2 ** 31, -(2 ** 31) - 1]))  # int arguments
    args = [data.draw(small, label=n) for n in ("N", "H", "W", "C", "M")]
    args += [data.draw(c_int, label=n) for n in ("kh", "kw", "sh", "sw", "ph", "pw")]
    itemsize = data.draw(st.sampled_from([4, 8]))
    try:
        rows, K, nch = _conv.conv_workspace(*args, itemsize)
    except CLEAN:
        return
    N, H, W, C, M, kh, kw, sh, sw, ph, pw = args
    assert min(H, W, C, M, kh, kw, sh, sw) >= 1 and min(N, ph, pw) >= 0
    assert H + 2 * ph >= kh and W + 2 * pw >= kw
    assert K == kh * kw * C and rows >= 1 and nch >= 1
    fwd, dw = _conv.conv_path(*args[1:])
    assert fwd in ("gemm", "pointwise", "direct") and dw in ("gemm", "pointwise", "direct")


WORKSPACE_CODE = """
import sys
from fastnn import _conv
args = [int(a) for a in sys.argv[1:]]
try:
    print("returned", _conv.conv_workspace(*args))
except (ValueError, OverflowError) as exc:
    print("ValueError", exc)
"""


@pytest.mark.parametrize("args", [
    (1, 2, 1, 1, 1, 2, 1, 1, 1, 0, 0, 0),                      # itemsize 0
    (1, 2, 1, 2 ** 61 - 2, 4, 2, 1, 1, 1, 0, 0, 4),            # (K + M) * Wo * 4 == 2**64
], ids=["itemsize0", "overflow"])
def test_conv_workspace_refuses_overflow(args):
    proc = subprocess.run([sys.executable, "-c", WORKSPACE_CODE] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-300:]}"
    assert proc.stdout.startswith("ValueError"), proc.stdout


def _pool_items(data, rng, dt, geom, which):
    N, H, W, C, kh, kw, sh, sw = geom
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    geo = [Val("kh", kh, GEOM_BAD), Val("kw", kw, GEOM_BAD), Val("sh", sh, GEOM_BAD),
           Val("sw", sw, GEOM_BAD), threads_item(data, negative=False)]
    X = rand_values(rng, (N, H, W, C), dt)
    if which == "max_forward":
        return [Arr("X", X), Arr("Y", np.zeros((N, Ho, Wo, C), dt), out=True),
                Arr("argmax", np.zeros((N, Ho, Wo, C), np.intc), out=True,
                    other_dtypes=[np.int64, np.uint32, np.float32])] + geo
    if which == "max_backward":
        _, argmax = maxpool_ref(X, (kh, kw), (sh, sw))  # a valid argmax (from the forward)
        return [Arr("dY", rand_values(rng, (N, Ho, Wo, C), dt)),
                Arr("argmax", argmax.astype(np.intc), other_dtypes=[np.int64, np.float32]),
                Arr("dX", np.zeros((N, H, W, C), dt), out=True)] + geo
    if which == "avg_forward":
        return [Arr("X", X), Arr("Y", np.zeros((N, Ho, Wo, C), dt), out=True)] + geo
    return [Arr("dY", rand_values(rng, (N, Ho, Wo, C), dt)),
            Arr("dX", np.zeros((N, H, W, C), dt), out=True)] + geo


def _pool_geometry_of(shape, kh, kw, sh, sw):
    N, H, W, C = shape
    assert min(kh, kw, sh, sw) >= 1 and H >= kh and W >= kw, "bad pooling geometry accepted"
    return N, H, W, C, (H - kh) // sh + 1, (W - kw) // sw + 1


@FUZZ
@given(st.data(), st.sampled_from(["max_forward", "max_backward", "avg_forward",
                                   "avg_backward"]))
def test_pooling(data, which):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    geom = draw_geometry(data, pool=True)
    items = _pool_items(data, rng, dt, geom, which)
    args, guards, broken = draw_call(data, rng, items)
    k = slice(-5, -1)

    def reference(before, after, result):
        kh, kw, sh, sw = after[k]
        if which in ("max_forward", "avg_forward"):
            X = before[0]
            N, H, W, C, Ho, Wo = _pool_geometry_of(X.shape, kh, kw, sh, sw)
            shape_is(after[1], (N, Ho, Wo, C), "Y")
            d = dtype_of(X, after[1])
            if which == "avg_forward":
                win, _ = pool_windows(X, (kh, kw), (sh, sw))
                close(after[1], win.mean(axis=-1), d, "Y")
                return
            shape_is(after[2], (N, Ho, Wo, C), "argmax")
            Y, am = maxpool_ref(X, (kh, kw), (sh, sw))
            close(after[1], Y, d, "Y")
            np.testing.assert_array_equal(after[2], am)
            return
        dY, dX = before[0], after[-6]
        N, H, W, C, Ho, Wo = _pool_geometry_of(dX.shape, kh, kw, sh, sw)
        shape_is(dY, (N, Ho, Wo, C), "dY")
        d = dtype_of(dY, dX)
        if which == "max_backward":
            shape_is(before[1], (N, Ho, Wo, C), "argmax")
            close(dX, maxpool_backward_ref(dY, before[1], dX.shape), d, "dX")
        else:
            close(dX, avgpool_backward_ref(dY, dX.shape, (kh, kw), (sh, sw)), d, "dX")

    fn = {"max_forward": _conv.maxpool_forward, "max_backward": _conv.maxpool_backward,
          "avg_forward": _conv.avgpool_forward, "avg_backward": _conv.avgpool_backward}[which]
    check_call(fn, args, guards, broken, reference)


@pytest.mark.parametrize("bad", [10 ** 8, -(10 ** 8), 16])
def test_maxpool_backward_refuses_out_of_range_argmax(bad):
    """Run in a child process: the unchecked write may kill it."""
    code = textwrap.dedent(f"""
        import numpy as np
        from fastnn import _conv
        dY = np.ones((1, 2, 2, 1), np.float32)
        argmax = np.full((1, 2, 2, 1), {bad}, np.intc)
        dX = np.zeros((1, 4, 4, 1), np.float32)
        try:
            _conv.maxpool_backward(dY, argmax, dX, 2, 2, 2, 2, 1)
        except ValueError as exc:
            print("ValueError", exc)
        else:
            print("accepted", float(dX.sum()))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=child_env())
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.startswith("ValueError"), proc.stdout


NEGATIVE_THREADS_CODE = """
import sys
import numpy as np
from fastnn import _conv
which, f = sys.argv[1], np.float32
try:
    if which == "conv_forward":
        X, Wm = np.ones((16, 28, 28, 8), f), np.ones((72, 16), f)
        rows, K, _ = _conv.conv_workspace(16, 28, 28, 8, 16, 3, 3, 1, 1, 0, 0, 4)
        _conv.conv_forward(X, Wm, np.zeros(16, f), np.empty((16, 26, 26, 16), f),
                           np.empty((2, rows, K), f), 3, 3, 1, 1, 0, 0, 0, 0.0, -1)
    else:
        X = np.ones((64, 64, 64, 8), f)
        _conv.maxpool_forward(X, np.empty((64, 32, 32, 8), f),
                              np.empty((64, 32, 32, 8), np.intc), 2, 2, 2, 2, -1)
except ValueError as exc:
    print("ValueError", exc)
else:
    print("accepted")
"""


@pytest.mark.parametrize("which", ["conv_forward", "maxpool_forward"])
def test_conv_kernels_refuse_negative_num_threads(which):
    proc = subprocess.run([sys.executable, "-c", NEGATIVE_THREADS_CODE, which],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-300:]}"
    assert proc.stdout.startswith("ValueError"), proc.stdout


# ---- public layer calls -----------------------------------------------------------------------

LAYER_ACTS = st.sampled_from([None, "relu", "leaky_relu", "sigmoid", "tanh"])
KIND_OF = {None: 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4}
LAYER_CLEAN = CLEAN + (RuntimeError,)


# inputs that are valid (converted or copied as documented) and must be accepted
VALID_VARIANTS = ("ok", "float64", "int", "f", "strided", "neg", "readonly", "list", "empty")


def draw_input(data, rng, shape, dtype, name):
    """A valid input of ``shape`` for a layer of ``dtype``, or a broken one: (object, note)."""
    how = data.draw(st.sampled_from(["ok", "ok", "ok", "float64", "int", "f", "strided", "neg",
                                     "readonly", "list", "none", "dtype", "shape", "ndim",
                                     "empty", "scalar"]), label=f"{name} variant")
    shape = tuple(shape)
    if how in ("ok", "f", "strided", "neg", "readonly"):
        return Guarded(rand_values(rng, shape, dtype), "c" if how == "ok" else how).view, how
    if how == "float64":
        return rand_values(rng, shape, np.float64), how
    if how == "int":
        return rng.integers(-3, 4, size=shape).astype(np.int32), how
    if how == "list":  # a list with an empty axis has lost the shape after it: not valid
        return rand_values(rng, shape, dtype).tolist(), how if all(shape) else "empty list"
    if how == "none":
        return None, how
    if how == "dtype":
        dt = data.draw(st.sampled_from(BAD_FLOAT_DTYPES), label="bad dtype")
        return rand_values(rng, shape, dt), f"dtype {np.dtype(dt)}"
    if how == "shape":
        s = list(shape)
        ax = data.draw(st.integers(0, len(s) - 1), label="axis")
        s[ax] = max(0, s[ax] + data.draw(st.sampled_from([-1, 1, 3])))
        return rand_values(rng, tuple(s), dtype), f"shape {tuple(s)}"
    if how == "ndim":
        s = data.draw(st.sampled_from([shape[1:], shape + (1,), (1,) + shape, shape[:1]]))
        return rand_values(rng, s, dtype), f"shape {s}"
    if how == "empty":  # valid for forward; for backward only when the batch was empty too
        return rand_values(rng, (0,) + shape[1:], dtype), \
            "empty" if name == "X" or shape[0] == 0 else "emptied batch"
    return np.float32(1.0), how


def _layer_reference_forward(layer, X):
    if isinstance(layer, Dense):
        Z = f64(X) @ f64(layer.weight) + f64(layer.bias)
        return softmax(Z) if layer.activation == "softmax" else \
            act_ref(Z, KIND_OF.get(layer.activation if layer.activation != "identity" else None),
                    layer.alpha)
    if isinstance(layer, Conv2D):
        Y = conv_ref(X, layer.weight, layer.bias, layer.stride, layer.padding)
        return act_ref(Y, KIND_OF.get(None if layer.activation == "identity"
                                      else layer.activation), layer.alpha)
    win, _ = pool_windows(X, layer.kernel_size, layer.stride)
    if isinstance(layer, MaxPool2D):
        return maxpool_ref(X, layer.kernel_size, layer.stride)[0]
    return win.mean(axis=-1)


def _layer_reference_backward(layer, X, A, dA):
    """(dX, grads) for the last forward's input X, output A and the output gradient dA."""
    if isinstance(layer, (Dense, Conv2D)):
        name = None if layer.activation == "identity" else layer.activation
        if name == "softmax":
            A, dA = f64(A), f64(dA)
            dZ = A * (dA - (dA * A).sum(axis=1, keepdims=True))
        else:
            dZ = act_grad_ref(A, dA, KIND_OF[name], layer.alpha)
        if isinstance(layer, Dense):
            return dZ @ f64(layer.weight).T, {"weight": f64(X).T @ dZ, "bias": dZ.sum(axis=0)}
        dW, db, dX = conv_backward_ref(X, layer.weight, dZ, layer.stride, layer.padding)
        return dX, {"weight": dW, "bias": db}
    if isinstance(layer, MaxPool2D):
        _, am = maxpool_ref(X, layer.kernel_size, layer.stride)
        return maxpool_backward_ref(dA, am, X.shape), {}
    return avgpool_backward_ref(dA, X.shape, layer.kernel_size, layer.stride), {}


def fits(layer, shape):
    """Whether a batch of ``shape`` is a valid input of ``layer`` (written from the docs, not
    from the layer's code)."""
    if isinstance(layer, Dense):
        return len(shape) == 2 and shape[1] == layer.in_features
    if len(shape) != 4 or min(shape[1:]) < 1:
        return False
    (kh, kw) = layer.kernel_size
    if isinstance(layer, Conv2D):
        ph, pw = layer.padding
        return shape[3] == layer.in_channels and shape[1] + 2 * ph >= kh and \
            shape[2] + 2 * pw >= kw
    return shape[1] >= kh and shape[2] >= kw


def draw_layer(data):
    kind = data.draw(st.sampled_from(["dense", "conv", "maxpool", "avgpool"]), label="layer")
    if kind == "dense":
        fin, fout = data.draw(st.integers(1, 9)), data.draw(st.sampled_from([1, 2, 5, 40]))
        act = data.draw(st.one_of(LAYER_ACTS, st.just("softmax")))
        return Dense(fin, fout, activation=act), (fin,)
    if kind == "conv":
        N, H, W, C, M, kh, kw, sh, sw, ph, pw = draw_geometry(data)
        layer = Conv2D(C, M, (kh, kw), stride=(sh, sw), padding=(ph, pw),
                       activation=data.draw(LAYER_ACTS))
        return layer, (H, W, C)
    N, H, W, C, kh, kw, sh, sw = draw_geometry(data, pool=True)
    cls = MaxPool2D if kind == "maxpool" else AvgPool2D
    return cls((kh, kw), stride=(sh, sw)), (H, W, C)


# ---- bugs found by the property tests below: minimal reproductions ---------------------------

def repro_read_only_grad(layer_name):
    """backward(grad_output) with a read-only grad_output, for a layer without activation."""
    if layer_name == "dense":
        layer, X = Dense(3, 2), np.ones((4, 3), np.float32)
    else:
        layer, X = Conv2D(2, 3, 2), np.ones((2, 4, 4, 2), np.float32)
    layer.build(np.float32, np.random.default_rng(0))
    A = layer.forward(X)
    grad = np.ones_like(A)
    grad.flags.writeable = False
    return layer.backward(grad)


def repro_conv_empty_batch():
    """Conv2D.forward on an empty batch, geometry on the im2col + GEMM path (K = 72 > 64)."""
    layer = Conv2D(8, 4, 3)
    layer.build(np.float32, np.random.default_rng(0))
    return layer.forward(np.zeros((0, 5, 5, 8), np.float32))


@pytest.mark.parametrize("layer_name", ["dense", "conv"])
def test_backward_accepts_read_only_grad_output(layer_name):
    dX = repro_read_only_grad(layer_name)
    assert dX is not None


def test_conv_forward_accepts_empty_batch():
    assert repro_conv_empty_batch().shape == (0, 3, 3, 4)


@FUZZ
@given(st.data())
def test_layer_forward_backward(data):
    """Dense / Conv2D / MaxPool2D / AvgPool2D: forward(X) and backward(grad) with random inputs."""
    rng = rng_from(data)
    dt = np.dtype(data.draw(st.sampled_from(FLOATS)))
    layer, per_sample = draw_layer(data)
    layer.build(dt, np.random.default_rng(0))
    N = data.draw(st.integers(0, 4), label="N")
    if data.draw(st.booleans(), label="backward first"):
        with pytest.raises(RuntimeError):
            layer.backward(np.zeros((N,) + layer.output_shape(per_sample), dt))
    X, note = draw_input(data, rng, (N,) + per_sample, dt, "X")
    try:
        A = layer.forward(X)
    except CLEAN as exc:
        assert note not in VALID_VARIANTS, f"valid X ({note}) refused: {exc!r}"
        return
    # accepted: X must have converted to a valid input of the layer's dtype
    Xc = np.asarray(X)
    assert Xc.dtype.kind in "fiu" and Xc.dtype != np.float16, f"X {note} accepted"
    Xc = Xc.astype(dt)
    assert fits(layer, Xc.shape), f"X {note} accepted"
    assert A.dtype == dt and A.shape == (Xc.shape[0],) + layer.output_shape(Xc.shape[1:])
    close(A, _layer_reference_forward(layer, Xc), dt, f"forward, X {note}")
    A = A.copy()
    dA, gnote = draw_input(data, rng, A.shape if A.ndim else (1,), dt, "grad")
    try:
        dX = layer.backward(dA)
    except LAYER_CLEAN as exc:
        assert gnote not in VALID_VARIANTS, f"valid grad ({gnote}) refused: {exc!r}"
        return
    dAc = np.asarray(dA)
    assert dAc.dtype.kind in "fiu" and dAc.dtype != np.float16 and dAc.shape == A.shape, \
        f"grad {gnote} accepted"
    ref_dX, ref_grads = _layer_reference_backward(layer, Xc, A, dAc.astype(dt))
    assert dX is not None and dX.shape == Xc.shape and dX.dtype == dt
    close(dX, ref_dX, dt, f"dX (X {note}, grad {gnote})")
    for k, g in ref_grads.items():
        close(layer.grads[k], g, dt, f"grad {k} (X {note}, grad {gnote})")


@FUZZ
@given(st.data())
def test_layer_with_replaced_parameters(data):
    """A user may assign ``layer.params[...]``: a wrong shape is refused with a ValueError naming
    the parameter; another dtype or layout is copied into the layer's array, never misread."""
    rng = rng_from(data)
    dt = np.dtype(data.draw(st.sampled_from(FLOATS)))
    kind = data.draw(st.sampled_from(["dense", "conv"]))
    if kind == "dense":
        layer, per_sample = Dense(data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))), None
        per_sample = (layer.in_features,)
    else:
        layer, per_sample = Conv2D(2, 3, 2, padding=1), (4, 4, 2)
    layer.build(dt, np.random.default_rng(0))
    which = data.draw(st.sampled_from(["params", "grads"]))
    key = data.draw(st.sampled_from(["weight", "bias"]))
    good = getattr(layer, which)[key]
    how = data.draw(st.sampled_from(["f", "strided", "neg", "readonly", "dtype", "shape",
                                     "list"]))
    if how in ("f", "strided", "neg", "readonly"):
        new = Guarded(rand_values(rng, good.shape, dt), how).view
    elif how == "dtype":
        new = rand_values(rng, good.shape, data.draw(st.sampled_from(
            [np.float32, np.float64, np.int64, np.float16])))
    elif how == "shape":
        s = list(good.shape)
        s[-1] += data.draw(st.sampled_from([-1, 1]))
        new = rand_values(rng, tuple(s), dt)
    else:
        new = good.tolist()
    if how == "shape":  # refused at the assignment, naming the parameter
        with pytest.raises(ValueError, match=f"{type(layer).__name__}.{key} must have shape"):
            getattr(layer, which)[key] = new
        return
    getattr(layer, which)[key] = new  # anything else is copied into the layer's own array
    assert getattr(layer, which)[key] is good
    X = rand_values(rng, (3,) + per_sample, dt)
    try:
        A = layer.forward(X).copy()
        dX = layer.backward(np.ones_like(A))
    except LAYER_CLEAN:
        return
    close(A, _layer_reference_forward(layer, X), dt, f"forward with {which}[{key}] {how}")
    ref_dX, ref_grads = _layer_reference_backward(layer, X, A, np.ones(A.shape))
    close(dX, ref_dX, dt, f"dX with {which}[{key}] {how}")
    for k, g in ref_grads.items():
        close(layer.grads[k], g, dt, f"grads[{k}] with {which}[{key}] {how}")


@pytest.mark.parametrize("make", [lambda: (Dense(4, 4), (3, 4)),
                                  lambda: (Conv2D(2, 2, 3, padding=1), (2, 5, 5, 2))],
                         ids=["dense", "conv"])
def test_layer_applied_to_its_own_output(make):
    layer, shape = make()
    layer.build(np.float32, np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    h = layer.forward(X).copy()
    expected = layer.forward(h).copy()
    got = layer.forward(layer.forward(X))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ==== the training toolkit's kernels (issue 13) ================================================

# ---- dropout, batch and layer normalisation (fastnn._norm) ----------------------------------

GOLDEN64 = 0x9E3779B97F4A7C15
U64 = np.uint64


def _mix64(z):
    """SplitMix64's finaliser (Stafford's Mix13) on a uint64 array, wrapping mod 2**64."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def same_bits_at_other_thread_count(fn, before, after, result, nt_index):
    """Rerun a valid call on copies of its arguments as they were, with another thread count:
    every array and the returned value must come out bit for bit the same (the house rule)."""
    args = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in before]
    args[nt_index] = 3 if after[nt_index] != 3 else 1
    again = fn(*args)
    assert again == result or (again != again and result != result), \
        f"{fn.__name__} returned {again!r} with {args[nt_index]} threads, {result!r} with " \
        f"{after[nt_index]}"
    for i, a in enumerate(after):
        if isinstance(a, np.ndarray):
            assert np.array_equal(args[i], a, equal_nan=True), \
                f"{fn.__name__}: argument {i} differs with {args[nt_index]} threads"


def dropout_keep_ref(seed, step, L, rate):
    """The keep mask (bool, length L) of src_cython/norm.h, written out: key = mix(mix(seed) ^
    mix(step + golden)), element i kept when mix(key + (i + 1) golden) >> 11 >= floor(rate 2^53)."""
    with np.errstate(over="ignore"):
        key = _mix64(_mix64(np.array([seed], U64))
                     ^ _mix64(np.array([step], U64) + U64(GOLDEN64)))
        i = np.arange(L, dtype=U64)
        r = _mix64(key + (i + U64(1)) * U64(GOLDEN64))
    return (r >> U64(11)) >= U64(int(rate * 2.0 ** 53))


def test_dropout_mask_reference_is_the_kernels():
    """The hash written out above is the kernel's: the same mask for rate 0.5 (and not all
    kept or all dropped), and a different one for another step."""
    L = 1000
    mask = np.empty(L, np.uint8)
    _norm.dropout_forward(np.ones(L), np.empty(L), mask, 0.5, 123, 7, 1)
    ref = dropout_keep_ref(123, 7, L, 0.5)
    np.testing.assert_array_equal(mask, ref.astype(np.uint8))
    assert 400 < ref.sum() < 600
    assert (dropout_keep_ref(123, 8, L, 0.5) != ref).any()


NORM_ROWS = st.one_of(st.integers(0, 9), st.sampled_from([33, 70, 2100]))
NORM_COLS = st.one_of(st.integers(0, 9), st.sampled_from([16, 33]))
SEEDS = st.one_of(st.integers(0, 2 ** 64 - 1), st.sampled_from([0, 2 ** 64 - 1]))
DROP_LENGTHS = st.one_of(st.integers(0, 40), st.sampled_from([16383, 16384, 16385, 40000]))


@FUZZ
@given(st.data())
def test_dropout_forward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(DROP_LENGTHS)
    rate = data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1 - 2 ** -40]))
    items = [Arr("X", rand_values(rng, (L,), dt)), Arr("Y", np.zeros(L, dt), out=True),
             Arr("mask", np.zeros(L, np.uint8), out=True,
                 other_dtypes=[np.bool_, np.int8, np.uint16, np.float32, np.intc]),
             Val("rate", rate, bad=(-0.1, 1.0, 1.5, float("nan"), None, "0.5")),
             Val("seed", data.draw(SEEDS, label="seed"), bad=(-1, 2 ** 64, None, 1.5)),
             Val("step", data.draw(SEEDS, label="step"), bad=(-1, 2 ** 64, None)),
             threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)
    if data.draw(st.booleans(), label="Y is X") and isinstance(args[0], np.ndarray) \
            and args[0].flags.writeable:
        args[1] = args[0]  # documented: Y may be X
        broken.append("Y is X")

    def reference(before, after, result):
        X = before[0]
        L = X.shape[0]
        rate, seed, step = after[3:6]
        shape_is(after[1], (L,), "Y")
        shape_is(after[2], (L,), "mask")
        # Cython reads a bool buffer as uint8 (same size, values 0 / 1): harmless
        assert after[2].dtype in (np.uint8, np.bool_), f"mask of dtype {after[2].dtype} accepted"
        assert 0 <= rate < 1, f"rate {rate} accepted"
        keep = dropout_keep_ref(int(seed), int(step), L, rate)  # truncated (INT_ARGS_NOTE)
        np.testing.assert_array_equal(after[2], keep.astype(np.uint8), err_msg="mask")
        d = dtype_of(X, after[1])
        scale = f64(np.asarray(1.0 / (1.0 - rate), dtype=d))  # the scale in the dtype
        close(after[1], f64(X) * keep * scale, d, "Y")
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_norm.dropout_forward, before, after, result, 6)

    check_call(_norm.dropout_forward, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_dropout_backward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(DROP_LENGTHS)
    rate = data.draw(st.sampled_from([0.0, 0.25, 0.9]))
    items = [Arr("dY", rand_values(rng, (L,), dt)),
             Arr("mask", (rng.random(L) >= rate).astype(np.uint8),
                 other_dtypes=[np.bool_, np.int8, np.uint16, np.float32, np.intc]),
             Arr("dX", np.zeros(L, dt), out=True),
             Val("rate", rate, bad=(-0.5, 1.0, float("inf"), float("nan"), None)),
             threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)
    if data.draw(st.booleans(), label="dX is dY") and isinstance(args[0], np.ndarray) \
            and args[0].flags.writeable:
        args[2] = args[0]  # documented: dX may be dY
        broken.append("dX is dY")

    def reference(before, after, result):
        dY, mask = before[0], before[1]
        L = dY.shape[0]
        shape_is(mask, (L,), "mask")
        shape_is(after[2], (L,), "dX")
        assert mask.dtype in (np.uint8, np.bool_), f"mask of dtype {mask.dtype} accepted"
        rate = after[3]
        assert 0 <= rate < 1, f"rate {rate} accepted"
        d = dtype_of(dY, after[2])
        scale = f64(np.asarray(1.0 / (1.0 - rate), dtype=d))
        close(after[2], f64(dY) * f64(mask) * scale, d, "dX")

    check_call(_norm.dropout_backward, args, guards, broken, reference)


F64_ONLY = [np.float32, np.int64, np.float16]  # wrong dtypes of the float64 statistics arrays


def bn_stats_ref(X):
    """Per-column mean and biased variance (float64)."""
    X = f64(X)
    return X.mean(axis=0), X.var(axis=0)


@FUZZ
@given(st.data())
def test_batchnorm_forward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    M, C = data.draw(NORM_ROWS, label="M"), data.draw(NORM_COLS, label="C")
    training = data.draw(st.booleans(), label="training")
    offset = data.draw(st.sampled_from([0.0, 100.0]), label="offset")  # a large mean
    items = [Arr("X", rand_values(rng, (M, C), dt) + np.asarray(offset, dt)),
             Arr("weight", rand_values(rng, (C,), dt)), Arr("bias", rand_values(rng, (C,), dt)),
             Arr("mean", rand_values(rng, (C,), np.float64), out=True, other_dtypes=F64_ONLY),
             Arr("var", rand_values(rng, (C,), np.float64, 0.1, 2), out=True,
                 other_dtypes=F64_ONLY),
             Arr("invstd", np.zeros(C), out=True, other_dtypes=F64_ONLY),
             Arr("Y", np.zeros((M, C), dt), out=True),
             Val("eps", data.draw(st.sampled_from([1e-5, 1e-3])),
                 bad=(-1e-5, float("nan"), None, "1e-5")),
             Val("training", training, bad=(None,)), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        X, weight, bias = before[:3]
        M, C = X.shape
        for name, i in (("weight", 1), ("bias", 2)):
            shape_is(before[i], (C,), name)
        for name, i in (("mean", 3), ("var", 4), ("invstd", 5)):
            shape_is(after[i], (C,), name)
            assert after[i].dtype == np.float64, f"{name} of dtype {after[i].dtype} accepted"
        shape_is(after[6], (M, C), "Y")
        d = dtype_of(X, weight, bias, after[6])
        eps, training = after[7], after[8]
        assert eps >= 0, f"eps {eps} accepted"
        if C == 0:
            return
        if training:
            assert M >= 1, "training on an empty batch accepted"
            mean, var = bn_stats_ref(X)
            np.testing.assert_allclose(after[3], mean, rtol=1e-12, atol=1e-12, err_msg="mean")
            np.testing.assert_allclose(after[4], var, rtol=1e-9, atol=1e-12, err_msg="var")
        else:
            mean, var = f64(before[3]), f64(before[4])
        invstd = 1 / np.sqrt(var + eps)
        np.testing.assert_allclose(after[5], invstd, rtol=1e-9, err_msg="invstd")
        close(after[6], (f64(X) - mean) * invstd * f64(weight) + f64(bias), d, "Y")
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_norm.batchnorm_forward, before, after, result, 9)

    check_call(_norm.batchnorm_forward, args, guards, broken, reference)


def bn_backward_ref(X, dY, weight, mean, invstd, training):
    """(dweight, dbias, dX) of Y = (X - mean) invstd weight + bias over the rows of X (M, C);
    with the batch's own statistics (training) the dependence of mean and invstd on X is part of
    dX (PyTorch's BatchNorm backward)."""
    X, dY, weight = f64(X), f64(dY), f64(weight)
    xhat = (X - mean) * invstd
    dweight, dbias = (dY * xhat).sum(axis=0), dY.sum(axis=0)
    M = max(X.shape[0], 1)
    if training:
        dX = weight * invstd * (dY - dbias / M - xhat * dweight / M)
    else:
        dX = weight * invstd * dY
    return dweight, dbias, dX


@FUZZ
@given(st.data())
def test_batchnorm_backward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    M, C = data.draw(NORM_ROWS, label="M"), data.draw(NORM_COLS, label="C")
    training = data.draw(st.booleans(), label="training")
    X = rand_values(rng, (M, C), dt)
    mean, var = bn_stats_ref(X) if M else (np.zeros(C), np.ones(C))
    items = [Arr("X", X), Arr("dY", rand_values(rng, (M, C), dt)),
             Arr("weight", rand_values(rng, (C,), dt)),
             Arr("mean", mean, other_dtypes=F64_ONLY),
             Arr("invstd", 1 / np.sqrt(var + 1e-3), other_dtypes=F64_ONLY),
             Arr("dX", np.zeros((M, C), dt), out=True, optional=True),
             Arr("dweight", np.zeros(C, dt), out=True), Arr("dbias", np.zeros(C, dt), out=True),
             Val("training", training, bad=(None,)), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)
    if data.draw(st.booleans(), label="dX is dY") and isinstance(args[1], np.ndarray) \
            and args[1].flags.writeable:
        args[5] = args[1]  # documented: dX may be dY
        broken.append("dX is dY")

    def reference(before, after, result):
        X, dY, weight, mean, invstd = before[:5]
        M, C = X.shape
        shape_is(dY, (M, C), "dY")
        for name, i in (("weight", 2), ("mean", 3), ("invstd", 4), ("dweight", 6),
                        ("dbias", 7)):
            shape_is(after[i] if i > 5 else before[i], (C,), name)
        for name, a in (("mean", mean), ("invstd", invstd)):
            assert a.dtype == np.float64, f"{name} of dtype {a.dtype} accepted"
        d = dtype_of(X, dY, weight, after[5], after[6], after[7])
        if C == 0:
            return
        dweight, dbias, dX = bn_backward_ref(X, dY, weight, mean, invstd, after[8])
        close(after[6], dweight, d, "dweight")
        close(after[7], dbias, d, "dbias")
        if after[5] is not None:
            shape_is(after[5], (M, C), "dX")
            close(after[5], dX, d, "dX")
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_norm.batchnorm_backward, before, after, result, 9)

    check_call(_norm.batchnorm_backward, args, guards, broken, reference)


def ln_stats_ref(X, eps):
    """Per-row mean and 1 / sqrt(biased variance + eps) (float64)."""
    X = f64(X)
    return X.mean(axis=1), 1 / np.sqrt(X.var(axis=1) + eps)


def ln_backward_ref(X, dY, weight, mean, invstd):
    """(dweight, dbias, dX) of layer normalisation (torch.nn.LayerNorm's backward)."""
    X, dY, weight = f64(X), f64(dY), f64(weight)
    xhat = (X - mean[:, None]) * invstd[:, None]
    g = dY * weight
    dX = invstd[:, None] * (g - g.mean(axis=1, keepdims=True)
                            - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return (dY * xhat).sum(axis=0), dY.sum(axis=0), dX


@FUZZ
@given(st.data())
def test_layernorm_forward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    M, C = data.draw(NORM_ROWS, label="M"), data.draw(NORM_COLS, label="C")
    offset = data.draw(st.sampled_from([0.0, 100.0]), label="offset")
    items = [Arr("X", rand_values(rng, (M, C), dt) + np.asarray(offset, dt)),
             Arr("weight", rand_values(rng, (C,), dt)), Arr("bias", rand_values(rng, (C,), dt)),
             Arr("mean", np.zeros(M), out=True, other_dtypes=F64_ONLY),
             Arr("invstd", np.zeros(M), out=True, other_dtypes=F64_ONLY),
             Arr("Y", np.zeros((M, C), dt), out=True),
             Val("eps", data.draw(st.sampled_from([1e-5, 1e-3])),
                 bad=(-1.0, float("nan"), None)), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        X, weight, bias = before[:3]
        M, C = X.shape
        assert C >= 1, "an input without columns accepted"
        shape_is(weight, (C,), "weight")
        shape_is(bias, (C,), "bias")
        for name, i in (("mean", 3), ("invstd", 4)):
            shape_is(after[i], (M,), name)
            assert after[i].dtype == np.float64, f"{name} of dtype {after[i].dtype} accepted"
        shape_is(after[5], (M, C), "Y")
        d = dtype_of(X, weight, bias, after[5])
        assert after[6] >= 0, f"eps {after[6]} accepted"
        mean, invstd = ln_stats_ref(X, after[6])
        np.testing.assert_allclose(after[3], mean, rtol=1e-12, atol=1e-12, err_msg="mean")
        np.testing.assert_allclose(after[4], invstd, rtol=1e-8, err_msg="invstd")
        close(after[5], (f64(X) - mean[:, None]) * invstd[:, None] * f64(weight) + f64(bias),
              d, "Y")
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_norm.layernorm_forward, before, after, result, 7)

    check_call(_norm.layernorm_forward, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_layernorm_backward(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    M, C = data.draw(NORM_ROWS, label="M"), data.draw(NORM_COLS, label="C")
    X = rand_values(rng, (M, C), dt)
    mean, invstd = ln_stats_ref(X, 1e-3) if C else (np.zeros(M), np.ones(M))
    items = [Arr("X", X), Arr("dY", rand_values(rng, (M, C), dt)),
             Arr("weight", rand_values(rng, (C,), dt)),
             Arr("mean", mean, other_dtypes=F64_ONLY),
             Arr("invstd", invstd, other_dtypes=F64_ONLY),
             Arr("dX", np.zeros((M, C), dt), out=True, optional=True),
             Arr("dweight", np.zeros(C, dt), out=True), Arr("dbias", np.zeros(C, dt), out=True),
             threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)
    if data.draw(st.booleans(), label="dX is dY") and isinstance(args[1], np.ndarray) \
            and args[1].flags.writeable:
        args[5] = args[1]  # documented: dX may be dY
        broken.append("dX is dY")

    def reference(before, after, result):
        X, dY, weight, mean, invstd = before[:5]
        M, C = X.shape
        assert C >= 1, "an input without columns accepted"
        shape_is(dY, (M, C), "dY")
        shape_is(weight, (C,), "weight")
        for name, a in (("mean", mean), ("invstd", invstd)):
            shape_is(a, (M,), name)
            assert a.dtype == np.float64, f"{name} of dtype {a.dtype} accepted"
        shape_is(after[6], (C,), "dweight")
        shape_is(after[7], (C,), "dbias")
        d = dtype_of(X, dY, weight, after[5], after[6], after[7])
        dweight, dbias, dX = ln_backward_ref(X, dY, weight, mean, invstd)
        close(after[6], dweight, d, "dweight")
        close(after[7], dbias, d, "dbias")
        if after[5] is not None:
            shape_is(after[5], (M, C), "dX")
            close(after[5], dX, d, "dX")
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_norm.layernorm_backward, before, after, result, 8)

    check_call(_norm.layernorm_backward, args, guards, broken, reference)


# ---- new loss kernels and arguments (fastnn._losses) -----------------------------------------

ROW_LENS = st.sampled_from([1, 1, 2, 3, 7, 1000])
SW_DTYPES = [np.float32, np.int64, np.float16]  # wrong dtypes of the float64 sample_weight


def flat_loss_terms(which, p, t, delta):
    """(loss_i, dloss_i / dp_i), float64: torch's BCEWithLogitsLoss, MSELoss, HuberLoss terms."""
    p, t = f64(p), f64(t)
    if which == "bce":
        return (np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p))),
                1 / (1 + np.exp(-p)) - t)
    d = p - t
    if which == "mse":
        return d * d, 2 * d
    small = np.abs(d) < delta
    return (np.where(small, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta)),
            np.where(small, d, delta * np.sign(d)))


@FUZZ
@given(st.data(), st.sampled_from(["bce", "mse", "huber"]))
def test_flat_losses_weighted(data, which):
    """sigmoid_binary_cross_entropy, mean_squared_error and huber with sample_weight (N,) and
    row_len K: the term of element i weighted by sample_weight[i // K] in loss and gradient."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K = data.draw(sizes(0, 9, (20,)), label="N"), data.draw(ROW_LENS, label="row_len")
    L = N * K
    nb = -(-L // BLOCK)
    lo, hi = (0, 1) if which == "bce" else (-3, 3)
    delta = data.draw(st.sampled_from([1.0, 0.3, 5.0]), label="delta")
    items = [Arr("z", rand_values(rng, (L,), dt, -4, 4)),
             Arr("target", rand_values(rng, (L,), dt, lo, hi)),
             Arr("dz", np.zeros(L, dt), out=True),
             Arr("block_loss", np.zeros(nb + data.draw(st.integers(0, 2))), out=True,
                 other_dtypes=[np.float32, np.int64]),
             Val("scale", data.draw(st.sampled_from([1.0, 0.25, 1 / max(L, 1)])), bad=(None,))]
    if which == "huber":
        items.append(Val("delta", delta, bad=(0.0, -1.0, float("nan"), None)))
    items += [threads_item(data),
              Arr("sample_weight", rand_values(rng, (N,), np.float64, 0, 2), optional=True,
                  other_dtypes=SW_DTYPES),
              Val("row_len", K, bad=(0, -1, None, 2 ** 63, 1.5))]
    args, guards, broken = draw_call(data, rng, items)
    fn = {"bce": _losses.sigmoid_binary_cross_entropy, "mse": _losses.mean_squared_error,
          "huber": _losses.huber}[which]

    def reference(before, after, result):
        z, t = before[0], before[1]
        L = z.shape[0]
        shape_is(t, (L,), "target")
        shape_is(after[2], (L,), "dz")
        assert after[3].shape[0] >= -(-L // BLOCK), "block_loss too short accepted"
        d = dtype_of(z, t, after[2])
        scale, sw, row_len = after[4], before[-2], int(after[-1])  # truncated (INT_ARGS_NOTE)
        delta = after[5] if which == "huber" else None
        if which == "huber":
            assert delta > 0, f"delta {delta} accepted"
        assert row_len >= 1, f"row_len {row_len} accepted"
        if sw is None:
            w = np.ones(L)
        else:
            assert sw.dtype == np.float64 and sw.ndim == 1, "bad sample_weight accepted"
            assert sw.shape[0] * row_len == L, \
                f"sample_weight of {sw.shape[0]} for {L} elements in rows of {row_len} accepted"
            w = np.repeat(f64(sw), row_len)
        loss, grad = flat_loss_terms(which, z, t, delta)
        np.testing.assert_allclose(result, scale * (w * loss).sum(), rtol=1e-9, atol=1e-9,
                                   err_msg="loss")
        close(after[2], scale * w * grad, d, "dz")

    check_call(fn, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_softmax_cross_entropy_weighted_smoothed(data):
    """softmax_cross_entropy with sample_weight and label_smoothing (torch's CrossEntropyLoss
    target ``(1 - eps) onehot + eps / K``)."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K = data.draw(sizes(0, 9, (40,))), data.draw(sizes(1, 9, (40, 130)))
    labels = rng.integers(0, K, size=N).astype(np.int64)
    eps = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="label_smoothing")
    items = [Arr("logits", rand_values(rng, (N, K), dt, -8, 8)),
             Arr("labels", labels, other_dtypes=[np.int32, np.float64]),
             Arr("dlogits", np.zeros((N, K), dt), out=True),
             Arr("row_loss", np.zeros(N), out=True, other_dtypes=[np.float32]),
             Val("scale", data.draw(st.sampled_from([1.0, 1.0 / max(N, 1)])), bad=(None,)),
             threads_item(data),
             Arr("sample_weight", rand_values(rng, (N,), np.float64, 0, 2), optional=True,
                 other_dtypes=SW_DTYPES),
             Val("label_smoothing", eps, bad=(-0.1, 1.5, float("nan"), None))]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        logits, lab, sw = before[0], before[1], before[6]
        N, K = logits.shape
        shape_is(lab, (N,), "labels")
        assert K >= 1 or N == 0
        shape_is(after[2], (N, K), "dlogits")
        shape_is(after[3], (N,), "row_loss")
        d = dtype_of(logits, after[2])
        scale, eps = after[4], after[7]
        assert 0 <= eps <= 1, f"label_smoothing {eps} accepted"
        if sw is None:
            w = np.ones(N)
        else:
            shape_is(sw, (N,), "sample_weight")
            assert sw.dtype == np.float64
            w = f64(sw)
        if N == 0:
            assert result == 0
            return
        Z = f64(logits)
        rows, row_tol = softmax_ce_rows_and_tolerance(logits, lab, d)
        rows = rows + eps * (Z[np.arange(N), lab] - Z.mean(axis=1))
        row_tol = row_tol + EPS64 * eps * (np.abs(Z).max(axis=1) + 1) * 4
        assert_within(after[3], rows, row_tol, "row_loss")
        target = np.full((N, K), eps / K)
        target[np.arange(N), lab] += 1 - eps
        close(after[2], scale * w[:, None] * (softmax(Z) - target), d, "dlogits")
        want = scale * (w * rows).sum()
        assert abs(result - want) <= abs(scale) * ((w * row_tol).sum() + 1e-12 * N), \
            f"total {result!r}, expected {want!r}"
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_losses.softmax_cross_entropy, before, after,
                                            result, 5)

    check_call(_losses.softmax_cross_entropy, args, guards, broken, reference)


def kl_ref(logits, target):
    """(row_loss, dlogits / scale) of softmax + KL(target || softmax(logits)), 0 log 0 = 0."""
    Z, T = f64(logits), f64(target)
    m = Z.max(axis=1, keepdims=True)
    logp = Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))
    pos = T > 0
    rows = np.where(pos, T * (np.log(np.where(pos, T, 1)) - logp), 0).sum(axis=1)
    return rows, np.exp(logp) * T.sum(axis=1, keepdims=True) - T


@FUZZ
@given(st.data())
def test_kl_divergence(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, K = data.draw(sizes(0, 9, (40,))), data.draw(sizes(0, 9, (40, 130)))
    T = rng.random((N, K)) * (rng.random((N, K)) < 0.7)  # some exact zeros
    T = T / np.maximum(T.sum(axis=1, keepdims=True), 1e-300)  # rows sum to 1 (or are all 0)
    items = [Arr("logits", rand_values(rng, (N, K), dt, -8, 8)),
             Arr("target", T, other_dtypes=[np.float32, np.int64]),
             Arr("dlogits", np.zeros((N, K), dt), out=True),
             Arr("row_loss", np.zeros(N), out=True, other_dtypes=[np.float32]),
             Val("scale", data.draw(st.sampled_from([1.0, 1.0 / max(N, 1)])), bad=(None, "1")),
             threads_item(data),
             Arr("sample_weight", rand_values(rng, (N,), np.float64, 0, 2), optional=True,
                 other_dtypes=SW_DTYPES)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        logits, T, sw = before[0], before[1], before[6]
        N, K = logits.shape
        assert K >= 1 or N == 0, "logits without classes accepted"
        shape_is(T, (N, K), "target")
        assert T.dtype == np.float64, f"target of dtype {T.dtype} accepted"
        shape_is(after[2], (N, K), "dlogits")
        shape_is(after[3], (N,), "row_loss")
        d = dtype_of(logits, after[2])
        scale = after[4]
        if sw is None:
            w = np.ones(N)
        else:
            shape_is(sw, (N,), "sample_weight")
            w = f64(sw)
        if N == 0:
            assert result == 0
            return
        rows, dz = kl_ref(logits, T)
        np.testing.assert_allclose(after[3], rows, rtol=1e-9, atol=1e-12, err_msg="row_loss")
        close(after[2], scale * w[:, None] * dz, d, "dlogits")
        np.testing.assert_allclose(result, scale * (w * rows).sum(), rtol=1e-9, atol=1e-12,
                                   err_msg="loss")
        if not broken:  # the same bits at any thread count
            same_bits_at_other_thread_count(_losses.kl_divergence, before, after, result, 5)

    check_call(_losses.kl_divergence, args, guards, broken, reference)


# ---- new optimizer kernels (fastnn._optim) ---------------------------------------------------

@FUZZ
@given(st.data())
def test_adamw_update(data):
    """torch.optim.AdamW: p <- p (1 - lr wd), then Adam's step with the clipped gradient."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(OPT_LENGTHS)
    step = data.draw(st.sampled_from([1, 2, 10, 10 ** 6]))
    items = [Arr("param", rand_values(rng, (L,), dt), out=True),
             Arr("grad", rand_values(rng, (L,), dt)),
             Arr("m", rand_values(rng, (L,), dt), out=True),
             Arr("v", rand_values(rng, (L,), dt, 0, 1), out=True),
             Val("learning_rate", 1e-3, bad=(None,)), Val("beta1", 0.9, bad=(None,)),
             Val("beta2", 0.999, bad=(None,)), Val("eps", 1e-8, bad=(None,)),
             Val("weight_decay", data.draw(st.sampled_from([0.0, 0.01, 0.5]))),
             Val("step", step, bad=(0, -1, None, 2 ** 70)), threads_item(data)] \
        + clip_items(data)
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        p, g, m, v = (f64(a) for a in before[:4])
        L = p.shape[0]
        for name, a in (("grad", before[1]), ("m", after[2]), ("v", after[3])):
            shape_is(a, (L,), name)
        lr, b1, b2, eps, wd, t = after[4:10]
        d = dtype_of(before[0], before[1], after[2], after[3])
        assert t >= 1, "step < 1 accepted"
        g = clipped_grad(g, after[11], after[12], d)
        assert np.array_equal(after[1], before[1]), "grad written"
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        close(after[2], m, d, "m")
        close(after[3], v, d, "v")
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        close(after[0], p * (1 - lr * wd) - lr * mhat / (np.sqrt(vhat) + eps), d, "param")

    check_call(_optim.adamw_update, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_rmsprop_update(data):
    """torch.optim.RMSprop (alpha = rho), centered or not, with or without momentum; the unused
    slots may have any length."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(OPT_LENGTHS)
    centered = data.draw(st.booleans(), label="centered")
    mom = data.draw(st.sampled_from([0.0, 0.0, 0.9]), label="momentum")
    alen = L if centered else data.draw(st.sampled_from([L, 0, 1]), label="grad_avg length")
    blen = L if mom else data.draw(st.sampled_from([L, 0, 1]), label="buffer length")
    items = [Arr("param", rand_values(rng, (L,), dt), out=True),
             Arr("grad", rand_values(rng, (L,), dt)),
             Arr("square_avg", rand_values(rng, (L,), dt, 0.1, 1), out=True),
             Arr("grad_avg", rand_values(rng, (alen,), dt, -0.1, 0.1), out=True),
             Arr("momentum_buffer", rand_values(rng, (blen,), dt), out=True),
             Val("learning_rate", 0.01, bad=(None,)), Val("rho", 0.99, bad=(None,)),
             Val("eps", 1e-8, bad=(None,)),
             Val("weight_decay", data.draw(st.sampled_from([0.0, 0.01]))),
             Val("momentum", mom, bad=(None,)), Val("centered", centered, bad=(None,)),
             threads_item(data)] + clip_items(data)
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        p, g, s, a, b = (f64(x) for x in before[:5])
        L = p.shape[0]
        shape_is(before[1], (L,), "grad")
        shape_is(after[2], (L,), "square_avg")
        lr, rho, eps, wd, mom, centered = after[5:11]
        d = dtype_of(*before[:5])
        g = clipped_grad(g, after[12], after[13], d) + wd * p
        assert np.array_equal(after[1], before[1]), "grad written"
        s = rho * s + (1 - rho) * g * g
        close(after[2], s, d, "square_avg")
        if centered:
            shape_is(after[3], (L,), "grad_avg")
            a = rho * a + (1 - rho) * g
            close(after[3], a, d, "grad_avg")
            avg = np.sqrt(s - a * a) + eps
        else:
            avg = np.sqrt(s) + eps
        if mom:
            shape_is(after[4], (L,), "momentum_buffer")
            b = mom * b + g / avg
            close(after[4], b, d, "momentum_buffer")
            close(after[0], p - lr * b, d, "param")
        else:
            close(after[0], p - lr * g / avg, d, "param")

    check_call(_optim.rmsprop_update, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_adagrad_update(data):
    """torch.optim.Adagrad: clr = lr / (1 + (t - 1) lr_decay), s <- s + g^2,
    p <- p - clr g / (sqrt(s) + eps)."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(OPT_LENGTHS)
    items = [Arr("param", rand_values(rng, (L,), dt), out=True),
             Arr("grad", rand_values(rng, (L,), dt)),
             Arr("state_sum", rand_values(rng, (L,), dt, 0, 1), out=True),
             Val("learning_rate", 0.01, bad=(None,)), Val("eps", 1e-10, bad=(None,)),
             Val("weight_decay", data.draw(st.sampled_from([0.0, 0.01]))),
             Val("lr_decay", data.draw(st.sampled_from([0.0, 0.1])), bad=(None,)),
             Val("step", data.draw(st.sampled_from([1, 2, 50])), bad=(0, -1, None, 2 ** 70)),
             threads_item(data)] + clip_items(data)
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        p, g, s = (f64(x) for x in before[:3])
        L = p.shape[0]
        shape_is(before[1], (L,), "grad")
        shape_is(after[2], (L,), "state_sum")
        lr, eps, wd, lr_decay, t = after[3:8]
        assert t >= 1, "step < 1 accepted"
        d = dtype_of(*before[:3])
        g = clipped_grad(g, after[9], after[10], d) + wd * p
        assert np.array_equal(after[1], before[1]), "grad written"
        s = s + g * g
        close(after[2], s, d, "state_sum")
        clr = lr / (1 + (t - 1) * lr_decay)
        close(after[0], p - clr * g / (np.sqrt(s) + eps), d, "param")

    check_call(_optim.adagrad_update, args, guards, broken, reference)


@FUZZ
@given(st.data())
def test_grad_norm(data):
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    L = data.draw(st.one_of(st.integers(0, 30), st.sampled_from([16383, 16384, 16385, 70000])))
    items = [Arr("grad", rand_values(rng, (L,), dt, -3, 3)), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        g = before[0]
        assert g.ndim == 1, f"grad of shape {g.shape} accepted"
        dtype_of(g)
        assert isinstance(result, float)
        np.testing.assert_allclose(result, np.sqrt((f64(g) ** 2).sum()), rtol=1e-12, atol=0)
        if not broken:  # the same bits at any thread count
            assert _optim.grad_norm(g, 1) == _optim.grad_norm(g, 3) == result

    check_call(_optim.grad_norm, args, guards, broken, reference)


# ---- padded pooling and global average pooling (fastnn._conv) --------------------------------

def padded_pool_ref(X, k, s, pads, op):
    """(Y, argmax) of max (first maximum in window order) or average pooling of X (N, H, W, C)
    with padding (top, bottom, left, right) whose positions take no part: a window's max is over
    its real positions, its mean divided by their count (PyTorch's count_include_pad=False)."""
    X = f64(X)
    N, H, W, C = X.shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = k, s, pads
    Ho, Wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
    Y = np.empty((N, Ho, Wo, C))
    am = np.empty((N, Ho, Wo, C), dtype=np.int64)
    for oh in range(Ho):
        r0, r1 = max(0, oh * sh - pt), min(H, oh * sh - pt + kh)
        for ow in range(Wo):
            c0, c1 = max(0, ow * sw - pl), min(W, ow * sw - pl + kw)
            win = X[:, r0:r1, c0:c1, :].reshape(N, (r1 - r0) * (c1 - c0), C)
            if op == "avg":
                Y[:, oh, ow] = win.mean(axis=1)
                continue
            idx = np.argmax(win, axis=1)
            Y[:, oh, ow] = np.take_along_axis(win, idx[:, None], axis=1)[:, 0]
            am[:, oh, ow] = (r0 + idx // (c1 - c0)) * W + c0 + idx % (c1 - c0)
    return Y, am


def padded_avgpool_backward_ref(dY, dX_shape, k, s, pads):
    dY = f64(dY)
    N, H, W, C = dX_shape
    (kh, kw), (sh, sw), (pt, _, pl, _) = k, s, pads
    dX = np.zeros(dX_shape)
    for oh in range(dY.shape[1]):
        r0, r1 = max(0, oh * sh - pt), min(H, oh * sh - pt + kh)
        for ow in range(dY.shape[2]):
            c0, c1 = max(0, ow * sw - pl), min(W, ow * sw - pl + kw)
            dX[:, r0:r1, c0:c1] += dY[:, oh, ow][:, None, None] / ((r1 - r0) * (c1 - c0))
    return dX


PAD_BAD = (-1, -(2 ** 31), 2 ** 31, None, 4)


@FUZZ
@given(st.data(), st.sampled_from(["max_forward", "max_backward", "avg_forward",
                                   "avg_backward"]))
def test_pooling_padded(data, which):
    """The pooling kernels' ph / pw (before) and ph_end / pw_end (after) paddings, each smaller
    than the window; 4 (not smaller than any window here but 5 x 5) is a bad value."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N, H, W, C, kh, kw, sh, sw = draw_geometry(data, pool=True)
    ph, pw = data.draw(st.integers(0, kh - 1), label="ph"), data.draw(st.integers(0, kw - 1),
                                                                      label="pw")
    pe = data.draw(st.sampled_from([-1] + list(range(kh))), label="ph_end")
    we = data.draw(st.sampled_from([-1] + list(range(kw))), label="pw_end")
    pads = (ph, ph if pe == -1 else pe, pw, pw if we == -1 else we)
    Ho, Wo = (H + pads[0] + pads[1] - kh) // sh + 1, (W + pads[2] + pads[3] - kw) // sw + 1
    X = rand_values(rng, (N, H, W, C), dt)
    geo = [Val("kh", kh, GEOM_BAD), Val("kw", kw, GEOM_BAD), Val("sh", sh, GEOM_BAD),
           Val("sw", sw, GEOM_BAD), threads_item(data),
           Val("ph", ph, PAD_BAD), Val("pw", pw, PAD_BAD), Val("ph_end", pe, PAD_BAD[1:]),
           Val("pw_end", we, PAD_BAD[1:])]
    if which == "max_forward":
        arrays = [Arr("X", X), Arr("Y", np.zeros((N, Ho, Wo, C), dt), out=True),
                  Arr("argmax", np.zeros((N, Ho, Wo, C), np.intc), out=True,
                      other_dtypes=[np.int64, np.uint32, np.float32])]
    elif which == "max_backward":
        _, am = padded_pool_ref(X, (kh, kw), (sh, sw), pads, "max")
        arrays = [Arr("dY", rand_values(rng, (N, Ho, Wo, C), dt)),
                  Arr("argmax", am.astype(np.intc), other_dtypes=[np.int64, np.float32]),
                  Arr("dX", np.zeros((N, H, W, C), dt), out=True)]
    elif which == "avg_forward":
        arrays = [Arr("X", X), Arr("Y", np.zeros((N, Ho, Wo, C), dt), out=True)]
    else:
        arrays = [Arr("dY", rand_values(rng, (N, Ho, Wo, C), dt)),
                  Arr("dX", np.zeros((N, H, W, C), dt), out=True)]
    args, guards, broken = draw_call(data, rng, arrays + geo)
    na = len(arrays)

    def reference(before, after, result):
        kh, kw, sh, sw, nt, ph, pw, pe, we = after[na:]
        assert min(kh, kw, sh, sw) >= 1, "bad pooling geometry accepted"
        pb, pr = ph if pe == -1 else pe, pw if we == -1 else we
        assert 0 <= ph < kh and 0 <= pb < kh and 0 <= pw < kw and 0 <= pr < kw, \
            f"padding ({ph}, {pb}, {pw}, {pr}) accepted for window ({kh}, {kw})"
        pads = (ph, pb, pw, pr)
        shape = (before[0] if which.endswith("forward") else after[na - 1]).shape
        N, H, W, C = shape
        assert H + ph + pb >= kh and W + pw + pr >= kw, "window larger than padded input"
        Ho, Wo = (H + ph + pb - kh) // sh + 1, (W + pw + pr - kw) // sw + 1
        if which.endswith("forward"):
            X = before[0]
            shape_is(after[1], (N, Ho, Wo, C), "Y")
            d = dtype_of(X, after[1])
            Y, am = padded_pool_ref(X, (kh, kw), (sh, sw), pads, which[:3])
            close(after[1], Y, d, "Y")
            if which == "max_forward":
                shape_is(after[2], (N, Ho, Wo, C), "argmax")
                np.testing.assert_array_equal(after[2], am)
            return
        dY, dX = before[0], after[na - 1]
        shape_is(dY, (N, Ho, Wo, C), "dY")
        d = dtype_of(dY, dX)
        if which == "max_backward":
            shape_is(before[1], (N, Ho, Wo, C), "argmax")
            close(dX, maxpool_backward_ref(dY, before[1], dX.shape), d, "dX")
        else:
            close(dX, padded_avgpool_backward_ref(dY, dX.shape, (kh, kw), (sh, sw), pads), d,
                  "dX")

    fn = {"max_forward": _conv.maxpool_forward, "max_backward": _conv.maxpool_backward,
          "avg_forward": _conv.avgpool_forward, "avg_backward": _conv.avgpool_backward}[which]
    check_call(fn, args, guards, broken, reference)


@FUZZ
@given(st.data(), st.booleans())
def test_global_avgpool(data, backward):
    """global_avgpool_forward: Y (N, C) = mean of X over H and W; backward: dX = dY / (H W) at
    every position."""
    rng = rng_from(data)
    dt = data.draw(st.sampled_from(FLOATS))
    N = data.draw(st.one_of(st.integers(0, 4), st.just(40)), label="N")
    H, W = data.draw(st.integers(1, 9), label="H"), data.draw(st.integers(1, 9), label="W")
    C = data.draw(st.sampled_from([1, 3, 8, 64]), label="C")
    if backward:
        items = [Arr("dY", rand_values(rng, (N, C), dt)),
                 Arr("dX", np.zeros((N, H, W, C), dt), out=True), threads_item(data)]
    else:
        items = [Arr("X", rand_values(rng, (N, H, W, C), dt)),
                 Arr("Y", np.zeros((N, C), dt), out=True), threads_item(data)]
    args, guards, broken = draw_call(data, rng, items)

    def reference(before, after, result):
        if backward:
            dY, dX = before[0], after[1]
            N, H, W, C = dX.shape
            assert min(H, W, C) >= 1, f"dX of shape {dX.shape} accepted"
            shape_is(dY, (N, C), "dY")
            close(dX, np.broadcast_to(f64(dY)[:, None, None, :] / (H * W), dX.shape),
                  dtype_of(dY, dX), "dX")
            return
        X, Y = before[0], after[1]
        N, H, W, C = X.shape
        assert min(H, W, C) >= 1, f"X of shape {X.shape} accepted"
        shape_is(Y, (N, C), "Y")
        close(Y, f64(X).mean(axis=(1, 2)), dtype_of(X, Y), "Y")
        if not broken:  # the same bits at any thread count
            Y1 = np.empty_like(Y)
            _conv.global_avgpool_forward(X, Y1, 1 if after[2] != 1 else 2)
            np.testing.assert_array_equal(Y1, Y)

    fn = _conv.global_avgpool_backward if backward else _conv.global_avgpool_forward
    check_call(fn, args, guards, broken, reference)


# ---- the new layers' public calls --------------------------------------------------------------

def same_pads(size, k, s):
    """TensorFlow's "same": out = ceil(size / s), total = max((out - 1) s + k - size, 0), the odd
    one after (tf.nn.convolution's "Notes on padding")."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def layer_pads(layer, H, W):
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    if layer.padding == "same":
        return same_pads(H, kh, sh) + same_pads(W, kw, sw)
    if layer.padding == "valid":
        return (0, 0, 0, 0)
    ph, pw = layer.padding
    return (ph, ph, pw, pw)


NEW_LAYERS = ["dropout", "batchnorm", "layernorm", "global", "conv_same", "maxpool_pad",
              "avgpool_pad"]


def draw_new_layer(data, kind):
    """(layer, per-sample shape) of one of the training toolkit's layers."""
    H, W = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
    C = data.draw(st.sampled_from([1, 2, 3, 8]), label="C")
    image = data.draw(st.booleans(), label="image input")
    if kind == "dropout":
        rate = data.draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]), label="rate")
        seed = data.draw(st.one_of(st.none(), st.integers(0, 2 ** 64 - 1)), label="seed")
        return Dropout(rate, seed=seed), ((H, W, C) if image else (C,))
    if kind in ("batchnorm", "layernorm"):
        layer = BatchNorm(C, momentum=data.draw(st.sampled_from([0.1, 0.5]), label="momentum")) \
            if kind == "batchnorm" else LayerNorm(C, eps=data.draw(st.sampled_from([1e-5, 1e-3])))
        return layer, ((H, W, C) if image else (C,))
    if kind == "global":
        return GlobalAvgPool2D(), (H, W, C)
    kh, kw = data.draw(st.integers(1, 4), label="kh"), data.draw(st.integers(1, 4), label="kw")
    sh, sw = data.draw(st.integers(1, 3), label="sh"), data.draw(st.integers(1, 3), label="sw")
    if kind == "conv_same":
        M = data.draw(st.sampled_from([1, 3, 16]), label="M")
        return Conv2D(C, M, (kh, kw), stride=(sh, sw), padding="same",
                      activation=data.draw(LAYER_ACTS)), (H, W, C)
    padding = data.draw(st.sampled_from(["same", "valid", (kh // 2, kw // 2), (0, kw // 2)]),
                        label="padding")
    pt, pb, pl, pr = (same_pads(H, kh, sh) + same_pads(W, kw, sw)) if padding == "same" else \
        (0, 0, 0, 0) if padding == "valid" else (padding[0],) * 2 + (padding[1],) * 2
    H, W = max(H, kh - pt - pb), max(W, kw - pl - pr)
    cls = MaxPool2D if kind == "maxpool_pad" else AvgPool2D
    return cls((kh, kw), stride=(sh, sw), padding=padding), (H, W, C)


def new_layer_fits(layer, shape, training):
    """Whether an input of ``shape`` is valid for ``layer`` (from the docs)."""
    if isinstance(layer, Dropout):
        return len(shape) >= 1
    if isinstance(layer, (BatchNorm, LayerNorm)):
        if len(shape) < 2 or shape[-1] != layer.num_features:
            return False
        return not (isinstance(layer, BatchNorm) and training
                    and int(np.prod(shape[:-1])) < 2)
    if len(shape) != 4 or min(shape[1:]) < 1:
        return False
    if isinstance(layer, Conv2D):
        return shape[3] == layer.in_channels
    if isinstance(layer, GlobalAvgPool2D):
        return True
    pt, pb, pl, pr = layer_pads(layer, shape[1], shape[2])
    return shape[1] + pt + pb >= layer.kernel_size[0] and shape[2] + pl + pr >= layer.kernel_size[1]


def new_layer_reference(layer, X, training, state):
    """Forward output for X (float64), from the docs; ``state``: the layer's state before."""
    X = f64(X)
    if isinstance(layer, Dropout):
        if not training or layer.rate == 0:
            return X
        keep = dropout_keep_ref(state["seed"], state["step"], X.size, layer.rate)
        return X * keep.reshape(X.shape) / (1 - layer.rate)
    if isinstance(layer, (BatchNorm, LayerNorm)):
        C = layer.num_features
        X2 = X.reshape(-1, C)
        w, b = f64(layer.weight), f64(layer.bias)
        if isinstance(layer, LayerNorm):
            mean, invstd = ln_stats_ref(X2, layer.eps)
            return ((X2 - mean[:, None]) * invstd[:, None] * w + b).reshape(X.shape)
        mean, var = bn_stats_ref(X2) if training else (state["running_mean"],
                                                       state["running_var"])
        return ((X2 - mean) / np.sqrt(var + layer.eps) * w + b).reshape(X.shape)
    if isinstance(layer, GlobalAvgPool2D):
        return X.mean(axis=(1, 2))
    pads = layer_pads(layer, X.shape[1], X.shape[2])
    if isinstance(layer, Conv2D):
        Y = conv_ref(X, layer.weight, layer.bias, layer.stride, pads)
        return act_ref(Y, KIND_OF.get(None if layer.activation == "identity"
                                      else layer.activation), layer.alpha)
    op = "max" if isinstance(layer, MaxPool2D) else "avg"
    return padded_pool_ref(X, layer.kernel_size, layer.stride, pads, op)[0]


def new_layer_backward_reference(layer, X, A, dA, training, state):
    """(dX, grads) for the last forward's input X, output A and the output gradient dA."""
    X, dA = f64(X), f64(dA)
    if isinstance(layer, Dropout):
        if not training or layer.rate == 0:
            return dA, {}
        keep = dropout_keep_ref(state["seed"], state["step"], X.size, layer.rate)
        return dA * keep.reshape(X.shape) / (1 - layer.rate), {}
    if isinstance(layer, (BatchNorm, LayerNorm)):
        C = layer.num_features
        X2, dY2 = X.reshape(-1, C), dA.reshape(-1, C)
        if isinstance(layer, LayerNorm):
            mean, invstd = ln_stats_ref(X2, layer.eps)
            dw, db, dX = ln_backward_ref(X2, dY2, layer.weight, mean, invstd)
        else:
            mean, var = bn_stats_ref(X2) if training else (state["running_mean"],
                                                           state["running_var"])
            dw, db, dX = bn_backward_ref(X2, dY2, layer.weight, mean,
                                         1 / np.sqrt(var + layer.eps), training)
        return dX.reshape(X.shape), {"weight": dw, "bias": db}
    if isinstance(layer, GlobalAvgPool2D):
        H, W = X.shape[1:3]
        return np.broadcast_to(dA[:, None, None, :] / (H * W), X.shape), {}
    pads = layer_pads(layer, X.shape[1], X.shape[2])
    if isinstance(layer, Conv2D):
        name = None if layer.activation == "identity" else layer.activation
        dZ = act_grad_ref(A, dA, KIND_OF[name], layer.alpha)
        dW, db, dX = conv_backward_ref(X, layer.weight, dZ, layer.stride, pads)
        return dX, {"weight": dW, "bias": db}
    if isinstance(layer, MaxPool2D):
        _, am = padded_pool_ref(X, layer.kernel_size, layer.stride, pads, "max")
        return maxpool_backward_ref(dA, am, X.shape), {}
    return padded_avgpool_backward_ref(dA, X.shape, layer.kernel_size, layer.stride, pads), {}


@pytest.mark.parametrize("kind", NEW_LAYERS)
@FUZZ
@given(data=st.data())
def test_new_layer_forward_backward(kind, data):
    """Dropout, BatchNorm, LayerNorm, GlobalAvgPool2D, Conv2D(padding="same") and the pools with
    padding: forward(X, training) and backward(grad) with random inputs, against references
    written from the docstrings (BatchNorm / LayerNorm as torch, the dropout mask's hash)."""
    rng = rng_from(data)
    dt = np.dtype(data.draw(st.sampled_from(FLOATS)))
    layer, per_sample = draw_new_layer(data, kind)
    layer.build(dt, np.random.default_rng(0))
    if isinstance(layer, (BatchNorm, LayerNorm)):  # parameters other than the initial 1 and 0
        C = layer.num_features
        layer.params["weight"] = rng.uniform(0.5, 2, C)
        layer.params["bias"] = rng.uniform(-1, 1, C)
        if isinstance(layer, BatchNorm):
            layer.buffers["running_mean"][...] = rng.uniform(-1, 1, C)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, C)
    training = data.draw(st.booleans(), label="training")
    N = data.draw(st.integers(0, 4), label="N")
    if data.draw(st.booleans(), label="backward first"):
        with pytest.raises(RuntimeError):
            layer.backward(np.zeros((N,) + layer.output_shape(per_sample), dt))
    X, note = draw_input(data, rng, (N,) + per_sample, dt, "X")
    state = {"seed": getattr(layer, "seed", None), "step": getattr(layer, "step", None)}
    if isinstance(layer, BatchNorm):
        state.update(running_mean=f64(layer.running_mean).copy(),
                     running_var=f64(layer.running_var).copy())
    try:
        A = layer.forward(X, training=training)
    except CLEAN as exc:
        assert note not in VALID_VARIANTS or not new_layer_fits(layer, np.shape(X), training), \
            f"valid X ({note}) refused: {exc!r}"
        event(f"{type(layer).__name__}: forward refused")
        return
    Xc = np.asarray(X)
    if Xc.ndim == 0 and not isinstance(X, np.ndarray):
        Xc = Xc.reshape(1)  # a NumPy scalar is read as a batch of one (every layer does so)
    assert Xc.dtype.kind in "fiu" and Xc.dtype != np.float16, f"X {note} accepted"
    Xc = Xc.astype(dt)
    assert new_layer_fits(layer, Xc.shape, training), f"X {note} of shape {Xc.shape} accepted"
    want = Xc.shape if isinstance(layer, Dropout) else \
        (Xc.shape[0],) + layer.output_shape(Xc.shape[1:])
    assert A.dtype == dt and A.shape == want, f"output {A.shape} {A.dtype}, expected {want}"
    close(A, new_layer_reference(layer, Xc, training, state), dt, f"forward, X {note}")
    if isinstance(layer, Dropout):
        assert layer.step == ((state["step"] + 1) % 2 ** 64 if training else state["step"])
    if isinstance(layer, BatchNorm) and training:
        M = Xc.size // layer.num_features
        mean, var = bn_stats_ref(Xc.reshape(-1, layer.num_features))
        m = layer.momentum
        close(layer.running_mean, (1 - m) * state["running_mean"] + m * mean, dt,
              "running_mean")
        close(layer.running_var, (1 - m) * state["running_var"] + m * var * M / (M - 1), dt,
              "running_var")
    A = A.copy()
    dA, gnote = draw_input(data, rng, A.shape if A.ndim else (1,), dt, "grad")
    try:
        dX = layer.backward(dA)
    except LAYER_CLEAN as exc:
        assert gnote not in VALID_VARIANTS, f"valid grad ({gnote}) refused: {exc!r}"
        event(f"{type(layer).__name__}: backward refused")
        return
    dAc = np.asarray(dA)
    if dAc.ndim == 0 and not isinstance(dA, np.ndarray):
        dAc = dAc.reshape(1)  # as for X
    assert dAc.dtype.kind in "fiu" and dAc.dtype != np.float16 and dAc.shape == A.shape, \
        f"grad {gnote} accepted"
    ref_dX, ref_grads = new_layer_backward_reference(layer, Xc, A, dAc.astype(dt), training,
                                                     state)
    assert dX is not None and dX.shape == Xc.shape and dX.dtype == dt
    close(dX, ref_dX, dt, f"dX (X {note}, grad {gnote})")
    for k, g in ref_grads.items():
        close(layer.grads[k], g, dt, f"grad {k} (X {note}, grad {gnote})")
    event(f"{type(layer).__name__}: forward and backward checked")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("which", ["batchnorm_forward", "batchnorm_backward", "layernorm_forward",
                                   "layernorm_backward", "dropout_forward", "kl_divergence",
                                   "softmax_cross_entropy", "huber"])
def test_new_kernels_same_bits_at_any_thread_count(which, dtype):
    """Sizes past the kernels' parallel thresholds (several chunks and threads): 1 and 2 threads
    give the same bits, and the result is the reference's."""
    rng = np.random.default_rng(7)
    M, C = 2100, 33
    X = rng.standard_normal((M, C)).astype(dtype)
    dY = rng.standard_normal((M, C)).astype(dtype)
    w = rng.uniform(0.5, 2, C).astype(dtype)
    b = rng.uniform(-1, 1, C).astype(dtype)
    sw = rng.uniform(0, 2, M)
    mean, var = bn_stats_ref(X)
    lmean, linv = ln_stats_ref(X, 1e-5)

    def run(nt):
        if which == "batchnorm_forward":
            out = [np.zeros(C), np.zeros(C), np.zeros(C), np.zeros((M, C), dtype)]
            _norm.batchnorm_forward(X, w, b, *out, 1e-5, True, nt)
        elif which == "batchnorm_backward":
            out = [np.zeros((M, C), dtype), np.zeros(C, dtype), np.zeros(C, dtype)]
            _norm.batchnorm_backward(X, dY, w, mean, 1 / np.sqrt(var + 1e-5), *out, True, nt)
        elif which == "layernorm_forward":
            out = [np.zeros(M), np.zeros(M), np.zeros((M, C), dtype)]
            _norm.layernorm_forward(X, w, b, *out, 1e-5, nt)
        elif which == "layernorm_backward":
            out = [np.zeros((M, C), dtype), np.zeros(C, dtype), np.zeros(C, dtype)]
            _norm.layernorm_backward(X, dY, w, lmean, linv, *out, nt)
        elif which == "dropout_forward":
            out = [np.zeros(M * C, dtype), np.zeros(M * C, np.uint8)]
            _norm.dropout_forward(X.reshape(-1), *out, 0.3, 5, 9, nt)
        elif which == "kl_divergence":
            T = rng_t.random((M, C))
            T /= T.sum(axis=1, keepdims=True)
            out = [np.zeros((M, C), dtype), np.zeros(M)]
            out.append(_losses.kl_divergence(X, T, *out, 1 / M, nt, sw))
        elif which == "softmax_cross_entropy":
            lab = rng_t.integers(0, C, M).astype(np.int64)
            out = [np.zeros((M, C), dtype), np.zeros(M)]
            out.append(_losses.softmax_cross_entropy(X, lab, *out, 1 / M, nt, sw, 0.1))
        else:
            out = [np.zeros(M * C, dtype), np.zeros(-(-M * C // BLOCK))]
            out.append(_losses.huber(X.reshape(-1), dY.reshape(-1), *out, 1 / (M * C), 0.7, nt,
                                     sw, C))
        return out

    rng_t = np.random.default_rng(3)
    one = run(1)
    rng_t = np.random.default_rng(3)
    two = run(2)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)
    if which == "batchnorm_forward":  # and it is the right result
        close(one[3], (f64(X) - mean) / np.sqrt(var + 1e-5) * f64(w) + f64(b), dtype, "Y")
    elif which == "layernorm_backward":
        dw, db, dX = ln_backward_ref(X, dY, w, lmean, linv)
        close(one[0], dX, dtype, "dX")
        close(one[1], dw, dtype, "dweight")
    elif which == "dropout_forward":
        keep = dropout_keep_ref(5, 9, M * C, 0.3)
        np.testing.assert_array_equal(one[1], keep.astype(np.uint8))
