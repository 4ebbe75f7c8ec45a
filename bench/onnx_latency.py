"""Inference latency: onnxruntime on fastnn's exported ONNX file vs fastnn ``model.predict``.

Run ``python bench/onnx_latency.py`` (needs ``pip install 'fastnn[onnx]'``); ``--help`` lists the
options. Nets: the MLP 784-256-128-10 (``fastnn.models.mlp``), the small Fashion-MNIST CNN
(``fastnn.models.small_cnn``) and the DQN of Mnih et al. 2015 (``fastnn.models.dqn(6)``, input
``(N, 84, 84, 4)``), all float32, weights from seed 0.

Method
------
* One worker process per (implementation, thread count), started with ``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to the thread count before anything is
  imported: ``fastnn`` (also ``fastnn.set_num_threads(n)``) and ``onnxruntime``
  (``SessionOptions.intra_op_num_threads = n``, ``inter_op_num_threads = 1``, sequential
  execution, the default graph optimisations ``ORT_ENABLE_ALL``, CPU execution provider).
* Both workers build the same model (same seed); the onnxruntime worker exports it with
  :func:`fastnn.onnx.export` (in memory) and checks once that the session's output equals
  ``model.predict``: reported, ``max |ort - predict| / max |predict|`` over the batch (the
  tests' criterion is 1e-5 relative plus an absolute 1e-6 of the largest output).
* Timed call, on one fixed random float32 batch: fastnn ``model.predict(X)`` (input checks and
  the returned array included), onnxruntime ``session.run(None, {"input": X})[0]`` (its input
  checks and returned array included).
* The two workers of a thread count are alive together but only one computes at a time: the
  driver sends them blocks in turn (A B, B A, ...: the order alternates every round), each block
  two untimed calls then calls timed one by one for about ``--block-seconds`` (at least 3), so
  slow drifts of a shared, noisy machine hit both alike. Reported: the median and the
  interquartile range over all timed calls, in ms, and the ratio of the medians from the same
  run (``fastnn / onnxruntime``: above 1, onnxruntime is faster).
* The 1-minute load average is printed at the start and the end (a load above ~2 on a 2-core
  machine makes 2-thread timings meaningless).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
IMPLS = ("fastnn", "onnxruntime")
NETS = ("mlp", "cnn", "dqn")


# ---- worker side ---------------------------------------------------------------------------------

def _make_model(net):
    import fastnn.models

    if net == "mlp":
        return fastnn.models.mlp(seed=0)
    if net == "cnn":
        return fastnn.models.small_cnn(seed=0)
    return fastnn.models.dqn(6, seed=0)


def _setup(impl, threads, net, batch):
    """The timed callable for ``impl`` and a dict of facts about it."""
    import numpy as np

    import fastnn

    fastnn.set_num_threads(threads)
    model = _make_model(net)
    X = np.random.default_rng(1).uniform(0, 1, (batch, *model.input_shape)).astype(np.float32)
    if impl == "fastnn":
        return (lambda: model.predict(X)), {}
    import onnxruntime as ort

    from fastnn.onnx import export

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(export(model, None).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": X})[0]
    ref = model.predict(X)
    err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    return (lambda: sess.run(None, {"input": X})[0]), {"max_error_vs_predict": err}


def _worker(impl, threads):
    """JSON lines on stdin/stdout: setup, run, quit (anything the libraries print goes to
    stderr)."""
    out = sys.stdout
    sys.stdout = sys.stderr
    step = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "setup":
                step, facts = _setup(impl, threads, req["net"], req["batch"])
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < req["warmup_s"]:  # warm-up
                    step()
                reply = {"ok": True, **facts}
            elif req["cmd"] == "run":
                for _ in range(2):
                    step()
                times = []
                end = time.perf_counter() + req["seconds"]
                while len(times) < 3 or time.perf_counter() < end:
                    t = time.perf_counter_ns()
                    step()
                    times.append(time.perf_counter_ns() - t)
                reply = {"ok": True, "times_ns": times}
            elif req["cmd"] == "info":
                import fastnn

                info = {"fastnn": fastnn.__version__}
                if impl == "onnxruntime":
                    import onnx
                    import onnxruntime

                    info.update(onnxruntime=onnxruntime.__version__, onnx=onnx.__version__)
                reply = {"ok": True, **info}
            else:
                reply = {"ok": True}
        except Exception as exc:  # reported to the driver, which stops
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if req["cmd"] == "quit":
            break


# ---- driver side ---------------------------------------------------------------------------------

class Worker:
    def __init__(self, impl, threads):
        env = dict(os.environ)
        for var in THREAD_VARS:
            env[var] = str(threads)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"]
                                         if env.get("PYTHONPATH") else "")
        self.impl = impl
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                      impl, str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT, text=True,
                                     bufsize=1)

    def request(self, cmd, **kwargs):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker exited with code {self.proc.wait()}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"{self.impl} worker: {reply['error']}")
        return reply

    def close(self):
        try:
            self.request("quit")
        finally:
            self.proc.wait(timeout=30)


def _quantiles(times_ns):
    import statistics

    ms = sorted(t / 1e6 for t in times_ns)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "q1_ms": q[0], "q3_ms": q[2], "calls": len(ms)}


def run(nets, batches, threads_list, rounds, block_seconds, warmup_seconds):
    rows, facts = [], {"loadavg_start": os.getloadavg(), "python": platform.python_version(),
                       "machine": platform.machine()}
    for threads in threads_list:
        workers = {impl: Worker(impl, threads) for impl in IMPLS}
        try:
            if "versions" not in facts:
                facts["versions"] = workers["onnxruntime"].request("info")
            for net in nets:
                for batch in batches:
                    extra = {}
                    for w in workers.values():
                        extra.update(w.request("setup", net=net, batch=batch,
                                               warmup_s=warmup_seconds))
                    times = {impl: [] for impl in IMPLS}
                    for r in range(rounds):
                        order = IMPLS if r % 2 == 0 else IMPLS[::-1]
                        for impl in order:
                            times[impl] += workers[impl].request(
                                "run", seconds=block_seconds)["times_ns"]
                    row = {"net": net, "batch": batch, "threads": threads, **extra}
                    for impl in IMPLS:
                        row[impl] = _quantiles(times[impl])
                    row["ratio_fastnn_over_ort"] = (row["fastnn"]["median_ms"]
                                                    / row["onnxruntime"]["median_ms"])
                    rows.append(row)
                    print(_format_row(row), flush=True)
        finally:
            for w in workers.values():
                w.close()
    facts["loadavg_end"] = os.getloadavg()
    return rows, facts


def _format_row(row):
    f, o = row["fastnn"], row["onnxruntime"]
    return (f"| {row['net']} | {row['batch']} | {row['threads']} | {f['median_ms']:.3f} "
            f"({f['q1_ms']:.3f}-{f['q3_ms']:.3f}) | {o['median_ms']:.3f} "
            f"({o['q1_ms']:.3f}-{o['q3_ms']:.3f}) | {row['ratio_fastnn_over_ort']:.2f} | "
            f"{row['max_error_vs_predict']:.1e} |")


HEADER = ("| net | batch | threads | fastnn predict ms (IQR) | onnxruntime ms (IQR) | "
          "fastnn / ort | max err / max out |\n|---|---|---|---|---|---|---|")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1], int(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default=",".join(NETS), help="comma-separated: mlp,cnn,dqn")
    p.add_argument("--batches", default="1,128", help="comma-separated batch sizes")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds of blocks")
    p.add_argument("--block-seconds", type=float, default=0.25)
    p.add_argument("--warmup-seconds", type=float, default=0.5)
    p.add_argument("--json", help="write the rows and facts to this JSON file")
    args = p.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    bad = sorted(set(nets) - set(NETS))
    if bad:
        p.error(f"unknown nets {bad}; choose from {', '.join(NETS)}")
    batches = [int(b) for b in args.batches.split(",") if b]
    threads = [int(t) for t in args.threads.split(",") if t]
    print(f"onnxruntime vs fastnn predict, float32; medians of {args.rounds} interleaved rounds "
          f"of ~{args.block_seconds} s blocks per implementation; 1-min load average "
          f"{os.getloadavg()[0]:.2f} at start")
    print(HEADER, flush=True)
    rows, facts = run(nets, batches, threads, args.rounds, args.block_seconds,
                      args.warmup_seconds)
    print(f"versions: {facts['versions']}; load average {facts['loadavg_start'][0]:.2f} at start, "
          f"{facts['loadavg_end'][0]:.2f} at end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "facts": facts}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
