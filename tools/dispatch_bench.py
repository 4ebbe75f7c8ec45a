"""What the run-time SIMD dispatch (gcc target_clones in src_cython/simd.h) gains, measured.

Compares two builds of fastnn, one thread, in separate worker processes run alternately
(A B B A A B ...), and reports the median time per call of a few hot kernels and the ratio:

    # two in-place builds of the same checkout, the baseline one with FASTNN_NO_CLONES=1
    git clone . /tmp/fnn-clones && (cd /tmp/fnn-clones && python setup.py build_ext --inplace)
    git clone . /tmp/fnn-base && (cd /tmp/fnn-base && FASTNN_NO_CLONES=1 python setup.py build_ext --inplace)
    python tools/dispatch_bench.py /tmp/fnn-base /tmp/fnn-clones

Each argument is a folder from which ``import fastnn`` finds a built package.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np
import fastnn
from fastnn import _activations, _softmax_ce, _threads

rng = np.random.default_rng(0)
def make_act(kind, dtype, n=1_000_000):
    base = rng.standard_normal(n).astype(dtype) * 4
    Z = base.copy()
    def run():
        Z[:] = base
        _activations.forward_inplace(Z, kind, 0.0, 1)
    return run
def make_copy(dtype, n=1_000_000):   # the Z[:] = base part of the activation timings
    base = rng.standard_normal(n).astype(dtype)
    Z = base.copy()
    def run():
        Z[:] = base
    return run
def make_act_backward(kind, dtype, n=1_000_000):
    A = rng.random(n).astype(dtype)
    dA = rng.standard_normal(n).astype(dtype)
    dZ = np.empty_like(A)
    return lambda: _activations.backward(A, dA, dZ, kind, 0.0, 1)
def make_sce(N, K, dtype):
    logits = rng.standard_normal((N, K)).astype(dtype) * 3
    labels = rng.integers(0, K, N).astype(np.int64)
    dlogits = np.empty_like(logits)
    row_loss = np.empty(N)
    return lambda: _softmax_ce.softmax_cross_entropy(logits, labels, dlogits, row_loss, 1.0 / N, 1)

cases = {
    "copy 1e6 f32 (overhead of the forward cases)": make_copy(np.float32),
    "sigmoid forward 1e6 f32": make_act(3, np.float32),
    "tanh forward 1e6 f32": make_act(4, np.float32),
    "relu forward 1e6 f32": make_act(1, np.float32),
    "sigmoid backward 1e6 f32": make_act_backward(3, np.float32),
    "softmax_cross_entropy (1024,10) f32": make_sce(1024, 10, np.float32),
    "softmax_cross_entropy (1024,100) f32": make_sce(1024, 100, np.float32),
    "sigmoid forward 1e6 f64": make_act(3, np.float64),
}
out = {"simd_path": _threads.simd_path(), "times": {}}
for name, fn in cases.items():
    for _ in range(5):
        fn()
    t0 = time.perf_counter(); k = 0
    while time.perf_counter() - t0 < 0.02:
        fn(); k += 1
    samples = []
    for _ in range(int(sys.argv[1])):
        t = time.perf_counter()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter() - t) / k)
    out["times"][name] = sorted(samples)[len(samples) // 2]
print(json.dumps(out))
"""


def run_worker(path, reps):
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", WORKER, str(reps)], env=env, cwd=path,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="folder with a FASTNN_NO_CLONES=1 build")
    parser.add_argument("dispatch", help="folder with the normal (target_clones) build")
    parser.add_argument("--rounds", type=int, default=8, help="worker pairs (default 8)")
    parser.add_argument("--reps", type=int, default=15, help="timed blocks per worker")
    args = parser.parse_args(argv)
    results = {"baseline": [], "dispatch": []}
    paths = {"baseline": args.baseline, "dispatch": args.dispatch}
    for r in range(args.rounds):
        order = ["baseline", "dispatch"] if r % 2 == 0 else ["dispatch", "baseline"]
        for name in order:
            results[name].append(run_worker(paths[name], args.reps))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"baseline: {results['baseline'][0]['simd_path']}")
    print(f"dispatch: {results['dispatch'][0]['simd_path']}")
    print(f"one thread; median over {args.rounds} workers per build of each worker's median "
          f"time per call ({args.reps} blocks of >= 20 ms)")
    print(f"{'kernel':44s} {'baseline':>11s} {'dispatch':>11s} {'speed-up':>9s}")
    for case in results["baseline"][0]["times"]:
        a = statistics.median(w["times"][case] for w in results["baseline"])
        b = statistics.median(w["times"][case] for w in results["dispatch"])
        print(f"{case:44s} {a * 1e6:9.1f}us {b * 1e6:9.1f}us {a / b:8.2f}x")


if __name__ == "__main__":
    main()
