"""Shared test helpers, per-test state resets and the hypothesis profiles of fastnn's tests.

Hypothesis (tests/test_fuzz_kernels.py) runs the reproducible "ci" profile by default: the same 60
derandomized examples per test on every run. A wide random search (new examples each run):

    FASTNN_FUZZ_EXAMPLES=2000 python3 -m pytest -q tests/test_fuzz_kernels.py

A failure prints the falsifying example and a ``@reproduce_failure`` blob; a rerun of the same
command replays it first (from .hypothesis/).

Test files import the references below with ``from conftest import ...`` (pytest puts tests/ on
sys.path); the fixtures at the end apply to every test.
"""
import os
import signal

import numpy as np
import pytest

import fastnn

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


# ---- hypothesis profiles ----------------------------------------------------------------------

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is a test extra; its tests importorskip it
    pass
else:
    settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None,
                              database=None, print_blob=True)
    _WIDE = os.environ.get("FASTNN_FUZZ_EXAMPLES")
    if _WIDE:
        settings.register_profile("wide", max_examples=int(_WIDE), derandomize=False,
                                  deadline=None, print_blob=True)
    settings.load_profile("wide" if _WIDE else "ci")


# ---- numerical checks -------------------------------------------------------------------------

def rel_error(a, b):
    """Norm-wise relative error ||a - b|| / (||a|| + ||b||) (0 when both are 0)."""
    a, b = np.ravel(a), np.ravel(b)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else np.linalg.norm(a - b) / denom


def max_rel_error(a, n, floor=1e-6):
    """Largest elementwise |a - n| / max(|a| + |n|, floor), in float64."""
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    return np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor))


def numerical_grad(f, x, h=1e-5, indices=None, weights=None):
    """Central differences (f(x + h e_j) - f(x - h e_j)) / 2h with respect to entries of ``x``,
    which is perturbed in place and restored.

    By default ``f()`` is a scalar and the result has the shape of ``x`` (every entry). With
    ``indices`` (flat indices into ``x``) only those entries are done and a 1-D float64 array in
    that order is returned. With ``weights``, ``f()`` returns an array and the scalar
    differentiated is ``sum(f() * weights)``; the two outputs are subtracted elementwise before
    the sum so that rounding stays small.
    """
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x), "x must be contiguous (perturbed through a flat view)"
    idx = range(flat.size) if indices is None else indices
    out = np.zeros_like(flat) if indices is None else np.empty(len(indices))
    for k, j in enumerate(idx):
        old = flat[j]
        flat[j] = old + h
        fp = f() if weights is None else np.array(f(), copy=True)
        flat[j] = old - h
        fm = f() if weights is None else np.array(f(), copy=True)
        flat[j] = old
        diff = fp - fm if weights is None else np.sum((fp - fm) * weights)
        out[k if indices is not None else j] = diff / (2 * h)
    return out.reshape(x.shape) if indices is None else out


def assert_within(actual, ref, bound, what):
    """|actual - ref| <= bound elementwise (float64), every value finite and the shapes equal;
    the message names the worst element."""
    actual = np.asarray(actual, dtype=np.float64)
    ref, bound = np.asarray(ref, dtype=np.float64), np.broadcast_to(bound, np.shape(ref))
    assert actual.shape == ref.shape, f"{what}: shape {actual.shape}, expected {ref.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values (unwritten output?)"
    err = np.abs(actual - ref)
    ok = err <= bound
    if not np.all(ok):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)} elements out of bound; worst at {i}: "
            f"got {actual[i]!r}, expected {ref[i]!r}, err {err[i]:.3e} > bound {bound[i]:.3e}")


# ---- NumPy activation references (float64) ----------------------------------------------------

# the kernels' activation codes (the C enum, read through fastnn.activations) and the names
from fastnn.activations import ACTIVATIONS as _ACTIVATIONS  # noqa: E402

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, ELU, SOFTPLUS, GELU, SILU = (
    _ACTIVATIONS[n].code for n in ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "elu",
                                   "softplus", "gelu", "silu"))
#: every elementwise kernel code
KERNEL_CODES = tuple(info.code for info in _ACTIVATIONS.values() if info.code >= 0)
#: the kernel codes whose backward takes the pre-activation Z in place of the output A
FROM_Z_CODES = tuple(info.code for info in _ACTIVATIONS.values() if info.from_z)
KERNEL_NAMES = {info.code: n for n, info in _ACTIVATIONS.items() if info.code >= 0}
#: every activation name (softmax included), for layer tests
ACTIVATION_TABLE = tuple(_ACTIVATIONS)
_ACT_NAMES = {None: "identity", "linear": "identity", "softmax": "softmax"}
_ACT_NAMES.update({n: n for n in _ACTIVATIONS})
_ACT_NAMES.update({info.code: n for n, info in _ACTIVATIONS.items() if info.code >= 0})


def _act_name(kind):
    try:
        return _ACT_NAMES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {kind!r}") from None


def sigmoid(Z):
    """1 / (1 + exp(-Z)) in float64, without overflow for either sign."""
    Z = np.asarray(Z, dtype=np.float64)
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def normal_cdf(Z):
    """Phi(Z), the standard normal CDF, in float64 (scipy.special.ndtr: accurate in the tails)."""
    from scipy.special import ndtr

    return ndtr(np.asarray(Z, dtype=np.float64))


def softmax(Z):
    """Row-wise softmax of (N, K) ``Z`` in float64 (row maximum subtracted)."""
    Z = np.asarray(Z, dtype=np.float64)
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def act_forward(Z, kind, alpha):
    """g(Z) in float64. ``kind``: a layer's activation name (None / "identity" / "linear",
    "relu", "leaky_relu", "sigmoid", "tanh", "elu", "softplus", "gelu", "silu", "softmax"
    (row-wise)) or a kernel code. The formulas of torch.nn (Softplus: beta 1, threshold 20)."""
    Z = np.asarray(Z, dtype=np.float64)
    name = _act_name(kind)
    if name == "identity":
        return Z.copy()
    if name == "relu":
        return np.where(Z > 0, Z, 0.0)
    if name == "leaky_relu":
        return np.where(Z > 0, Z, alpha * Z)
    if name == "sigmoid":
        return sigmoid(Z)
    if name == "tanh":
        return np.tanh(Z)
    if name == "elu":
        return np.where(Z > 0, Z, alpha * np.expm1(np.minimum(Z, 0.0)))
    if name == "softplus":
        return np.where(Z > 20, Z, np.logaddexp(0.0, Z))
    if name == "gelu":
        return Z * normal_cdf(Z)
    if name == "silu":
        return Z * sigmoid(Z)
    return softmax(Z)


def act_backward(Z, dA, kind, alpha):
    """d(sum(g(Z) * dA)) / dZ in float64, written from Z (the library writes it from A = g(Z))."""
    Z = np.asarray(Z, dtype=np.float64)
    dA = np.asarray(dA, dtype=np.float64)
    name = _act_name(kind)
    if name == "identity":
        return dA.copy()
    if name == "relu":
        return dA * (Z > 0)
    if name == "leaky_relu":
        return dA * np.where(Z > 0, 1.0, alpha)
    if name == "sigmoid":
        s = sigmoid(Z)
        return dA * s * (1 - s)
    if name == "tanh":
        return dA * (1 - np.tanh(Z) ** 2)
    if name == "elu":
        return dA * np.where(Z > 0, 1.0, alpha * np.exp(np.minimum(Z, 0.0)))
    if name == "softplus":
        return dA * np.where(Z > 20, 1.0, sigmoid(Z))
    if name == "gelu":
        return dA * (normal_cdf(Z) + Z * np.exp(-0.5 * Z * Z) / np.sqrt(2 * np.pi))
    if name == "silu":
        s, c = sigmoid(Z), sigmoid(-Z)
        return dA * s * (1 + Z * c)
    # softmax: full Jacobian per row, J = diag(p) - p p^T, dZ = J^T dA (J symmetric)
    p = softmax(Z)
    out = np.empty_like(Z)
    for n in range(Z.shape[0]):
        out[n] = (np.diag(p[n]) - np.outer(p[n], p[n])) @ dA[n]
    return out


def act_grad_from_output(A, kind, alpha):
    """g'(Z) written with the output A = g(Z), in float64 (elementwise activations only)."""
    A = np.asarray(A, dtype=np.float64)
    name = _act_name(kind)
    if name == "identity":
        return np.ones_like(A)
    if name == "relu":
        return (A > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(A > 0, 1.0, alpha)
    if name == "sigmoid":
        return A * (1.0 - A)
    if name == "tanh":
        return 1.0 - A * A
    if name == "elu":
        return np.where(A > 0, 1.0, A + alpha)
    if name == "softplus":
        return np.where(A > 20, 1.0, -np.expm1(-A))
    if name in ("gelu", "silu"):
        raise ValueError(f"{name}'s derivative is written with Z (act_grad_from_saved)")
    raise ValueError("softmax has no elementwise derivative")


def act_saved(Z, kind, alpha):
    """What the backward kernels take for ``kind`` (float64): the output g(Z), or Z itself for
    the activations whose derivative needs the pre-activation (gelu, silu)."""
    name = _act_name(kind)
    if _ACTIVATIONS[name].from_z:
        return np.asarray(Z, dtype=np.float64).copy()
    return act_forward(Z, kind, alpha)


def act_grad_from_saved(S, kind, alpha):
    """g'(Z) in float64 from what :func:`act_saved` gives: the output A, or Z for gelu / silu."""
    name = _act_name(kind)
    if _ACTIVATIONS[name].from_z:
        return act_backward(S, np.ones_like(np.asarray(S, dtype=np.float64)), kind, alpha)
    return act_grad_from_output(S, kind, alpha)


# ---- NumPy softmax cross-entropy reference (float64) -------------------------------------------

def logsumexp(Z):
    """Row-wise log(sum(exp(Z))) of (N, K) ``Z`` in float64 (row maximum subtracted)."""
    Z = np.asarray(Z, dtype=np.float64)
    m = Z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]


def softmax_ce_rows(Z, y):
    """Per-row softmax cross-entropy logsumexp(Z[n]) - Z[n, y[n]] in float64."""
    Z = np.asarray(Z, dtype=np.float64)
    return logsumexp(Z) - Z[np.arange(Z.shape[0]), y]


def softmax_ce(Z, y):
    """Mean softmax cross-entropy of logits (N, K) against labels (N,), in float64."""
    return np.mean(softmax_ce_rows(Z, y))


def softmax_ce_grad(Z, y):
    """d softmax_ce(Z, y) / dZ = (softmax(Z) - onehot(y)) / N, in float64."""
    Z = np.asarray(Z, dtype=np.float64)
    p = softmax(Z)
    p[np.arange(Z.shape[0]), y] -= 1
    return p / Z.shape[0]


# ---- Fashion-MNIST ----------------------------------------------------------------------------

FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def fashion_mnist_dir(use_env=True):
    """The folder fastnn.datasets.load_fashion_mnist() reads: $FASTNN_DATA if set (and
    ``use_env``), else the Debian package's folder."""
    env = os.environ.get("FASTNN_DATA") if use_env else None
    return env or fastnn.datasets.DEFAULT_DATA_DIR


def fashion_mnist_installed(use_env=True):
    """Whether the four Fashion-MNIST files (gzipped or not) are in :func:`fashion_mnist_dir`."""
    folder = fashion_mnist_dir(use_env)
    return all(os.path.exists(os.path.join(folder, name + ".gz"))
               or os.path.exists(os.path.join(folder, name)) for name in FASHION_MNIST_FILES)


_NO_DATA = ("Fashion-MNIST not installed (sudo apt-get install dataset-fashion-mnist, or set "
            "FASTNN_DATA)")
# tests that load the data set the way the library does (FASTNN_DATA, then the package's folder)
requires_fashion_mnist = pytest.mark.skipif(not fashion_mnist_installed(), reason=_NO_DATA)
# tests that read the Debian package's folder itself (FASTNN_DATA removed)
requires_fashion_mnist_package = pytest.mark.skipif(
    not fashion_mnist_installed(use_env=False),
    reason=f"{fastnn.datasets.DEFAULT_DATA_DIR} absent "
           "(sudo apt-get install dataset-fashion-mnist)")


# ---- process-wide state: reset around every test ---------------------------------------------

@pytest.fixture(autouse=True)
def _reset_fastnn_state():
    """Undo what tests set process-wide in fastnn: the thread count and the kernels' test hooks
    (forced convolution path, tiled max-pool backward switched off, forced GEMM kernel)."""
    yield
    from fastnn import _config, _conv

    fastnn.set_num_threads(None)
    _conv._force_path(None)
    _config.set_gemm_kernel(None)
    _config.ThreadTuner._shared = None
    _conv._disable_tiled_pool_backward(False)


@pytest.fixture(autouse=True)
def _default_sigint():
    """Every test starts with Python's default SIGINT handler (KeyboardInterrupt), whatever the
    suite was started under (``nohup`` or a shell background job ignore SIGINT); the previous
    handler is restored afterwards."""
    if not hasattr(signal, "SIGINT"):  # pragma: no cover
        yield
        return
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if old is not None:  # None: a handler not installed from Python, cannot be put back
            signal.signal(signal.SIGINT, old)
