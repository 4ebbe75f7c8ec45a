"""What the run-time SIMD dispatch (gcc target_clones in src_cython/simd.h) gains, measured.

Compares two builds of fastnn, one thread: both builds' extension modules are loaded into one
process and timed alternately, block by block (A B B A ...), so that both see the same machine
load; reports the median time per call of a few hot kernels and the ratio:

    # two in-place builds of the same checkout, the baseline one with FASTNN_NO_CLONES=1
    git clone . /tmp/fnn-clones && (cd /tmp/fnn-clones && python setup.py build_ext --inplace)
    git clone . /tmp/fnn-base
    (cd /tmp/fnn-base && FASTNN_NO_CLONES=1 python setup.py build_ext --inplace)
    python tools/dispatch_bench.py /tmp/fnn-base /tmp/fnn-clones

Each argument is a folder with a built ``fastnn/`` package (in-place build).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import importlib.machinery, importlib.util, glob, json, os, sys, time
import numpy as np

def load(folder, name):
    # each build's extension loaded under its own parent name: both live in one process, so the
    # two builds are timed alternately, block by block, under the same machine load
    path = glob.glob(os.path.join(folder, "fastnn", name + ".*so"))[0]
    loader = importlib.machinery.ExtensionFileLoader(f"{os.path.basename(folder)}.{name}", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module

folders = sys.argv[2:4]
mods = [{n: load(f, n) for n in ("_activations", "_losses", "_threads")} for f in folders]
rng = np.random.default_rng(0)

def act(kind, dtype, n=1_000_000):
    base = rng.standard_normal(n).astype(dtype) * 4
    Z = base.copy()
    def make(m):
        def run():
            Z[:] = base
            m["_activations"].forward_inplace(Z, kind, 0.0, 1)
        return run
    return make
def copy(dtype, n=1_000_000):
    base = rng.standard_normal(n).astype(dtype)
    Z = base.copy()
    def make(m):
        def run():
            Z[:] = base
        return run
    return make
def act_backward(kind, dtype, n=1_000_000):
    A = rng.random(n).astype(dtype)
    dA = rng.standard_normal(n).astype(dtype)
    dZ = np.empty_like(A)
    return lambda m: (lambda: m["_activations"].backward(A, dA, dZ, kind, 0.0, 1))
def sce(N, K, dtype):
    logits = rng.standard_normal((N, K)).astype(dtype) * 3
    labels = rng.integers(0, K, N).astype(np.int64)
    dlogits = np.empty_like(logits)
    row_loss = np.empty(N)
    return lambda m: (lambda: m["_losses"].softmax_cross_entropy(
        logits, labels, dlogits, row_loss, 1.0 / N, 1))

cases = {
    "copy 1e6 f32 (part of each forward case)": copy(np.float32),
    "sigmoid forward 1e6 f32": act(3, np.float32),
    "tanh forward 1e6 f32": act(4, np.float32),
    "relu forward 1e6 f32": act(1, np.float32),
    "sigmoid backward 1e6 f32": act_backward(3, np.float32),
    "softmax_cross_entropy (1024,10) f32": sce(1024, 10, np.float32),
    "softmax_cross_entropy (1024,100) f32": sce(1024, 100, np.float32),
    "sigmoid forward 1e6 f64": act(3, np.float64),
}
out = {"simd_path": [m["_threads"].simd_path() for m in mods], "times": {}}
for name, make in cases.items():
    fns = [make(m) for m in mods]
    for fn in fns:
        for _ in range(5):
            fn()
    t0 = time.perf_counter(); k = 0
    while time.perf_counter() - t0 < 0.01:
        fns[0](); k += 1
    samples = ([], [])
    for rep in range(int(sys.argv[1])):
        for i in ((0, 1) if rep % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            for _ in range(k):
                fns[i]()
            samples[i].append((time.perf_counter() - t) / k)
    out["times"][name] = [sorted(s)[len(s) // 2] for s in samples]
print(json.dumps(out))
"""


def run_worker(baseline, dispatch, reps):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", WORKER, str(reps), baseline, dispatch], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="folder with a FASTNN_NO_CLONES=1 build")
    parser.add_argument("dispatch", help="folder with the normal (target_clones) build")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--reps", type=int, default=41, help="timed blocks per build and kernel")
    args = parser.parse_args(argv)
    runs = []
    for w in range(args.workers):
        runs.append(run_worker(os.path.abspath(args.baseline), os.path.abspath(args.dispatch),
                               args.reps))
        print(f"worker {w + 1}/{args.workers} done", file=sys.stderr, flush=True)
    print(f"baseline: {args.baseline}: {runs[0]['simd_path'][0]}")
    print(f"dispatch: {args.dispatch}: {runs[0]['simd_path'][1]}")
    print(f"one thread; both builds loaded in one process and timed alternately; median time per "
          f"call over {args.reps} blocks of >= 10 ms, median over {args.workers} processes")
    print(f"{'kernel':44s} {'baseline':>11s} {'dispatch':>11s} {'speed-up':>9s}")
    for case in runs[0]["times"]:
        a = statistics.median(r["times"][case][0] for r in runs)
        b = statistics.median(r["times"][case][1] for r in runs)
        ratio = statistics.median(r["times"][case][0] / r["times"][case][1] for r in runs)
        print(f"{case:44s} {a * 1e6:9.1f}us {b * 1e6:9.1f}us {ratio:8.2f}x")


if __name__ == "__main__":
    main()
