"""The sgemm roofline: only the GEMMs of a train step (or of a forward pass), nothing else.

Not a network: a pseudo-implementation the driver runs in its own worker process, interleaved with
the others, at the same thread count. Its step is the list :func:`bench.models.gemms` gives, run
back to back with float32 (the spec's dtype) ``np.matmul`` into preallocated ``out=`` arrays, so
OpenBLAS's sgemm with ``OPENBLAS_NUM_THREADS`` threads:

* dense (N,K)->(M): forward ``X @ W`` (N,K)x(K,M); backward ``dW = X^T dZ`` (K,N)x(N,M) and
  ``dX = dZ W^T`` (N,M)x(M,K), the first layer without ``dX``;
* conv: the same three on the im2col matrices: forward ``col @ W`` (N Ho Wo, kh kw Cin) x
  (kh kw Cin, Cout), ``dW = col^T dZ``, ``dcol = dZ W^T``. The im2col and col2im copies are not
  timed.

Transposed operands are views (BLAS gets a transpose flag, as in the NumPy baseline); the operands
of one layer's GEMMs are shared as in a real step; values are random normals (no denormals).
Bias, activation, pooling, loss and optimizer work is left out: the time of this step is a lower
bound for any implementation that calls the same BLAS for the same GEMMs, and
``% of roofline = sgemm ms / implementation ms``. Its useful FLOPs are exactly those of
:func:`bench.models.train_step_flops` (:func:`bench.models.forward_flops` for inference).
"""
import time

import numpy as np

from .models import gemms, layer_name


class GemmStep:
    """The GEMMs of one train step or forward pass of ``spec`` at ``batch``, preallocated.

    Parameters
    ----------
    spec : dict
        A spec of :mod:`bench.models`.
    batch : int
    mode : {"train", "predict"}
    seed : int
        Seed of the random operands.

    Attributes
    ----------
    calls : list of tuple
        ``(layer index, phase, A, B, out)`` for each GEMM ``out = A @ B``, in step order.
    names : list of str
        One name per layer of the spec.
    """

    def __init__(self, spec, batch, mode="train", seed=0):
        dtype = np.dtype(spec.get("dtype", "float32"))
        rng = np.random.default_rng(seed)

        def normal(shape, scale=1.0):
            return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)

        self.names = [layer_name(cfg) for cfg in spec["layers"]]
        ops = {}  # layer index -> operands shared by its GEMMs
        self.calls = []
        for g in gemms(spec, batch, mode):
            i, phase = g["layer"], g["phase"]
            if phase == "forward":
                rows, K, M = g["m"], g["k"], g["n"]
                ops[i] = o = {"X": normal((rows, K)), "W": normal((K, M), (2.0 / K) ** 0.5),
                              "Y": np.empty((rows, M), dtype=dtype)}
                self.calls.append((i, phase, o["X"], o["W"], o["Y"]))
                continue
            o = ops[i]
            if "dZ" not in o:
                o["dZ"] = normal(o["Y"].shape, 0.01)
            if phase == "dW":
                o["dW"] = np.empty_like(o["W"])
                self.calls.append((i, phase, o["X"].T, o["dZ"], o["dW"]))
            else:
                o["dX"] = np.empty_like(o["X"])
                self.calls.append((i, phase, o["dZ"], o["W"].T, o["dX"]))
        self.flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for _, _, a, b, _ in self.calls)

    def __call__(self):
        matmul = np.matmul
        for _, _, a, b, out in self.calls:
            matmul(a, b, out=out)

    def profile(self, repeats=10, warmup=2):
        """Median forward and backward (``dW`` + ``dX``) GEMM ms of each layer over ``repeats``
        steps, rows as :meth:`bench.numpy_net.NumpyNet.profile` (the loss and optimizer rows are
        zero: not GEMMs)."""
        clock = time.perf_counter
        L = len(self.names)
        runs = np.zeros((repeats, L + 2, 2))
        for r in range(-warmup, repeats):
            times = np.zeros((L + 2, 2))
            for i, phase, a, b, out in self.calls:
                t = clock()
                np.matmul(a, b, out=out)
                times[i, 0 if phase == "forward" else 1] += clock() - t
            if r >= 0:
                runs[r] = times
        med = np.median(runs, axis=0) * 1e3
        return [{"name": n, "forward_ms": float(f), "backward_ms": float(b)}
                for n, (f, b) in zip(self.names + ["loss", "optimizer"], med)]


def build(spec, batch, seed=0):
    """Return a zero-argument callable running the GEMMs of one train step (returns None); its
    ``profile(repeats)`` attribute gives per-layer GEMM times."""
    return GemmStep(spec, batch, "train", seed=seed)


def build_predict(spec, batch, seed=0):
    """Return a zero-argument callable running the forward GEMMs of one inference call."""
    return GemmStep(spec, batch, "predict", seed=seed)


def configure_threads(n):
    """OpenBLAS's threads are set through OPENBLAS_NUM_THREADS before import; nothing to do."""


def versions():
    return {"numpy": np.__version__}
