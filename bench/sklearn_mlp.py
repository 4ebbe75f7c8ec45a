"""fastnn.sklearn.MLPClassifier vs scikit-learn's MLPClassifier on Fashion-MNIST (issue 16).

Same estimator settings for both: ``hidden_layer_sizes=(256, 128)``, relu, adam, batch 200,
``max_iter=10`` epochs, ``early_stopping=False``, ``tol=1e-12`` (nothing stops early),
``random_state=0``; the 60,000 training images as float32 in [0, 1] (scikit-learn then trains in
float32 too; ``--sklearn-float64`` adds scikit-learn on float64 input, its usual dtype). Each
fit runs in its own process (``--worker``), the implementations interleaved (A B A B ...) for
``--reps`` rounds at each thread count; fastnn's threads by ``n_threads`` (an upper bound: fit
runs at the faster of it and 1 thread), scikit-learn's (its BLAS) by
``threadpoolctl.threadpool_limits``. Prints fit seconds (median over the rounds) and test
accuracy, and the ratio sklearn/fastnn of fit seconds; writes the rows to ``--json``.

    flock /tmp/fastnn-bench.lock python -m bench.sklearn_mlp --reps 3 --threads 1,2

``--auto`` adds fastnn with ``n_threads=None`` (``OMP_NUM_THREADS`` = the thread count), fastnn's
default count.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(hidden_layer_sizes=(256, 128), batch_size=200, max_iter=10, early_stopping=False,
                tol=1e-12, random_state=0)


def worker(impl: str, threads: int) -> dict:
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    import fastnn

    warnings.simplefilter("ignore", ConvergenceWarning)
    (X, y), (Xt, yt) = fastnn.datasets.load_fashion_mnist()
    if impl == "sklearn64":
        X, Xt = X.astype(np.float64), Xt.astype(np.float64)
    if impl in ("fastnn", "fastnn-auto"):
        from fastnn.sklearn import MLPClassifier
        # fastnn-auto: n_threads=None, fastnn's default count (OMP_NUM_THREADS=threads, set by
        # the driver)
        clf = MLPClassifier(n_threads=threads if impl == "fastnn" else None, **SETTINGS)
        t0 = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - t0
        acc = clf.score(Xt, yt)
    else:
        from sklearn.neural_network import MLPClassifier as SkMLP
        clf = SkMLP(**SETTINGS)
        with threadpool_limits(limits=threads, user_api="blas"):
            t0 = time.perf_counter()
            clf.fit(X, y)
            seconds = time.perf_counter() - t0
            acc = clf.score(Xt, yt)
    return {"impl": impl, "threads": threads, "seconds": seconds, "accuracy": float(acc),
            "epochs": clf.n_iter_, "final_loss": float(clf.loss_curve_[-1]),
            "dtype": str(X.dtype)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--sklearn-float64", action="store_true",
                    help="also scikit-learn on float64 input")
    ap.add_argument("--auto", action="store_true",
                    help="also fastnn with n_threads=None (its default and thread tuning)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "sklearn_mlp.json"))
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    impls = ["fastnn", "sklearn"] + (["sklearn64"] if args.sklearn_float64 else [])
    if args.auto:
        impls.insert(1, "fastnn-auto")
    threads = [int(t) for t in args.threads.split(",")]
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    rows: list[dict] = []
    for rep in range(args.reps):
        for t in threads:
            order = impls if rep % 2 == 0 else impls[::-1]
            for impl in order:
                wenv = dict(env, OMP_NUM_THREADS=str(t)) if impl == "fastnn-auto" else env
                load = os.getloadavg()[0]
                out = subprocess.run([sys.executable, "-m", "bench.sklearn_mlp", "--worker",
                                      impl, str(t)], cwd=ROOT, env=wenv, check=True,
                                     capture_output=True, text=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                row["rep"] = rep
                row["load_before"] = load
                rows.append(row)
                print(f"rep {rep} {impl:11s} {t} threads: {row['seconds']:7.2f} s, test "
                      f"accuracy {row['accuracy']:.4f} (load {load:.2f})", flush=True)
    lines = ["| threads | implementation | input | fit s (median) | fit s (all) | test accuracy "
             "(median) | sklearn/fastnn |", "|---:|---|---|---:|---|---:|---:|"]
    for t in threads:
        med = {}
        for impl in impls:
            rs = [r for r in rows if r["impl"] == impl and r["threads"] == t]
            if not rs:
                continue
            med[impl] = statistics.median(r["seconds"] for r in rs)
            acc = statistics.median(r["accuracy"] for r in rs)
            ratio = f"{med[impl] / med['fastnn']:.2f}"
            each = ", ".join(f"{r['seconds']:.1f}" for r in rs)
            lines.append(f"| {t} | {impl} | {rs[0]['dtype']} | {med[impl]:.2f} | {each} | "
                         f"{acc * 100:.2f}% | {ratio} |")
    table = "\n".join(lines)
    print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"settings": {k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in SETTINGS.items()},
                                           "rows": rows, "table": table,
                                           "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
