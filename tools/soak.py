"""Soak run: ``fit`` for a while with a competing process starting and stopping, resident memory
sampled every few seconds and every step timed.

    python tools/soak.py --minutes 30 --json soak.json

Trains the command line's MLP (784-256-128-10, Adam) on Fashion-MNIST when the data is installed,
else on seeded random data of the same shape, epoch after epoch until the time is up. A second
process (a busy loop) runs for ``--busy-seconds`` then pauses as long, over and over, so the
machine is alternately quiet and loaded. Reports: resident memory (RSS) after the first epoch and
at the end, its growth per epoch (least squares over the epochs after the first), the median and
the maximum step time and their ratio (from a fixed histogram of every step after the first; the
tool's own records are preallocated so that they do not show up as growth). Exit status 1 if
memory grew by more than ``--max-growth-mib`` after the first epoch or a step took more than
``--max-step-ratio`` times the median.
"""
import argparse
import json
import multiprocessing as mp
import sys
import threading
import time

import numpy as np


def _rss_mib(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _busy(stop, busy_seconds):
    """Alternate busy_seconds of a spinning loop and busy_seconds of sleep until stop is set."""
    while not stop.is_set():
        end = time.perf_counter() + busy_seconds
        x = 0
        while time.perf_counter() < end and not stop.is_set():
            x += 1
        stop.wait(busy_seconds)


def _data():
    import fastnn

    try:
        (X, y), _ = fastnn.datasets.load_fashion_mnist()
        return X, y, "fashion-mnist"
    except (FileNotFoundError, OSError, ValueError):
        rng = np.random.default_rng(0)
        return (rng.random((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000),
                "random")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--busy-seconds", type=float, default=20.0)
    ap.add_argument("--sample-seconds", type=float, default=2.0)
    ap.add_argument("--max-growth-mib", type=float, default=16.0)
    ap.add_argument("--max-step-ratio", type=float, default=20.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import fastnn
    from fastnn import Callback, models

    fastnn.set_num_threads(args.threads)
    X, y, source = _data()
    model = models.mlp(seed=0).compile(fastnn.Adam(1e-3), fastnn.SoftmaxCrossEntropy())
    deadline = time.perf_counter() + args.minutes * 60.0
    # Everything the watcher records lives in arrays allocated (and touched) before training, so
    # the soak's own bookkeeping adds nothing to the resident memory it measures: step times go
    # into a fixed log-spaced histogram (1 us .. 100 s), one epoch's steps at a time.
    edges = np.logspace(-6, 2, 4001)
    hist = np.zeros(edges.size - 1, dtype=np.int64)
    per_epoch = -(-X.shape[0] // args.batch_size)
    epoch_steps = np.zeros(per_epoch)
    max_epochs = 1_000_000
    epoch_rss = np.zeros(max_epochs // 100)  # grown by doubling only if a run is that long
    samples = np.zeros((int(args.minutes * 60.0 / args.sample_seconds) + 64, 2))
    state = {"n_samples": 0, "epochs": 0, "step": 0, "steps": 0, "max": 0.0, "first": True}
    stop_sampling = threading.Event()

    def sample():
        t0 = time.perf_counter()
        while not stop_sampling.is_set() and state["n_samples"] < samples.shape[0]:
            samples[state["n_samples"]] = (time.perf_counter() - t0, _rss_mib())
            state["n_samples"] += 1
            stop_sampling.wait(args.sample_seconds)

    class Watch(Callback):
        def on_train_begin(self, logs=None):
            self.t = time.perf_counter()

        def on_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if state["first"]:  # the first step includes buffer allocation
                state["first"] = False
            else:
                epoch_steps[state["step"]] = now - self.t
                state["step"] += 1
            self.t = now
            if now > deadline:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            nonlocal epoch_rss
            done = epoch_steps[:state["step"]]
            hist[:] += np.histogram(done, bins=edges)[0]
            state["max"] = max(state["max"], float(done.max()) if done.size else 0.0)
            state["steps"] += done.size
            state["step"] = 0
            if state["epochs"] == epoch_rss.size:
                epoch_rss = np.concatenate([epoch_rss, np.zeros(epoch_rss.size)])
            epoch_rss[state["epochs"]] = _rss_mib()
            state["epochs"] += 1
            self.t = time.perf_counter()

    stop_busy = mp.Event()
    busy = mp.Process(target=_busy, args=(stop_busy, args.busy_seconds), daemon=True)
    busy.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        model.fit(X, y, epochs=10**6, batch_size=args.batch_size, verbose=0, callbacks=[Watch()])
    finally:
        stop_busy.set()
        stop_sampling.set()
        busy.join(timeout=5)
        sampler.join(timeout=5)
    epoch_rss = epoch_rss[:state["epochs"]]
    later = epoch_rss[1:]
    slope = float(np.polyfit(np.arange(later.size), later, 1)[0]) if later.size > 1 else 0.0
    centers = np.sqrt(edges[:-1] * edges[1:]) * 1e3  # ms
    median_ms = float(centers[np.searchsorted(np.cumsum(hist), (hist.sum() + 1) // 2)]) \
        if hist.sum() else None
    max_ms = state["max"] * 1e3
    summary = {
        "data": source, "minutes": args.minutes, "threads": args.threads,
        "epochs": int(state["epochs"]), "steps": int(state["steps"]),
        "rss_after_epoch_1_mib": round(float(epoch_rss[0]), 1) if epoch_rss.size else None,
        "rss_end_mib": round(_rss_mib(), 1),
        "rss_max_after_epoch_1_mib": round(float(later.max()), 1) if later.size else None,
        "rss_growth_per_epoch_mib": round(slope, 4),
        "step_median_ms": round(median_ms, 3) if median_ms else None,
        "step_max_ms": round(max_ms, 3) if median_ms else None,
    }
    if median_ms:
        summary["step_max_over_median"] = round(max_ms / median_ms, 2)
        summary["steps_over_20x_median"] = int(hist[centers > 20 * median_ms].sum())
    growth = float(later.max() - epoch_rss[0]) if later.size else 0.0
    summary["ok"] = bool(growth <= args.max_growth_mib
                         and summary.get("step_max_over_median", 0) <= args.max_step_ratio)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary, rss_samples=samples[:state["n_samples"]].round(1).tolist(),
                           epoch_rss_mib=epoch_rss.round(1).tolist(),
                           step_histogram_ms={"edges": (edges * 1e3).tolist(),
                                              "counts": hist.tolist()}), f)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
