"""The benchmark runs end to end (``python -m bench --smoke``) for every net, and its NumPy MLP
baseline is right (the CNN baseline: test_bench_cnn.py).

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

from bench.models import MODELS, layer_flops, layer_name, train_step_flops  # noqa: E402
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


def _tables(text):
    """The markdown tables of one section of the output, as lists of row dicts."""
    tables, current = [], None
    for ln in text.splitlines():
        if ln.startswith("|"):
            cells = [c.strip() for c in ln.strip().strip("|").split("|")]
            if current is None:
                current = {"header": cells, "rows": []}
                tables.append(current)
            elif not set("".join(cells)) <= set("-:"):
                current["rows"].append(dict(zip(current["header"], cells)))
        else:
            current = None
    return tables


def test_bench_smoke_prints_tables_and_writes_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--nets", "mlp,cnn,dqn",
                           "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    impls = ["numpy", "fastnn"] + (["torch"] if importlib.util.find_spec("torch") else [])
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", proc.stdout, re.S | re.M))
    assert set(sections) == {"mlp", "cnn", "dqn"}, proc.stdout
    for net, text in sections.items():
        data = json.loads((tmp_path / f"{net}-smoke.json").read_text())
        assert data["net"] == net and data["model"] == MODELS[net]
        # torch takes part only where bench/torch_<kind>.py exists
        present = [i for i in impls if i not in data["skipped"]]
        assert {"numpy", "fastnn"} <= set(present)
        assert not data["errors"]
        tables = _tables(text)
        header, rows = tables[0]["header"], tables[0]["rows"]
        for impl in present:
            assert f"{impl} ms" in header and f"{impl} GFLOP/s" in header, header
        assert "numpy/fastnn" in header
        expected = {(b, t) for b in data["settings"]["batches"]
                    for t in data["settings"]["threads"]}
        assert data["settings"]["batches"] == MODELS[net]["batches"]["smoke"]
        assert {(int(r["batch"]), int(r["threads"])) for r in rows} == expected
        for row in rows:
            for impl in present:
                median = re.match(r"([0-9.]+) \(([0-9.]+)\)", row[f"{impl} ms"])
                assert median, row
                assert float(median.group(1)) > 0
                assert float(row[f"{impl} GFLOP/s"]) > 0
            assert float(row["numpy/fastnn"]) > 0

        assert {(r["impl"], r["batch"], r["threads"]) for r in data["results"]} == {
            (i, b, t) for i in present for (b, t) in expected}
        assert all(r["median_ms"] > 0 and r["n_steps"] > 0 for r in data["results"])
        for r in data["results"]:
            assert r["useful_flops"] == train_step_flops(MODELS[net], r["batch"])
            assert np.isfinite(r["loss_first"]) and np.isfinite(r["loss_last"])
        assert data["machine"]["cpu_count"] >= 1 and "cpu_model" in data["machine"]
        assert data["machine"]["loadavg1_samples"]
        assert {(w["impl"], w["threads"]) for w in data["workers"]} == {
            (i, t) for i in present for t in data["settings"]["threads"]}
        assert all(w["threadpools"] for w in data["workers"])
        assert "load average" in text

        if net == "mlp":
            assert len(tables) == 1 and not data["layer_profiles"]
            continue
        # per-layer profiles of the conv nets: both implementations, every (batch, threads)
        assert {(p["impl"], p["batch"], p["threads"]) for p in data["layer_profiles"]} == {
            (i, b, t) for i in ("numpy", "fastnn") for (b, t) in expected}
        n_layers = len(MODELS[net]["layers"])
        for p in data["layer_profiles"]:
            rows_p = p["rows"]
            assert len(rows_p) == n_layers + 3  # layers, loss, optimizer, total
            assert p["chunks"] == data["settings"]["profile_chunks"]
            assert [r["name"] for r in rows_p[:n_layers]] == [
                layer_name(c) for c in MODELS[net]["layers"]]
            assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in rows_p)
            flops = layer_flops(MODELS[net], p["batch"])
            for r, (f, b) in zip(rows_p, flops):
                assert r["flops"] == f + b
                if p["impl"] == "fastnn" and f:
                    # our FLOP formulas agree with fastnn.profile's
                    assert r["fastnn_flops"] == pytest.approx(f + b, rel=1e-9)
            assert rows_p[-1]["flops"] == train_step_flops(MODELS[net], p["batch"])
        layer_table = tables[1]
        assert {"fastnn fwd ms", "fastnn bwd ms", "fastnn GFLOP/s", "numpy ms",
                "numpy GFLOP/s"} <= set(layer_table["header"])
        assert len(layer_table["rows"]) == len(expected) * (n_layers + 3)
        for row in layer_table["rows"]:
            if row["layer"].startswith(("conv", "dense")):
                assert float(row["fastnn GFLOP/s"]) > 0 and float(row["numpy GFLOP/s"]) > 0
