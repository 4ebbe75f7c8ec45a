"""The benchmark runs end to end (``python -m bench --smoke``), and its NumPy baseline is right.

Never asserts anything about speed: only that every implementation produced a positive time.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.models import MODELS, train_step_flops  # noqa: E402
from bench.numpy_mlp import NumpyMLP  # noqa: E402


def test_flops_formula():
    # (N,K)->(M): forward 2NKM, backward 4NKM, first layer 2NKM (no dX)
    n = 32
    expected = 4 * n * 784 * 256 + 6 * n * 256 * 128 + 6 * n * 128 * 10
    assert train_step_flops(MODELS["mlp"], n) == expected


def _loss64(net, X, y):
    """Mean softmax cross-entropy of ``net``'s current parameters, computed plainly in float64."""
    A = X
    for i, (W, b) in enumerate(zip(net.W, net.b)):
        A = A @ W + b
        if i < len(net.W) - 1:
            A = np.maximum(A, 0)
    A = A - A.max(axis=1, keepdims=True)
    logp = A - np.log(np.exp(A).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def test_numpy_baseline_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    sizes, n = (7, 6, 5, 4), 9
    net = NumpyMLP(sizes, n, dtype=np.float64, seed=3, learning_rate=0.0, momentum=0.9)
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    loss = net.train_step(X, y)  # lr = 0: parameters unchanged, gradients filled
    assert loss == pytest.approx(_loss64(net, X, y), rel=1e-12)
    grads = net.flat_grads.copy()
    eps = 1e-6
    for i in range(net.flat_params.size):
        old = net.flat_params[i]
        net.flat_params[i] = old + eps
        up = _loss64(net, X, y)
        net.flat_params[i] = old - eps
        down = _loss64(net, X, y)
        net.flat_params[i] = old
        assert grads[i] == pytest.approx((up - down) / (2 * eps), abs=1e-7)


def test_numpy_baseline_sgd_momentum_update():
    rng = np.random.default_rng(2)
    sizes, n = (5, 4, 3), 6
    net = NumpyMLP(sizes, n, dtype=np.float64, seed=0, learning_rate=0.1, momentum=0.9)
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    p, v = net.flat_params.copy(), np.zeros_like(net.flat_params)
    for _ in range(3):
        net.train_step(X, y)
        v = 0.9 * v + net.flat_grads  # PyTorch's form, as fastnn
        p = p - 0.1 * v
        np.testing.assert_allclose(net.flat_params, p, rtol=1e-12, atol=1e-15)


def test_bench_smoke_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "mlp.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    impls = ["numpy", "fastnn"] + (["torch"] if importlib.util.find_spec("torch") else [])

    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for impl in impls:
        assert f"{impl} ms" in header, header
    assert "fastnn GFLOP/s" in header and "numpy/fastnn" in header
    rows = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]
    data = json.loads(out.read_text())
    expected = {(b, t) for b in data["settings"]["batches"] for t in data["settings"]["threads"]}
    assert {(int(r["batch"]), int(r["threads"])) for r in rows} == expected
    for row in rows:
        for impl in impls:
            median = re.match(r"([0-9.]+) \(([0-9.]+)\)", row[f"{impl} ms"])
            assert median, row
            assert float(median.group(1)) > 0
        assert float(row["numpy/fastnn"]) > 0
        assert float(row["fastnn GFLOP/s"]) > 0

    assert not data["errors"]
    assert {(r["impl"], r["batch"], r["threads"]) for r in data["results"]} == {
        (i, b, t) for i in impls for (b, t) in expected}
    assert all(r["median_ms"] > 0 and r["n_steps"] > 0 for r in data["results"])
    assert data["machine"]["cpu_count"] >= 1 and "cpu_model" in data["machine"]
    assert {(w["impl"], w["threads"]) for w in data["workers"]} == {
        (i, t) for i in impls for t in data["settings"]["threads"]}
    assert all(w["threadpools"] for w in data["workers"])
