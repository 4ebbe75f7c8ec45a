"""The benchmark runs end to end (``python -m bench --smoke``) for every net: train and
inference tables, the sgemm roofline columns, the JSON and the chart (or the line saying it was
skipped, without matplotlib); the NumPy baseline is right on an MLP (on conv nets:
test_bench_cnn.py).

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

from bench.models import (MODELS, forward_flops, layer_flops, layer_name,  # noqa: E402
                          mlp_layers, train_step_flops)
from bench.numpy_net import NumpyNet  # noqa: E402
from conftest import numerical_grad, softmax_ce  # noqa: E402


def test_flops_formula():
    # (N,K)->(M): forward 2NKM, backward 4NKM, first layer 2NKM (no dX)
    n = 32
    expected = 4 * n * 784 * 256 + 6 * n * 256 * 128 + 6 * n * 128 * 10
    assert train_step_flops(MODELS["mlp"], n) == expected


def _mlp(sizes, n, **kwargs):
    """The NumPy baseline of an MLP of widths ``sizes`` (ReLU hidden layers, softmax-CE)."""
    spec = {"kind": "mlp", "input_shape": [sizes[0]], "layers": mlp_layers(sizes),
            "loss": "softmax_ce", "inputs": "normal"}
    return NumpyNet(spec, n, dtype=np.float64, **kwargs)


def _loss64(net, X, y):
    """Mean softmax cross-entropy of ``net``'s current parameters, computed plainly in float64."""
    A = X
    weights, biases = net.params[0::2], net.params[1::2]
    for i, (W, b) in enumerate(zip(weights, biases)):
        A = A @ W + b
        if i < len(weights) - 1:
            A = np.maximum(A, 0)
    return softmax_ce(A, y)


def test_numpy_baseline_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    sizes, n = (7, 6, 5, 4), 9
    net = _mlp(sizes, n, seed=3, learning_rate=0.0, momentum=0.9)
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    loss = net.train_step(X, y)  # lr = 0: parameters unchanged, gradients filled
    assert loss == pytest.approx(_loss64(net, X, y), rel=1e-12)
    grads = net.flat_grads.copy()
    fd = numerical_grad(lambda: _loss64(net, X, y), net.flat_params, h=1e-6)
    assert grads == pytest.approx(fd, abs=1e-7)


def test_numpy_baseline_sgd_momentum_update():
    rng = np.random.default_rng(2)
    sizes, n = (5, 4, 3), 6
    net = _mlp(sizes, n, seed=0, learning_rate=0.1, momentum=0.9)
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


def _pct(cell):
    assert cell.endswith("%"), cell
    return float(cell[:-1])


def _check_table(table, present, expected, gflops):
    """One train or inference table: every (batch, threads) row, every implementation's median
    (IQR), ratio to fastnn, GFLOP/s (train), the roofline and each one's % of it."""
    header, rows = table["header"], table["rows"]
    impls = [i for i in present if i != "sgemm"]
    for impl in impls:
        assert f"{impl} ms" in header and f"{impl} % roofline" in header, header
        assert (f"{impl} GFLOP/s" in header) == gflops, header
    assert "numpy/fastnn" in header and "sgemm ms" not in header
    assert "roofline ms" in header and ("roofline GFLOP/s" in header) == gflops
    assert {(int(r["batch"]), int(r["threads"])) for r in rows} == expected
    for row in rows:
        for impl in impls:
            median = re.match(r"([0-9.]+) \(([0-9.]+)\)", row[f"{impl} ms"])
            assert median, row
            assert float(median.group(1)) > 0
            if gflops:
                assert float(row[f"{impl} GFLOP/s"]) >= 0  # "0.0": a very loaded machine
            assert _pct(row[f"{impl} % roofline"]) >= 0  # "0%": a loaded machine
        assert float(row["numpy/fastnn"]) >= 0 and float(row["roofline ms"]) > 0
        if gflops:
            assert float(row["roofline GFLOP/s"]) >= 0


@pytest.mark.slow
def test_bench_smoke_prints_tables_and_writes_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--nets", "mlp,cnn,dqn",
                           "--out-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    have_torch = importlib.util.find_spec("torch") is not None
    impls = ["numpy", "fastnn"] + (["torch", "torch-malloc"] if have_torch else [])
    impls.append("sgemm")
    try:  # the driver runs in this environment: its chart needs matplotlib importable
        import matplotlib  # noqa: F401

        have_mpl = True
    except ImportError:
        have_mpl = False
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", proc.stdout, re.S | re.M))
    assert set(sections) == {"mlp", "cnn", "dqn"}, proc.stdout
    for net, text in sections.items():
        data = json.loads((tmp_path / f"{net}-smoke.json").read_text())
        assert data["net"] == net and data["model"] == MODELS[net]
        # torch takes part where it is installed
        present = [i for i in impls if i not in data["skipped"]]
        assert {"numpy", "fastnn", "sgemm"} <= set(present)
        assert not data["errors"]
        assert data["roofline"] == "sgemm" and "% of roofline" in data["roofline_definition"]
        tables = {t["header"][0] + ("/infer" if "roofline GFLOP/s" not in t["header"] and
                                    t["header"][0] == "batch" else ""): t
                  for t in _tables(text)}
        expected = {(b, t) for b in data["settings"]["batches"]
                    for t in data["settings"]["threads"]}
        expected_inf = {(b, t) for b in data["settings"]["predict_batches"]
                        for t in data["settings"]["threads"]}
        assert data["settings"]["batches"] == MODELS[net]["batches"]["smoke"]
        assert data["settings"]["predict_batches"] == MODELS[net]["predict_batches"]["smoke"]
        _check_table(tables["batch"], present, expected, gflops=True)
        _check_table(tables["batch/infer"], present, expected_inf, gflops=False)
        assert "Inference (" in text and "ms per call" in text
        assert "% roofline = roofline ms / ms" in text

        for key, mode, cases, flops in (
                ("results", "train", expected, train_step_flops),
                ("inference_results", "predict", expected_inf, forward_flops)):
            rows = data[key]
            assert {(r["impl"], r["batch"], r["threads"]) for r in rows} == {
                (i, b, t) for i in present for (b, t) in cases}
            by = {(r["impl"], r["batch"], r["threads"]): r for r in rows}
            for r in rows:
                assert r["mode"] == mode and r["median_ms"] > 0 and r["n_steps"] > 0
                assert r["useful_flops"] == flops(MODELS[net], r["batch"])
                if r["impl"] == "sgemm":
                    continue
                roof = by[("sgemm", r["batch"], r["threads"])]
                assert r["roofline_ms"] == roof["median_ms"]
                assert r["pct_roofline"] == pytest.approx(
                    100 * roof["median_ms"] / r["median_ms"])
                assert len(r["pct_roofline_per_round"]) == 3
                what = "loss" if mode == "train" else "output_sum"
                assert np.isfinite(r[f"{what}_first"]) and np.isfinite(r[f"{what}_last"])
            ratios = data["ratios" if mode == "train" else "inference_ratios"]
            assert {(q["impl"], q["batch"], q["threads"]) for q in ratios} == {
                (i, b, t) for i in present if i not in ("fastnn", "sgemm")
                for (b, t) in cases}
        assert data["inference_table_markdown"] and data["table_markdown"]
        assert data["machine"]["cpu_count"] >= 1 and "cpu_model" in data["machine"]
        assert data["machine"]["loadavg1_samples"]
        assert {(w["impl"], w["threads"]) for w in data["workers"]} == {
            (i, t) for i in present for t in data["settings"]["threads"]}
        assert all(w["threadpools"] for w in data["workers"])
        assert "load average" in text

        # the chart beside the JSON, or one line saying it was skipped
        png = tmp_path / f"{net}-smoke.png"
        if have_mpl:
            assert data["chart"] == str(png) and data["chart_skipped"] is None
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert data["chart"] is None and "matplotlib" in data["chart_skipped"]
            assert not png.exists()
    n_skipped = proc.stderr.count("chart skipped")
    assert n_skipped == (0 if have_mpl else 3), proc.stderr

    for net, text in sections.items():
        data = json.loads((tmp_path / f"{net}-smoke.json").read_text())
        present = [i for i in impls if i not in data["skipped"]]
        tables = _tables(text)
        expected = {(b, t) for b in data["settings"]["batches"]
                    for t in data["settings"]["threads"]}
        if net == "mlp":
            assert len(tables) == 2 and not data["layer_profiles"]
            continue
        # per-layer profiles of the conv nets: every implementation that has one (torch: no),
        # every (batch, threads)
        assert {(p["impl"], p["batch"], p["threads"]) for p in data["layer_profiles"]} == {
            (i, b, t) for i in ("numpy", "fastnn", "sgemm") for (b, t) in expected}
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
                if p["impl"] == "sgemm":  # GEMM time exactly where there are GEMMs
                    assert (r["forward_ms"] > 0) == (f > 0)
            assert rows_p[-1]["flops"] == train_step_flops(MODELS[net], p["batch"])
        layer_table = tables[2]
        assert {"fastnn fwd ms", "fastnn bwd ms", "fastnn GFLOP/s", "numpy ms",
                "numpy GFLOP/s", "roofline ms", "roofline GFLOP/s",
                "fastnn % roofline"} <= set(layer_table["header"])
        assert len(layer_table["rows"]) == len(expected) * (n_layers + 3)
        for row in layer_table["rows"]:
            if row["layer"].startswith(("conv", "dense")):
                assert float(row["fastnn GFLOP/s"]) >= 0 and float(row["numpy GFLOP/s"]) >= 0
                assert float(row["roofline ms"]) > 0 and _pct(row["fastnn % roofline"]) >= 0
            elif row["layer"] in ("maxpool 2x2", "flatten", "loss", "optimizer"):
                assert row["roofline ms"] == ""


def test_roofline_pairs_rows_of_the_same_mode_batch_and_threads():
    from bench.report import add_roofline

    def row(mode, impl, batch, threads, ms):
        return {"mode": mode, "impl": impl, "batch": batch, "threads": threads,
                "median_ms": ms, "block_medians_ms": [ms, 2 * ms]}

    rows = [row("train", "fastnn", 32, 1, 4.0), row("train", "sgemm", 32, 1, 3.0),
            row("predict", "fastnn", 32, 1, 0.5), row("predict", "sgemm", 32, 1, 0.25),
            row("train", "fastnn", 32, 2, 2.0), row("predict", "numpy", 1, 1, 1.0)]
    add_roofline(rows)
    assert rows[0]["roofline_ms"] == 3.0 and rows[0]["pct_roofline"] == pytest.approx(75.0)
    assert rows[0]["pct_roofline_per_round"] == pytest.approx([75.0, 75.0, 75.0])
    assert rows[2]["roofline_ms"] == 0.25 and rows[2]["pct_roofline"] == pytest.approx(50.0)
    assert "pct_roofline" not in rows[4] and "pct_roofline" not in rows[5]  # no roofline ran
    assert "pct_roofline" not in rows[1]


def test_chart_skipped_without_matplotlib(monkeypatch, capsys, tmp_path):
    """No matplotlib: one line says the chart was skipped, nothing is written, nothing fails."""
    from bench import run

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = tmp_path / "mlp.png"
    got, reason = run.save_chart({"results": []}, str(path))
    assert got is None and "matplotlib" in reason
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chart skipped: matplotlib")
    assert not path.exists()


def test_chart_failure_never_raises(capsys, tmp_path):
    from bench import run

    got, reason = run.save_chart({"results": []}, str(tmp_path / "x.png"))  # nothing to draw
    assert got is None and reason
    assert "chart skipped" in capsys.readouterr().err


def test_chart_draws_a_payload(tmp_path):
    pytest.importorskip("matplotlib")
    from bench import chart

    def row(mode, impl, batch, threads, ms, pct=None):
        r = {"mode": mode, "impl": impl, "batch": batch, "threads": threads, "median_ms": ms,
             "q1_ms": ms * 0.9, "q3_ms": ms * 1.1}
        if pct is not None:
            r["pct_roofline"] = pct
        return r

    payload = {"net": "mlp", "model": MODELS["mlp"], "profile": "smoke", "reference": "fastnn",
               "roofline": "sgemm", "implementations": ["numpy", "fastnn", "sgemm"],
               "machine": {"cpu_model": "test"}, "date": "today",
               "results": [row("train", "numpy", 32, 1, 2.0), row("train", "fastnn", 32, 1, 1.0,
                                                                   50.0),
                           row("train", "sgemm", 32, 1, 0.5)],
               "inference_results": [row("predict", "fastnn", 1, 1, 0.02)]}
    path = tmp_path / "c.png"
    assert chart.write_chart(payload, str(path)) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_busy_worker_counts_fit_steps():
    """bench --busy's worker: fastnn fit for a fixed time at a fixed thread count, steps counted."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "bench.modes", "busy-worker", "fastnn", "mlp",
                          "1", "0.3"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["impl"] == "fastnn" and res["net"] == "mlp" and res["steps"] >= 1
    assert 0.3 <= res["seconds"] < 60


def _have_fashion_mnist():
    from fastnn.datasets import load_fashion_mnist

    try:
        load_fashion_mnist()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _have_fashion_mnist(), reason="needs Debian's dataset-fashion-mnist")
def test_epoch_builders_train_one_epoch():
    """bench --epoch's builders: the NumPy loop and fastnn fit each train a full epoch of the
    MLP on Fashion-MNIST (59,904 samples at batch 128) and end with a loss well below ln(10)."""
    from bench import fastnn_net, numpy_net

    fastnn_set = __import__("fastnn").set_num_threads
    fastnn_set(1)
    try:
        for module in (numpy_net, fastnn_net):
            epoch = module.build_epoch(MODELS["mlp"], 128, seed=0)
            loss = epoch()
            assert np.isfinite(loss) and loss < 1.0, (module.__name__, loss)
    finally:
        fastnn_set(None)
