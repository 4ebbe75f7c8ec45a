"""PyTorch MLP train step (optional: used only when torch is importable).

Idiomatic eager PyTorch: ``nn.Sequential`` of ``nn.Linear`` + ``nn.ReLU``, ``F.cross_entropy``,
``torch.optim.SGD(momentum=0.9)``; the input needs no gradient, so the first layer skips dX.
Inference: the model in eval mode, ``with torch.inference_mode(): model(X)`` per call (what a
user writes), so the context manager's cost is part of the timed call.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _model_and_data(spec, batch, seed):
    sizes = spec["sizes"]
    dtype = {"float32": torch.float32, "float64": torch.float64}[spec.get("dtype", "float32")]
    torch.manual_seed(seed)
    mods = []
    for i, (k, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(k, m)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods).to(dtype)
    rng = np.random.default_rng(seed + 1)
    X = torch.from_numpy(np.ascontiguousarray(rng.standard_normal((batch, sizes[0])))).to(dtype)
    y = torch.from_numpy(rng.integers(0, sizes[-1], size=batch, dtype=np.int64))
    return model, X, y


def build(spec, batch, seed=0):
    """Return a zero-argument callable doing one train step on a fixed random batch."""
    model, X, y = _model_and_data(spec, batch, seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.get("learning_rate", 0.01),
                          momentum=spec.get("momentum", 0.9))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def eager_predict(model, X):
    """A zero-argument callable doing one eager inference call,
    ``with torch.inference_mode(): model(X)`` (the model put in eval mode)."""
    model.eval()

    def predict():
        with torch.inference_mode():
            return model(X)

    return predict


def build_predict(spec, batch, seed=0):
    """Return :func:`eager_predict` of the model on a fixed random batch."""
    model, X, _ = _model_and_data(spec, batch, seed)
    return eager_predict(model, X)


def configure_threads(n):
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only allowed before any parallel work)
        pass


def versions():
    return {"torch": torch.__version__, "numpy": np.__version__}


def extra_info():
    return {"torch_parallel_info": torch.__config__.parallel_info()}
