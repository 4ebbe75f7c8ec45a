"""Per-layer profile of a training step: where the time of ``train_on_batch`` goes."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from .model import Sequential


def _layer_flops(layer: Any, in_shape: Sequence[int], out_shape: Sequence[int],
                 n: int) -> tuple[float, float]:
    """Useful floating-point operations (multiply-adds count 2) of one layer's forward and
    backward for a batch of n; (0, 0) for layers without a GEMM."""
    # ``layer`` is duck-typed: Dense, or anything with Conv2D's attributes
    from .layers import Dense

    if isinstance(layer, Dense):
        f = 2.0 * n * layer.in_features * layer.out_features
        return f, (2 * f if layer.need_input_grad else f)
    if hasattr(layer, "kernel_size") and hasattr(layer, "out_channels"):  # Conv2D
        kh, kw = layer.kernel_size
        ho, wo = out_shape[0], out_shape[1]
        f = 2.0 * n * ho * wo * kh * kw * layer.in_channels * layer.out_channels
        return f, (2 * f if layer.need_input_grad else f)
    return 0.0, 0.0


def profile(model: Sequential, X: ArrayLike, y: ArrayLike, repeats: int = 20,
            warmup: int = 3) -> list[dict[str, Any]]:
    """Time each layer's forward and backward, the loss and the optimizer step of
    ``train_on_batch(X, y)`` (medians over ``repeats`` steps, after ``warmup`` steps).

    The model is trained by these steps (its weights change); profile a copy if that matters.

    Parameters
    ----------
    model : Sequential
        Compiled.
    X, y : array_like
        One batch, as for ``train_on_batch``.
    repeats : int, default=20
    warmup : int, default=3

    Returns
    -------
    list of dict
        One row per part: ``name``, ``forward_ms``, ``backward_ms``, ``gflops`` (useful GFLOP/s of
        forward + backward), ``share`` (fraction of the step), and a final ``total`` row.

    Raises
    ------
    RuntimeError
        If the model is not compiled.
    """
    from . import _validation as V

    model._require_compiled()
    assert model.loss is not None and model.optimizer is not None  # checked just above
    repeats = V.check_int(repeats, "repeats", minimum=1)
    X, out_shape = model._check_X(X)
    yb = model._prepare_y(y, X.shape[0], out_shape)
    n = X.shape[0]
    L = len(model.layers)
    fwd = np.zeros((repeats, L))
    bwd = np.zeros((repeats, L))
    loss_t = np.zeros(repeats)
    opt_t = np.zeros(repeats)
    clock = time.perf_counter
    for r in range(-warmup, repeats):
        out = X
        tf = []
        for layer in model.layers:
            t = clock()
            out = layer.forward(out, training=True)
            tf.append(clock() - t)
        t = clock()
        model.loss.forward(out, yb, prepared=True)
        grad: Any = model.loss.backward()  # an ndarray, then each layer's ndarray or None
        tl = clock() - t
        tb = [0.0] * L
        for i in range(L - 1, -1, -1):
            t = clock()
            grad = model.layers[i].backward(grad)
            tb[i] = clock() - t
            if grad is None:
                break
        t = clock()
        model.optimizer.step(model.layers)
        to = clock() - t
        if r >= 0:
            fwd[r], bwd[r], loss_t[r], opt_t[r] = tf, tb, tl, to
    fm, bm = np.median(fwd, axis=0), np.median(bwd, axis=0)
    lm, om = float(np.median(loss_t)), float(np.median(opt_t))
    total = float(fm.sum() + bm.sum() + lm + om)
    rows = []
    shape = X.shape[1:]
    total_flops = 0.0
    for i, layer in enumerate(model.layers):
        out_s = layer.output_shape(shape)
        ff, fb = _layer_flops(layer, shape, out_s, n)
        total_flops += ff + fb
        t = fm[i] + bm[i]
        rows.append({"name": f"{i}: {layer!r}", "forward_ms": fm[i] * 1e3,
                     "backward_ms": bm[i] * 1e3,
                     "gflops": (ff + fb) / t / 1e9 if t > 0 and ff else None,
                     "share": t / total})
        shape = out_s
    rows.append({"name": f"loss: {type(model.loss).__name__}", "forward_ms": lm * 1e3,
                 "backward_ms": 0.0, "gflops": None, "share": lm / total})
    rows.append({"name": f"optimizer: {type(model.optimizer).__name__}", "forward_ms": 0.0,
                 "backward_ms": om * 1e3, "gflops": None, "share": om / total})
    rows.append({"name": "total", "forward_ms": fm.sum() * 1e3 + lm * 1e3,
                 "backward_ms": bm.sum() * 1e3 + om * 1e3, "gflops": total_flops / total / 1e9,
                 "share": 1.0})
    return rows


def format_profile(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`profile` as a markdown table."""
    lines = ["| part | forward ms | backward ms | GFLOP/s | share |", "|---|---|---|---|---|"]
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] else ""
        lines.append(f"| {r['name'][:60]} | {r['forward_ms']:.3f} | {r['backward_ms']:.3f} | {g} | "
                     f"{100 * r['share']:.1f}% |")
    return "\n".join(lines)
