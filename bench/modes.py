"""The bench's two whole-run modes (``python -m bench --epoch`` and ``python -m bench --busy``).

``--epoch``: end to end. One Fashion-MNIST training epoch (batch 128, the 59,904 samples of full
batches; a seeded shuffle and per-batch gathering included) of the MLP and the small CNN:
fastnn's ``model.fit(epochs=1)`` against the loop a NumPy user writes (``bench.numpy_net``) and
the loop a PyTorch user writes without a DataLoader (``bench.torch_net``), each in its own worker
process, interleaved (:func:`bench.run.bench_threads`), seconds per epoch (median of the rounds).

``--busy``: a machine with one other busy process. The bench starts a pure-Python process that
spins (``while True: pass``) for the whole mode and stops it at the end; meanwhile each
configuration trains for a few seconds in a fresh process and counts its steps: fastnn ``fit``
(MLP and small CNN, batch 128) at the default thread count (which lets ``fit`` choose between
it and one thread, :class:`fastnn._config.ThreadTuner`) and fixed at one thread; PyTorch's
train loop at its default count and at one thread, when torch is importable. The same runs
without the competing process are the reference. Steps per second, median of the rounds.
"""
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

from .models import MODELS

BUSY_SECONDS = 8.0
BUSY_ROUNDS = 3
BUSY_BATCH = 128
BATCH_NOTE = f"{BUSY_BATCH}; fastnn: model.fit, PyTorch: its train step in a loop"


# ---- --epoch ---------------------------------------------------------------------------------

def run_epoch(args):
    from .run import (IMPLEMENTATIONS, OPT_IN, ROOFLINE, bench_threads, log, machine_facts)

    impls = args.impls or [i for i, pkg in IMPLEMENTATIONS.items()
                           if i != ROOFLINE and i not in OPT_IN
                           and importlib.util.find_spec(pkg) is not None]
    impls = [i for i in impls if i != ROOFLINE]
    nets = [n for n in args.nets if MODELS[n]["loss"] != "mse"]
    threads = args.threads or [1, 2]
    prof = dict(rounds=args.rounds or 2, warmup_seconds=0.0, warmup_min=0, profile_seconds=0.0,
                block_seconds=0.0, predict_block_seconds=0.0, profile_chunks=1)
    facts = machine_facts()
    rows, errors = [], {}
    for net in nets:
        for t in threads:
            log(f"epoch: {net}, {t} thread(s), {', '.join(impls)}")
            res, _, _, errs = bench_threads(impls, t, MODELS[net], [("epoch", 128)], prof,
                                            args.seed)
            for r in res:
                r["net"] = net
            rows += res
            errors.update({f"{net} {i} ({t} threads)": e for i, e in errs.items()})
    real = [i for i in impls if any(r["impl"] == i for r in rows)]
    head = (["net", "threads"] + [f"{i} s" for i in real]
            + [f"{i}/fastnn" for i in real if i != "fastnn"] + ["fastnn GFLOP/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for net in nets:
        for t in threads:
            by = {r["impl"]: r for r in rows if r["net"] == net and r["threads"] == t}
            if "fastnn" not in by:
                continue
            f = by["fastnn"]["median_ms"]
            cells = [net, str(t)] + [f"{by[i]['median_ms'] / 1e3:.3f}" if i in by else "-"
                                     for i in real]
            cells += [f"{by[i]['median_ms'] / f:.2f}" if i in by else "-"
                      for i in real if i != "fastnn"]
            cells.append(f"{by['fastnn']['gflops']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    print(f"\n## End to end: one Fashion-MNIST epoch (59,904 samples, batch 128), seconds, median "
          f"of {prof['rounds']} epochs per implementation, interleaved; ratio > 1: fastnn "
          f"faster; {facts.get('cpu_model')}\n")
    print("\n".join(lines))
    _write(args, "epoch", {"mode": "epoch", "machine": facts, "results": rows,
                           "errors": errors})
    for k, e in errors.items():
        print(f"error: {k}: {e}", file=sys.stderr)
    return 1 if errors else 0


# ---- --busy ----------------------------------------------------------------------------------

def _busy_env(threads):
    from .run import BLAS_GUARD_VARS, THREAD_VARS

    env = dict(os.environ)
    for var in BLAS_GUARD_VARS + THREAD_VARS:
        env.pop(var, None)
    if threads != "default":
        for var in THREAD_VARS:
            env[var] = str(threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _busy_run(impl, net, threads, seconds):
    out = subprocess.run(
        [sys.executable, "-m", "bench.modes", "busy-worker", impl, net, str(threads),
         str(seconds)], env=_busy_env(threads), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} {net} {threads}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_worker(impl, net, threads, seconds):
    """Train ``net`` for about ``seconds``; print {"steps": n, "seconds": s, ...} as JSON."""
    import numpy as np

    spec = MODELS[net]
    seconds = float(seconds)
    if impl == "fastnn":
        import fastnn

        from .fastnn_net import make_model
        from .numpy_net import make_data

        if threads != "default":
            fastnn.set_num_threads(int(threads))
        X, y = make_data(spec, BUSY_BATCH * 200, 0, np.float32)
        model = make_model(spec, seed=0)
        model.train_on_batch(X[:BUSY_BATCH], y[:BUSY_BATCH])  # warm-up
        state = {"steps": 0}

        class StopAfter(fastnn.callbacks.Callback):
            def on_batch_end(self, batch, logs=None):
                state["steps"] += 1
                if time.perf_counter() - t0 >= seconds:
                    self.model.stop_training = True

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.fit(X, y, epochs=1, batch_size=BUSY_BATCH, verbose=0, callbacks=[StopAfter()])
        elapsed = time.perf_counter() - t0
        steps = state["steps"]
    else:
        import torch

        from .torch_net import build, configure_threads

        if threads != "default":
            configure_threads(int(threads))
        step = build(spec, BUSY_BATCH, seed=0)
        step()
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            steps += 1
        elapsed = time.perf_counter() - t0
        threads = f"{threads} ({torch.get_num_threads()})"
    print(json.dumps({"impl": impl, "net": net, "threads": threads, "steps": steps,
                      "seconds": elapsed}))


def run_busy(args):
    from .run import log, machine_facts

    facts = machine_facts()
    impls = ["fastnn"] + (["torch"] if importlib.util.find_spec("torch") else [])
    # the MLP unless --nets names the CNN too (8 s per run: 4 configurations x rounds x 2)
    nets = [n for n in args.nets if n in ("mlp", "cnn")] if args.nets_given else ["mlp"]
    nets = nets or ["mlp"]
    configs = [(i, n, t) for n in nets for i in impls for t in ("default", 1)]
    rounds = args.rounds or BUSY_ROUNDS
    rate = {(c, busy): [] for c in configs for busy in (False, True)}
    for busy in (False, True):
        spinner = None
        if busy:
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        try:
            for r in range(rounds):
                for c in configs[r % len(configs):] + configs[:r % len(configs)]:
                    res = _busy_run(*c, BUSY_SECONDS)
                    rate[(c, busy)].append(res["steps"] / res["seconds"])
                    log(f"busy={busy} {c}: {res['steps']} steps in {res['seconds']:.2f} s")
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    lines = ["| net | library | threads | idle steps/s | busy steps/s | busy: default / 1 thread |",
             "|---|---|---|---:|---:|---:|"]
    rows = []
    for (impl, net, t) in configs:
        idle = statistics.median(rate[((impl, net, t), False)])
        busy = statistics.median(rate[((impl, net, t), True)])
        one = statistics.median(rate[((impl, net, 1), True)])
        ratio = f"{busy / one:.2f}" if t == "default" else ""
        lines.append(f"| {net} | {impl} | {t} | {idle:.0f} | {busy:.0f} | {ratio} |")
        rows.append({"impl": impl, "net": net, "threads": t, "idle_steps_per_s": idle,
                     "busy_steps_per_s": busy})
    print(f"\n## Busy machine: train steps per second (batch {BATCH_NOTE}), median of {rounds} "
          f"runs of {BUSY_SECONDS:.0f} s each, with and without one competing pure-Python "
          f"process; {facts.get('cpu_model')}, {facts.get('cpu_count')} CPUs\n")
    print("\n".join(lines))
    _write(args, "busy", {"mode": "busy", "machine": facts, "results": rows})
    return 0


def _write(args, name, payload):
    if getattr(args, "no_json", False):
        return
    out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
    print(f"wrote {path}", file=sys.stderr)


def main(args):
    return run_epoch(args) if args.epoch else run_busy(args)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "busy-worker":
        busy_worker(*sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.modes busy-worker IMPL NET THREADS SECONDS")
