"""PyTorch train step and inference of any spec of :mod:`bench.models` (optional: used only
when torch is importable; not run where torch is absent).

Idiomatic eager PyTorch: ``nn.Sequential`` of ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.Flatten`` /
``nn.Linear`` with ``nn.ReLU`` (the MLP: ``nn.Linear`` + ``nn.ReLU``), image inputs in PyTorch's
native NCHW layout (converted once, outside the timed step; the flatten order differs from NHWC,
the work does not), ``F.cross_entropy`` or ``F.mse_loss``, ``torch.optim.SGD(momentum=0.9)``.
The input needs no gradient, so the first layer skips dX. No per-layer profile. Inference: the
model in eval mode, ``with torch.inference_mode(): model(X)`` per call (what a user writes), so
the context manager's cost is part of the timed call.
"""
import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .numpy_net import make_data


def _module(cfg):
    t = cfg["type"]
    if t == "conv":
        return nn.Conv2d(cfg["in_channels"], cfg["out_channels"], tuple(cfg["kernel_size"]),
                         stride=tuple(cfg["stride"]), padding=tuple(cfg["padding"]))
    if t == "maxpool":
        return nn.MaxPool2d(tuple(cfg["kernel_size"]), stride=tuple(cfg["stride"]))
    if t == "flatten":
        return nn.Flatten()
    return nn.Linear(cfg["in_features"], cfg["out_features"])


def _model_and_data(spec, batch, seed):
    dtype = {"float32": torch.float32, "float64": torch.float64}[spec.get("dtype", "float32")]
    torch.manual_seed(seed)
    mods = []
    for cfg in spec["layers"]:
        m = _module(cfg)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        mods.append(m)
        if cfg.get("activation") == "relu":
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods).to(dtype)
    X_np, y_np = make_data(spec, batch, seed, np.float64)
    if X_np.ndim == 4:  # images: NHWC -> NCHW
        X_np = np.ascontiguousarray(X_np.transpose(0, 3, 1, 2))
    X = torch.from_numpy(X_np).to(dtype)
    y = torch.from_numpy(y_np).to(dtype) if spec["loss"] == "mse" else torch.from_numpy(y_np)
    return model, X, y


def _autocast():
    """The torch-bf16 variant (bench.run.VARIANT_ENV): ``torch.autocast("cpu", bfloat16)``."""
    if os.environ.get("FASTNN_BENCH_AUTOCAST") == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(spec, batch, seed=0):
    """Return a zero-argument callable doing one train step on a fixed random batch."""
    model, X, y = _model_and_data(spec, batch, seed)
    opt = torch.optim.SGD(model.parameters(), lr=spec.get("learning_rate", 0.01),
                          momentum=spec.get("momentum", 0.9))
    loss_fn = F.mse_loss if spec["loss"] == "mse" else F.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast():
            loss = loss_fn(model(X), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def build_predict(spec, batch, seed=0):
    """Return a zero-argument callable doing one eager inference call on a fixed random batch,
    ``with torch.inference_mode(): model(X)`` (the model put in eval mode)."""
    model, X, _ = _model_and_data(spec, batch, seed)
    model.eval()

    def predict():
        with torch.inference_mode(), _autocast():
            return model(X)

    return predict


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


def build_epoch(spec, batch, seed=0):
    """Return a callable training one epoch of Fashion-MNIST the way a PyTorch user writes it
    without a DataLoader: a seeded ``torch.randperm``, each batch gathered by indexing the
    tensors (images converted to NCHW once), a train step."""
    from .numpy_net import epoch_data

    X_np, y_np, n = epoch_data(spec, batch, np.float32)
    if X_np.ndim == 4:
        X_np = np.ascontiguousarray(X_np.transpose(0, 3, 1, 2))
    model, _, _ = _model_and_data(spec, batch, seed)
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    opt = torch.optim.SGD(model.parameters(), lr=spec.get("learning_rate", 0.01),
                          momentum=spec.get("momentum", 0.9))
    gen = torch.Generator().manual_seed(seed)

    def train(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for b in range(3):  # warm-up
        train(X[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch])

    def epoch():
        order = torch.randperm(n, generator=gen)
        loss = None
        for b in range(n // batch):
            idx = order[b * batch:(b + 1) * batch]
            loss = train(X[idx], y[idx])
        return float(loss.item())

    return epoch
