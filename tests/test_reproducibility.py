"""Same seed, same data -> bit-identical weights after ``fit``, whatever the thread count.

The kernels cut their work (and every reduction: bias gradients, loss sums, conv weight
gradients) into blocks whose boundaries depend on the problem size only, combined in a fixed
order, so two runs agree to the last bit on 1 thread, on 2 threads, and between 1 and 2 threads;
in this process and in fresh processes (other heap layout, other hash seed). Checked for an MLP
(float32 and float64, Adam and SGD) and for conv nets (fastnn.models.small_cnn on a small random
subset, and a tiny conv net with average pooling). The layer sizes are chosen so that the kernels
really run in parallel on 2 threads (>= 2**16 multiply-adds per call).
"""
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import (SGD, Adam, AvgPool2D, Conv2D, Dense, Flatten, Sequential,
                    SoftmaxCrossEntropy)
from fastnn.models import small_cnn


def digest(model):
    """SHA-256 of every parameter's bytes, in layer order."""
    h = hashlib.sha256()
    for layer in model.get_weights():
        for key in sorted(layer):
            h.update(key.encode())
            h.update(np.ascontiguousarray(layer[key]).tobytes())
    return h.hexdigest()


def mlp_run(threads, seed=0, dtype="float32", opt="adam"):
    fastnn.set_num_threads(threads)
    rng = np.random.default_rng(123)
    X = rng.standard_normal((400, 100)).astype(dtype)
    y = rng.integers(0, 10, size=400)
    m = Sequential([Dense(100, 256, activation="relu"), Dense(256, 128, activation="tanh"),
                    Dense(128, 10)], dtype=dtype, seed=seed)
    m.compile(Adam(1e-3) if opt == "adam" else SGD(0.05, momentum=0.9), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=2, batch_size=64, verbose=0)
    return m, h, X


def cnn_run(threads, seed=0):
    """fastnn.models.small_cnn on 96 random 28x28 grey images, one epoch."""
    fastnn.set_num_threads(threads)
    rng = np.random.default_rng(5)
    X = rng.random((96, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=96)
    m = small_cnn(seed=seed).compile(Adam(1e-3), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=1, batch_size=32, verbose=0)
    return m, h, X


def tiny_conv_run(threads, seed=0):
    """Padding, stride 2, average pooling, sigmoid, SGD with momentum, float64."""
    fastnn.set_num_threads(threads)
    rng = np.random.default_rng(9)
    X = rng.standard_normal((48, 12, 12, 3))
    y = rng.integers(0, 4, size=48)
    m = Sequential([Conv2D(3, 16, 3, padding=1, activation="relu"), AvgPool2D(2),
                    Conv2D(16, 16, 3, stride=2, padding=1, activation="sigmoid"), Flatten(),
                    Dense(144, 4)], dtype="float64", seed=seed, input_shape=(12, 12, 3))
    m.compile(SGD(0.05, momentum=0.9), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=2, batch_size=16, verbose=0)
    return m, h, X


RUNS = {"mlp": mlp_run, "mlp_float64_sgd": lambda t, seed=0: mlp_run(t, seed, "float64", "sgd"),
        "small_cnn": cnn_run, "tiny_conv": tiny_conv_run}


@pytest.mark.parametrize("name", list(RUNS))
def test_same_seed_same_weights_for_1_and_2_threads(name):
    run = RUNS[name]
    results = {t: [run(t) for _ in range(2)] for t in (1, 2)}
    ref_model, ref_hist, X = results[1][0]
    ref = digest(ref_model)
    for t, runs in results.items():
        for model, hist, _ in runs:
            assert digest(model) == ref, f"{name}: {t} thread(s) differ from the first run"
            assert hist.history["loss"] == ref_hist.history["loss"]
    # the trained models also predict bit-identically on either thread count
    fastnn.set_num_threads(1)
    p1 = results[1][1][0].predict(X)
    fastnn.set_num_threads(2)
    p2 = results[2][0][0].predict(X)
    assert p1.tobytes() == p2.tobytes()


def test_different_seeds_differ():
    """Not vacuous: another seed gives other weights."""
    a, _, _ = mlp_run(1, seed=0)
    b, _, _ = mlp_run(1, seed=1)
    assert digest(a) != digest(b)


def test_shuffle_seed_of_fit_is_used():
    """fit(seed=...) overrides the model's seed for the shuffling only: same init, other order."""
    fastnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=128)
    digests = []
    for fit_seed in (None, 0, 1):
        m = Sequential([Dense(20, 8, activation="relu"), Dense(8, 3)], seed=0)
        m.compile(Adam(1e-2), SoftmaxCrossEntropy())
        m.fit(X, y, epochs=1, batch_size=16, verbose=0, seed=fit_seed)
        digests.append(digest(m))
    assert digests[0] == digests[1] != digests[2]


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    junk = [np.empty(int(n)) for n in sys.argv[3].split(",")]  # shift the heap layout
    import test_reproducibility as T
    for name in sys.argv[4].split(","):
        model, _, _ = T.RUNS[name](int(sys.argv[2]))
        print(name, T.digest(model))
""")


@pytest.mark.slow
def test_bit_identical_in_fresh_processes():
    """Other processes (other hash seed, other heap layout, other thread count) give the same
    bits as this one."""
    names = ["mlp", "tiny_conv"]
    here = {}
    for name in names:
        here[name] = digest(RUNS[name](1)[0])
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    for threads, junk, hashseed in ((1, "3,1001", "1"), (2, "17,65537,5", "2")):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        proc = subprocess.run([sys.executable, "-c", CHILD, tests_dir, str(threads), junk,
                               ",".join(names)], capture_output=True, text=True, timeout=300,
                              env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = dict(line.split() for line in proc.stdout.strip().splitlines())
        assert got == here, f"{threads} thread(s) in a fresh process differ"
