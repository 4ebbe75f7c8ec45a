"""Soak run: ``fit`` for a while with a competing process starting and stopping, resident memory
sampled every few seconds and every step timed.

    python tools/soak.py --minutes 30 --json soak.json

Trains the command line's MLP (784-256-128-10, Adam) on Fashion-MNIST when the data is installed,
else on seeded random data of the same shape, epoch after epoch until the time is up. A second
process (a busy loop) runs for ``--busy-seconds`` then pauses as long, over and over, so the
machine is alternately quiet and loaded. Reports: resident memory (RSS) after the first epoch and
at the end, its growth per epoch (least squares over the epochs after the first), the median and
the maximum step time and their ratio. Exit status 1 if memory grew by more than
``--max-growth-mib`` after the first epoch or a step took more than ``--max-step-ratio`` times the
median.
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
    steps, epoch_rss, samples = [], [], []
    stop_sampling = threading.Event()

    def sample():
        t0 = time.perf_counter()
        while not stop_sampling.is_set():
            samples.append((round(time.perf_counter() - t0, 1), round(_rss_mib(), 1)))
            stop_sampling.wait(args.sample_seconds)

    class Watch(Callback):
        def on_train_begin(self, logs=None):
            self.t = time.perf_counter()

        def on_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            steps.append(now - self.t)
            self.t = now
            if now > deadline:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            epoch_rss.append(_rss_mib())
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
    steps_ms = np.array(steps[1:]) * 1e3  # the first step includes buffer allocation
    later = np.array(epoch_rss[1:])
    slope = float(np.polyfit(np.arange(len(later)), later, 1)[0]) if len(later) > 1 else 0.0
    summary = {
        "data": source, "minutes": args.minutes, "threads": args.threads,
        "epochs": len(epoch_rss), "steps": int(steps_ms.size),
        "rss_after_epoch_1_mib": round(epoch_rss[0], 1) if epoch_rss else None,
        "rss_end_mib": round(_rss_mib(), 1),
        "rss_max_after_epoch_1_mib": round(float(later.max()), 1) if later.size else None,
        "rss_growth_per_epoch_mib": round(slope, 4),
        "step_median_ms": round(float(np.median(steps_ms)), 3) if steps_ms.size else None,
        "step_max_ms": round(float(steps_ms.max()), 3) if steps_ms.size else None,
    }
    if steps_ms.size:
        summary["step_max_over_median"] = round(summary["step_max_ms"]
                                                / summary["step_median_ms"], 2)
    growth = (summary["rss_max_after_epoch_1_mib"] or 0) - (summary["rss_after_epoch_1_mib"]
                                                           or 0)
    summary["ok"] = bool(growth <= args.max_growth_mib
                         and summary.get("step_max_over_median", 0) <= args.max_step_ratio)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary, rss_samples=samples, epoch_rss_mib=epoch_rss), f)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
