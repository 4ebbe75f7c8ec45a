"""Train-step benchmark: fastnn vs a pure-NumPy baseline (vs PyTorch when importable).

Run ``python -m bench`` (or ``python bench/run.py``); ``--help`` lists the options.

Method
------
* One worker process per (implementation, thread count), started with ``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set before anything is imported (fastnn also
  gets ``fastnn.set_num_threads(n)``, PyTorch ``torch.set_num_threads(n)``).
* The workers of one thread count are alive together but only one computes at a time: the
  driver sends them blocks of steps in turn, A B, B A, A B, ... (the order rotates every round),
  so slow drifts of a shared, noisy machine hit every implementation alike.
* Per batch size: each worker warms up, then each block runs a couple of untimed steps and then
  steps timed one by one for about ``--block-seconds`` (at least 3), so the run's length does
  not grow with a loaded machine's slow outliers.
  Reported: median and interquartile range (IQR) over all timed steps, ms per train step, and the
  ratio of medians from the same run.
* A train step is forward + softmax cross-entropy loss + backward + SGD (momentum 0.9) update,
  float32, on one fixed random batch. Useful FLOPs count only the dense layers' matmuls:
  forward 2NKM, backward 4NKM (2NKM for the first layer, which skips dX).
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.models import MODELS, train_step_flops  # noqa: E402
else:
    from .models import MODELS, train_step_flops

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
REFERENCE = "fastnn"
#: implementation name -> the top-level package it needs (checked without importing it)
IMPLEMENTATIONS = {"numpy": "numpy", "fastnn": "fastnn", "torch": "torch"}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

PROFILES = {
    # name: batches, threads, seconds per block, rounds, warm-up seconds and minimum steps
    "default": dict(batches=[32, 64, 128, 256], threads=[1, 2], block_seconds=0.25, rounds=16,
                    warmup_seconds=0.5, warmup_min=10),
    "quick": dict(batches=[32, 64, 128, 256], threads=[1, 2], block_seconds=0.05, rounds=6,
                  warmup_seconds=0.2, warmup_min=5),
    "smoke": dict(batches=[32, 128], threads=[1, 2], block_seconds=0.02, rounds=3,
                  warmup_seconds=0.05, warmup_min=2),
}


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    """A ``bench._worker`` subprocess and its JSON-lines pipe."""

    def __init__(self, impl, threads):
        self.impl, self.threads = impl, threads
        env = dict(os.environ)
        for var in THREAD_VARS:
            env[var] = str(threads)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"]
                                         if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._worker", impl, str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT, text=True,
            bufsize=1)

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(f"{self.impl} worker ({self.threads} threads) exited with code "
                              f"{code}; its stderr is above")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise WorkerError(f"{self.impl} worker ({self.threads} threads): {reply['error']}\n"
                              f"{reply.get('traceback', '')}")
        return reply

    def hello(self):
        return self._read()

    def request(self, cmd, **kwargs):
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read reports the exit
        return self._read()

    def cpu_ticks(self):
        """CPU time used so far by all the worker's threads, in clock ticks (None if unknown)."""
        try:
            total = 0
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            return total
        except (OSError, IndexError, ValueError):
            return None

    def settle(self, window=0.03, limit=0.5):
        """Wait until this worker's threads stop using CPU, up to ``limit`` seconds.

        After a block, OpenBLAS's pthreads spin for ~0.1 s and OpenMP threads briefly too: on a
        machine with few cores that would steal a core from the next worker's block.
        Returns the seconds waited.
        """
        t0 = time.perf_counter()
        before = self.cpu_ticks()
        if before is None:
            time.sleep(0.15)
            return time.perf_counter() - t0
        while time.perf_counter() - t0 < limit:
            time.sleep(window)
            now = self.cpu_ticks()
            if now == before:
                break
            before = now
        return time.perf_counter() - t0

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()


def quantiles(values):
    """(q1, median, q3) with linear interpolation, like numpy.percentile's default."""
    v = sorted(values)
    n = len(v)

    def q(p):
        x = p * (n - 1)
        i = int(x)
        j = min(i + 1, n - 1)
        return v[i] + (v[j] - v[i]) * (x - i)

    return q(0.25), q(0.5), q(0.75)


def machine_facts():
    facts = {"platform": platform.platform(), "python": platform.python_version(),
             "cpu_count": os.cpu_count(), "executable": sys.executable}
    try:
        facts["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        for line in info.splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in info.splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                facts["simd_flags"] = [f for f in flags if f.startswith(("avx", "fma", "sse4"))]
                break
    except OSError:
        facts["cpu_model"] = platform.processor() or "unknown"
    try:
        facts["loadavg_start"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    try:
        facts["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        facts["git_commit"] = None
    return facts


def _load(facts, key):
    value = facts.get(key)
    return f"{value[0]:.2f}" if value else "?"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def bench_threads(impls, threads, spec, batches, prof, seed):
    """Benchmark every implementation at one thread count; returns (results, workers_info, errors)."""
    results, infos, errors = [], {}, {}
    workers = {}
    for impl in impls:  # start them all: imports overlap, computing never does
        workers[impl] = WorkerProcess(impl, threads)
    try:
        for impl in list(workers):
            try:
                workers[impl].hello()
            except WorkerError as exc:
                errors[impl] = str(exc)
                workers.pop(impl).close()
        for batch in batches:
            flops = train_step_flops(spec, batch)
            setups = {}
            for impl in list(workers):
                try:
                    setups[impl] = workers[impl].request(
                        "setup", spec=spec, batch=batch, seed=seed,
                        warmup_s=prof["warmup_seconds"], warmup_min=prof["warmup_min"])
                except WorkerError as exc:
                    errors[impl] = str(exc)
                    workers.pop(impl).close()
                    continue
                if threads > 1:
                    workers[impl].settle()
            samples = {impl: [] for impl in workers}
            block_medians = {impl: [] for impl in workers}
            losses = {}
            settle_s = 0.0
            order = list(workers)
            for r in range(prof["rounds"]):
                k = r % len(order) if order else 0
                for impl in order[k:] + order[:k]:
                    if impl not in workers:
                        continue
                    try:
                        reply = workers[impl].request("run", seconds=prof["block_seconds"], pre=2)
                    except WorkerError as exc:
                        errors[impl] = str(exc)
                        workers.pop(impl).close()
                        continue
                    if threads > 1:  # let its helper threads go to sleep before the next block
                        settle_s += workers[impl].settle()
                    ms = [t / 1e6 for t in reply["times_ns"]]
                    samples[impl] += ms
                    block_medians[impl].append(quantiles(ms)[1])
                    losses[impl] = reply["loss"]
            for impl in workers:
                q1, med, q3 = quantiles(samples[impl])
                results.append({
                    "batch": batch, "threads": threads, "impl": impl,
                    "median_ms": med, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1,
                    "min_ms": min(samples[impl]), "n_steps": len(samples[impl]),
                    "n_blocks": len(block_medians[impl]), 
                    "block_medians_ms": block_medians[impl],
                    "useful_flops": flops, "gflops": flops / (med * 1e-3) / 1e9,
                    "loss_first": setups[impl]["loss_first"], "loss_last": losses[impl],
                    "settle_s_all_impls": settle_s,
                })
                log(f"  batch {batch:4d} threads {threads}  {impl:7s} "
                    f"{med:8.3f} ms  (IQR {q3 - q1:.3f}, {len(samples[impl])} steps)")
        for impl, w in workers.items():
            try:
                infos[impl] = w.request("info")
            except WorkerError as exc:
                errors[impl] = str(exc)
    finally:
        for w in workers.values():
            w.close()
    return results, infos, errors


def add_ratios(results, impls):
    """Per (batch, threads): ratio of each implementation's median to the reference's."""
    rows = {}
    for r in results:
        rows.setdefault((r["batch"], r["threads"]), {})[r["impl"]] = r
    ratios = []
    for (batch, threads), by_impl in sorted(rows.items()):
        ref = by_impl.get(REFERENCE)
        if ref is None:
            continue
        for impl in impls:
            if impl == REFERENCE or impl not in by_impl:
                continue
            other = by_impl[impl]
            paired = [a / b for a, b in zip(other["block_medians_ms"], ref["block_medians_ms"])]
            q1, med, q3 = quantiles(paired) if paired else (None, None, None)
            ratios.append({"batch": batch, "threads": threads, "impl": impl,
                           "reference": REFERENCE,
                           "ratio_of_medians": other["median_ms"] / ref["median_ms"],
                           "per_round_ratio_q1": q1, "per_round_ratio_median": med,
                           "per_round_ratio_q3": q3})
    return ratios


def format_table(results, impls):
    """Markdown table: one row per (batch, threads), median (IQR) ms per implementation."""
    rows = {}
    for r in results:
        rows.setdefault((r["batch"], r["threads"]), {})[r["impl"]] = r
    present = [i for i in impls if any(i in v for v in rows.values())]
    others = [i for i in present if i != REFERENCE]
    ref = REFERENCE if REFERENCE in present else None
    head = ["batch", "threads"] + [f"{i} ms" for i in others]
    if ref:
        head += [f"{ref} ms"] + [f"{i}/{ref}" for i in others] + [f"{ref} GFLOP/s"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" for _ in head) + "|"]
    for (batch, threads), by_impl in sorted(rows.items()):

        def cell(impl):
            r = by_impl.get(impl)
            return f"{r['median_ms']:.3f} ({r['iqr_ms']:.3f})" if r else "n/a"

        cells = [str(batch), str(threads)] + [cell(i) for i in others]
        if ref:
            rr = by_impl.get(ref)
            cells.append(cell(ref))
            for i in others:
                o = by_impl.get(i)
                cells.append(f"{o['median_ms'] / rr['median_ms']:.2f}" if (o and rr) else "n/a")
            cells.append(f"{rr['gflops']:.1f}" if rr else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Train-step benchmark of fastnn against a pure-NumPy baseline "
                    "(and PyTorch when importable). Table to stdout, JSON to bench/results/.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="fewer, shorter repetitions (about 30 s)")
    mode.add_argument("--smoke", action="store_true",
                      help="minimal run that checks everything works (< 20 s); numbers are rough")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")],
                   help="comma-separated batch sizes (default 32,64,128,256)")
    p.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")],
                   help="comma-separated thread counts (default 1,2)")
    p.add_argument("--impls", type=lambda s: [x for x in s.split(",") if x],
                   help="comma-separated implementations among "
                        f"{','.join(IMPLEMENTATIONS)} (default: all that are importable)")
    p.add_argument("--block-seconds", type=float, help="target duration of one timed block")
    p.add_argument("--rounds", type=int, help="number of interleaved rounds of blocks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON output path (default bench/results/<model>.json; "
                                 "--quick: <model>-quick.json; --smoke: none)")
    p.add_argument("--no-json", action="store_true", help="do not write the JSON file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    profile = "smoke" if args.smoke else "quick" if args.quick else "default"
    prof = dict(PROFILES[profile])
    for key in ("batches", "threads", "block_seconds", "rounds"):
        if getattr(args, key) is not None:
            prof[key] = getattr(args, key)
    if any(b < 1 for b in prof["batches"]) or any(t < 1 for t in prof["threads"]):
        sys.exit("batch sizes and thread counts must be >= 1")
    spec = MODELS[args.model]

    skipped = {}
    if args.impls:
        unknown = [i for i in args.impls if i not in IMPLEMENTATIONS]
        if unknown:
            sys.exit(f"unknown implementation(s) {unknown}; choose among {list(IMPLEMENTATIONS)}")
        impls = list(args.impls)
    else:
        impls = []
        for impl, package in IMPLEMENTATIONS.items():
            if importlib.util.find_spec(package) is None:
                skipped[impl] = f"{package} is not installed"
            else:
                impls.append(impl)
    for impl, why in skipped.items():
        log(f"skipping {impl}: {why}")

    facts = machine_facts()
    log(f"{spec['description']}; {profile} profile; batches {prof['batches']}, "
        f"threads {prof['threads']}; {facts.get('cpu_model')}, {facts['cpu_count']} CPUs")
    t0 = time.perf_counter()
    results, workers, errors = [], [], {}
    for threads in prof["threads"]:
        res, infos, errs = bench_threads(impls, threads, spec, prof["batches"], prof, args.seed)
        results += res
        workers += list(infos.values())
        errors.update({f"{impl} ({threads} threads)": e for impl, e in errs.items()})
    elapsed = time.perf_counter() - t0
    try:
        facts["loadavg_end"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass

    note = (f"; ratio = median / {REFERENCE} median (> 1: {REFERENCE} faster)"
            if REFERENCE in impls and len(impls) > 1 else "")
    print(f"\n{spec['description']}: ms per train step, median (IQR){note}\n")
    print(format_table(results, impls))
    print(f"\n{facts.get('cpu_model')}, {facts.get('cpus_available', facts['cpu_count'])} CPUs "
          f"available; 1-min load average {_load(facts, 'loadavg_start')} at start, "
          f"{_load(facts, 'loadavg_end')} at end (other processes make times noisy); "
          f"{elapsed:.0f} s")
    for name, err in errors.items():
        log(f"ERROR {name}: {err}")

    out = args.out
    if out is None and not args.no_json and profile != "smoke":
        suffix = "" if profile == "default" else f"-{profile}"
        out = os.path.join(BENCH_DIR, "results", f"{args.model}{suffix}.json")
    if out and not args.no_json:
        payload = {
            "benchmark": "train_step", "model": spec, "profile": profile,
            "settings": {k: prof[k] for k in ("batches", "threads", "block_seconds", "rounds",
                                                 "warmup_seconds", "warmup_min")},
            "implementations": impls, "skipped": skipped, "errors": errors,
            "reference": REFERENCE,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": elapsed, "machine": facts, "workers": workers,
            "results": results, "ratios": add_ratios(results, impls),
            "table_markdown": format_table(results, impls),
        }
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(payload, f, indent=1)
            f.write("\n")
        log(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
