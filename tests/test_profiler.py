import numpy as np
import pytest

import fastnn
from fastnn import SGD, Dense, Sequential, SoftmaxCrossEntropy


def test_profile_rows_cover_every_layer_and_sum_to_the_step():
    rng = np.random.default_rng(0)
    X = rng.random((64, 20), dtype=np.float32)
    y = rng.integers(0, 5, 64)
    m = Sequential([Dense(20, 16, activation="relu"), Dense(16, 5)], seed=0)
    m.compile(SGD(0.01, momentum=0.9), SoftmaxCrossEntropy())
    before = m.layers[0].params["weight"].copy()
    rows = fastnn.profile(m, X, y, repeats=3, warmup=1)
    assert [r["name"].split(":")[0] for r in rows] == ["0", "1", "loss", "optimizer", "total"]
    parts = rows[:-1]
    assert sum(r["share"] for r in parts) == pytest.approx(1.0)
    total_ms = sum(r["forward_ms"] + r["backward_ms"] for r in parts)
    assert rows[-1]["forward_ms"] + rows[-1]["backward_ms"] == pytest.approx(total_ms)
    # useful FLOPs: dense 0 skips dX (forward 2NKM + dW 2NKM), dense 1 does all three GEMMs
    flops = 2 * 64 * 20 * 16 * 2 + 2 * 64 * 16 * 5 * 3
    t0 = rows[0]["forward_ms"] + rows[0]["backward_ms"]
    assert rows[0]["gflops"] == pytest.approx(2 * 64 * 20 * 16 * 2 / (t0 * 1e-3) / 1e9)
    assert rows[-1]["gflops"] == pytest.approx(flops / (total_ms * 1e-3) / 1e9)
    assert not np.array_equal(before, m.layers[0].params["weight"])  # it really trained
    table = fastnn.format_profile(rows)
    assert table.count("\n") == len(rows) + 1


def test_profile_needs_a_compiled_model():
    m = Sequential([Dense(3, 2)])
    with pytest.raises(RuntimeError, match="compile"):
        fastnn.profile(m, np.zeros((2, 3), np.float32), [0, 1])
