"""Data-parallel training on MPI against threads: ``mpirun -n 2`` x 1 thread vs 1 process x 2
threads (and 1 process x 1 thread), training steps per second of the MLP and the small CNN at
several global batch sizes, and the time of one ``Allreduce`` of each model's gradient buffer.

Run it under the shared benchmark lock, from the repository root::

    flock /tmp/fastnn-bench.lock python bench/mpi.py --rounds 3

Each measurement is a fresh launch (``mpirun -n 2 --bind-to core python bench/mpi.py --worker``
or ``python bench/mpi.py --worker``), the variants interleaved round by round (A B C, B C A, ...);
a launch trains ``--steps`` steps per epoch on random data with ``fastnn.distributed.fit`` (the
MPI variant) or ``model.fit`` (one process), one warm-up epoch then ``--epochs`` timed epochs,
and reports the median epoch. The table gives the medians over the rounds; ratios are of those
medians. The MPI launches also time ``--allreduce-reps`` in-place Allreduces of each model's
flat gradient buffer (the DQN's too) and report the median.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("mlp", "cnn")
VARIANTS = {"2 ranks x 1 thread": ("mpi", 2, 1), "1 process x 2 threads": ("one", 1, 2),
            "1 process x 1 thread": ("one", 1, 1)}


def build(kind):
    import fastnn
    from fastnn import cli

    model = cli.build_model(kind, "float32", seed=0)
    model.compile(fastnn.Adam(1e-3 if kind != "dqn" else 1e-4),
                  "mse" if kind == "dqn" else fastnn.SoftmaxCrossEntropy())
    return model


def worker(args):
    import numpy as np

    import fastnn

    fastnn.set_num_threads(args.threads)
    rank, comm = 0, None
    if args.mpi:
        from mpi4py import MPI

        from fastnn import distributed

        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
    out = {"model": args.model, "threads": args.threads, "ranks": comm.Get_size() if comm else 1,
           "steps_per_s": {}}
    rng = np.random.default_rng(0)
    for batch in args.batches:
        model = build(args.model)
        n = batch * args.steps
        X = rng.random((n,) + tuple(model.input_shape), dtype=np.float32)
        y = rng.integers(0, 10, n)
        times = []
        for e in range(args.epochs + 1):
            if comm is not None:
                comm.Barrier()
            t0 = time.perf_counter()
            if comm is not None:
                distributed.fit(model, X, y, epochs=1, batch_size=batch, verbose=0, seed=e,
                                comm=comm)
            else:
                model.fit(X, y, epochs=1, batch_size=batch, verbose=0, seed=e)
            times.append(time.perf_counter() - t0)
        out["steps_per_s"][batch] = args.steps / statistics.median(times[1:])
    if comm is not None:
        out["allreduce_ms"], out["grad_bytes"] = {}, {}
        for kind in ("mlp", "cnn", "dqn"):
            grads = build(kind)._params.grads
            grads[:] = 1.0
            reps = []
            for _ in range(args.allreduce_reps):
                comm.Barrier()
                t0 = time.perf_counter()
                comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
                reps.append(time.perf_counter() - t0)
            out["allreduce_ms"][kind] = 1e3 * statistics.median(reps)
            out.setdefault("allreduce_min_ms", {})[kind] = 1e3 * min(reps)
            out["grad_bytes"][kind] = int(grads.nbytes)
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def launch(variant, model, args):
    kind, ranks, threads = VARIANTS[variant]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model, "--threads",
           str(threads), "--steps", str(args.steps), "--epochs", str(args.epochs),
           "--batches"] + [str(b) for b in args.batches]
    env = dict(os.environ, PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    env.pop("OMP_NUM_THREADS", None)
    if kind == "mpi":
        cmd = ["mpirun", "-n", str(ranks), "--bind-to", "core"] + cmd + [
            "--mpi", "--allreduce-reps", str(args.allreduce_reps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per launch")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--allreduce-reps", type=int, default=50)
    p.add_argument("--json", default=None, help="also write the raw results here")
    # internal
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="mlp", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    names = list(VARIANTS)
    raw = {m: {v: [] for v in names} for m in args.models}
    t_start = time.time()
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for model in args.models:
            for v in order:
                res = launch(v, model, args)
                raw[model][v].append(res)
                print(f"round {r + 1} {model} {v}: " + ", ".join(
                    f"B={b} {s:.1f}/s" for b, s in res["steps_per_s"].items()),
                    file=sys.stderr, flush=True)
    print(f"fastnn MPI bench: {args.rounds} rounds, {args.steps} steps x {args.epochs} timed "
          f"epochs per launch, medians; {time.time() - t_start:.0f} s; "
          f"{os.cpu_count()} CPUs")
    print()
    print("| model | global batch | " + " | ".join(f"{v} steps/s" for v in names)
          + " | 2 ranks / 2 threads | 2 ranks / 1 thread |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for model in args.models:
        for b in args.batches:
            med = {v: statistics.median(x["steps_per_s"][str(b)] for x in raw[model][v])
                   for v in names}
            print(f"| {model} | {b} | " + " | ".join(f"{med[v]:.1f}" for v in names)
                  + f" | {med[names[0]] / med[names[1]]:.2f} | "
                  f"{med[names[0]] / med[names[2]]:.2f} |")
    print()
    allr = [x for m in args.models for x in raw[m][names[0]]]
    print("| gradient buffer | bytes | one Allreduce, ms (median) | fastest, ms | GB/s (fastest, "
          "2(p-1)/p x bytes) |")
    print("|---|---|---|---|---|")
    for kind in ("mlp", "cnn", "dqn"):
        ms = statistics.median(x["allreduce_ms"][kind] for x in allr)
        fast = min(x["allreduce_min_ms"][kind] for x in allr)
        nbytes = allr[0]["grad_bytes"][kind]
        print(f"| {kind} | {nbytes:,} | {ms:.3f} | {fast:.3f} | {nbytes / fast / 1e6:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
