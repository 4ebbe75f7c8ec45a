"""Gradient checking by central finite differences in float64."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from .model import Sequential


def gradient_check(model: Sequential, X: ArrayLike, y: ArrayLike, eps: float = 1e-5,
                   max_checks: int = 20, seed: int = 0) -> dict[str, float]:
    """Compare a model's analytic gradients with central differences, in float64.

    A float64 copy of ``model`` (same layers and weights) is made, so a float32 model can be
    checked too. For each parameter, up to ``max_checks`` entries (chosen at random) are perturbed
    by ``+-eps``: ``(L(w + eps) - L(w - eps)) / (2 eps)``.

    Parameters
    ----------
    model : Sequential
        Compiled (its loss is used).
    X, y : array_like
        A small batch, as for ``fit``.
    eps : float, default=1e-5
    max_checks : int, default=20
        Entries checked per parameter array.
    seed : int, default=0

    Returns
    -------
    dict
        ``{"<layer index>.<name>": max relative error}``, the relative error of each entry being
        ``|a - n| / max(|a| + |n|, 1e-6)``. Values below 1e-6 mean the gradients agree.

    Raises
    ------
    RuntimeError
        If the model has no loss.
    """
    from .model import Sequential

    if model.loss is None:
        raise RuntimeError("gradient_check needs a compiled model (it uses the model's loss)")
    import copy

    layers = [type(layer)(**layer.get_config()) for layer in model.layers]
    m64 = Sequential(layers, dtype="float64", input_shape=model.input_shape)
    for src, dst in zip(model.layers, m64.layers):
        for k in dst.params:
            dst.params[k][...] = src.params[k]
    loss = copy.deepcopy(model.loss)
    loss.__dict__.pop("_buffers", None)
    X, out_shape = m64._check_X(X)
    yp = loss.prepare_target(y, (X.shape[0],) + tuple(out_shape))

    # every evaluation replays the same training state (Dropout draws its mask from its step)
    states = [layer.get_state() for layer in m64.layers]

    def value() -> float:
        for layer, state in zip(m64.layers, states):
            layer.set_state(state)
        return loss.forward(m64._forward(X, training=True), yp, prepared=True)

    value()
    m64.backward(loss.backward().copy())
    rng = np.random.default_rng(seed)
    result = {}
    for i, layer in enumerate(m64.layers):
        for name, p in layer.params.items():
            analytic = layer.grads[name].copy()
            flat = p.reshape(-1)
            idx = rng.choice(flat.size, size=min(max_checks, flat.size), replace=False)
            worst = 0.0
            for j in idx:
                old = flat[j]
                flat[j] = old + eps
                lp = value()
                flat[j] = old - eps
                lm = value()
                flat[j] = old
                num = (lp - lm) / (2 * eps)
                a = analytic.reshape(-1)[j]
                worst = max(worst, abs(a - num) / max(abs(a) + abs(num), 1e-6))
            result[f"{i}.{name}"] = worst
    return result
