"""Train-step and inference benchmark: fastnn vs a pure-NumPy baseline (vs PyTorch when
importable), with an sgemm roofline measured in the same run.

Run ``python -m bench`` (or ``python bench/run.py``); ``--help`` lists the options.
``--nets mlp,cnn,dqn`` selects the networks (default: all three): the MLP 784-256-128-10, the
small Fashion-MNIST CNN of ``fastnn.models.small_cnn`` and the DQN of Mnih et al. 2015
(``fastnn.models.dqn``); :mod:`bench.models` holds their specs, batch sizes and FLOP formulas.

Method
------
* One worker process per (implementation, thread count), started with ``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set before anything is imported (fastnn also
  gets ``fastnn.set_num_threads(n)``, PyTorch ``torch.set_num_threads(n)``).
* The workers of one thread count are alive together but only one computes at a time: the
  driver sends them blocks of steps in turn, A B, B A, A B, ... (the order rotates every round),
  so slow drifts of a shared, noisy machine hit every implementation alike.
* Two kinds of step, each its own set of cases in the same run, with the same workers:
  a *train step* per train batch size, then an *inference call* per inference batch size
  (default 1 and 32). Per case: each worker warms up, then each block runs a couple of untimed
  steps and then steps timed one by one for about ``--block-seconds`` (inference:
  ``--predict-block-seconds``; at least 3), so the run's length does not grow with a loaded
  machine's slow outliers. Reported: median and interquartile range (IQR) over all timed steps,
  ms per train step or per inference call, and the ratio of medians from the same run.
* A train step is forward + loss (softmax cross-entropy; the DQN: mean squared error on random
  targets) + backward + SGD (momentum 0.9) update, float32, on one fixed random batch. An
  inference call is what a user calls for the network's output on one fixed random batch:
  fastnn ``model.predict(X)`` (input checks and the returned copy included), the NumPy
  baseline's forward pass into its preallocated buffers, PyTorch eager
  ``with torch.inference_mode(): model(X)`` (model in eval mode).
* Useful FLOPs count only the GEMM work of dense and conv layers: dense forward 2NKM, backward
  4NKM; conv forward 2 N Ho Wo kh kw Cin Cout, backward twice that; the first layer skips dX
  (backward = forward); inference: the forward part. GFLOP/s = useful FLOPs / median time.
* sgemm roofline: a pseudo-implementation ``sgemm`` (:mod:`bench._sgemm`) runs in its own worker
  process, interleaved with the others at the same thread count, and times only the GEMMs of the
  same step (:func:`bench.models.gemms`): dense forward (N,K)x(K,M), dX (N,M)x(M,K) (not for the
  first layer), dW (K,N)x(N,M); conv layers as their im2col GEMMs, (N Ho Wo, kh kw Cin)x(kh kw
  Cin, Cout) forward and the dW and dX analogues, the im2col itself not timed; inference: the
  forward GEMMs. Float32 NumPy matmul into preallocated ``out=`` arrays, i.e. OpenBLAS sgemm. Its
  median is the roofline: ``% of roofline = roofline ms / implementation ms`` (100%: the step
  costs no more than its GEMMs), roofline GFLOP/s = useful FLOPs / roofline ms (the FLOPs are
  exactly those above). It is a practical bound, not a hard one: with tiny GEMMs (inference at
  batch 1) NumPy's per-call overhead (about a microsecond per matmul) is part of it, and an
  implementation that calls BLAS directly or splits the work differently can beat it.
* Per-layer profile (conv nets, train steps): after the timed rounds of a batch size, each
  implementation that can (fastnn through ``fastnn.profile``, the NumPy baseline by its own
  timers, the roofline by timing each layer's GEMMs) times each layer's forward and backward,
  the loss and the update over about ``profile_seconds`` of steps, in three interleaved chunks
  (one worker at a time; one chunk with ``--smoke``); reported: the median of the chunks'
  medians.
* The 1-minute load average is sampled at the start, after every case and at the end: on a
  shared machine with 2 cores a load above ~2 makes the 2-thread OpenMP timings meaningless
  (threads spin-wait for a descheduled partner).

Output: per net, a markdown table of the train steps (ms, ratios, GFLOP/s, roofline ms and
GFLOP/s, % of roofline per implementation), one of the inference calls (ms per call, ratios,
roofline ms, % of roofline) and, for the conv nets, the per-layer table; the JSON
``bench/results/<net>.json`` (``results``/``ratios`` train, ``inference_results``/
``inference_ratios``, ``layer_profiles``, each result row with ``roofline_ms`` and
``pct_roofline``); and the PNG chart ``bench/results/<net>.png`` (:mod:`bench.chart`) when
matplotlib is importable (otherwise one line says it was skipped).
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
    from bench.models import MODELS, forward_flops, train_step_flops  # noqa: E402
    from bench.report import (REFERENCE, ROOFLINE, add_layer_flops, add_ratios,  # noqa: E402
                              add_roofline, format_profile_table, format_table, quantiles)
else:
    from .models import MODELS, forward_flops, train_step_flops
    from .report import (REFERENCE, ROOFLINE, add_layer_flops, add_ratios, add_roofline,
                         format_profile_table, format_table, quantiles)

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
#: implementation name -> the top-level package it needs (checked without importing it)
IMPLEMENTATIONS = {"numpy": "numpy", "fastnn": "fastnn", "torch": "torch", ROOFLINE: "numpy",
                   "fastnn-blas": "fastnn", "torch-malloc": "torch", "fastnn-bf16": "fastnn",
                   "torch-bf16": "torch"}
#: implementations run only when --impls names them
OPT_IN = ("fastnn-blas", "fastnn-bf16", "torch-bf16")
#: extra environment of an implementation's worker: fastnn with its float32 GEMMs on the system
#: BLAS instead of its own kernels; PyTorch with glibc malloc tuned as PyTorch's CPU performance
#: guide advises (large blocks kept instead of returned to the OS; its step time is otherwise
#: bimodal)
#: fastnn-bf16: the model built with dtype="mixed_bfloat16"; torch-bf16: torch-malloc with the
#: forward pass and loss under torch.autocast("cpu", dtype=torch.bfloat16) (the one line PyTorch
#: users add; oneDNN runs its bf16 kernels, AMX where the CPU has it)
VARIANT_ENV = {"fastnn-blas": {"FASTNN_GEMM": "blas"},
               "torch-malloc": {"MALLOC_MMAP_THRESHOLD_": "33554432",
                                "MALLOC_TRIM_THRESHOLD_": "268435456"},
               "fastnn-bf16": {"FASTNN_BENCH_DTYPE": "mixed_bfloat16"},
               "torch-bf16": {"MALLOC_MMAP_THRESHOLD_": "33554432",
                              "MALLOC_TRIM_THRESHOLD_": "268435456",
                              "FASTNN_BENCH_AUTOCAST": "bfloat16"}}
#: set on some machines to force OpenBLAS's AVX2 kernels (a guard for old OpenBLAS builds); a
#: user's machine does not have them, so the workers run without them unless --avx2-blas
BLAS_GUARD_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: --avx2-blas: OpenBLAS forced to its AVX2 ("Haswell") kernels, as on CPUs without AVX-512
AVX2_BLAS = False
#: what each implementation's timed inference call is (for the inference table's caption)
INFERENCE_CALLS = {"fastnn": "fastnn model.predict(X)", "numpy": "NumPy forward pass",
                   "torch": "torch eager model(X) in inference_mode"}
INFERENCE_CALLS["fastnn-blas"] = INFERENCE_CALLS["fastnn"] + " (system BLAS)"
INFERENCE_CALLS["torch-malloc"] = INFERENCE_CALLS["torch"] + " (tuned malloc)"
INFERENCE_CALLS["fastnn-bf16"] = INFERENCE_CALLS["fastnn"] + " (mixed_bfloat16)"
INFERENCE_CALLS["torch-bf16"] = INFERENCE_CALLS["torch"] + " (tuned malloc, bf16 autocast)"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

DEFAULT_NETS = ["mlp", "cnn", "dqn"]
PROFILES = {
    # name: threads, seconds per block (train steps; inference calls), rounds, warm-up seconds
    # and minimum steps, seconds of
    # per-layer profiling (per implementation and batch size) and the number of interleaved
    # chunks they are split into; batch sizes are per net, in
    # bench.models (spec["batches"][profile])
    "default": dict(threads=[1, 2], block_seconds=0.25, predict_block_seconds=0.1, rounds=16,
                    warmup_seconds=0.5, warmup_min=10, profile_seconds=1.0, profile_chunks=3),
    "quick": dict(threads=[1, 2], block_seconds=0.05, predict_block_seconds=0.03, rounds=6,
                  warmup_seconds=0.2, warmup_min=5, profile_seconds=0.3, profile_chunks=3),
    "smoke": dict(threads=[1, 2], block_seconds=0.02, predict_block_seconds=0.01, rounds=3,
                  warmup_seconds=0.05, warmup_min=2, profile_seconds=0.0, profile_chunks=1),
}
#: untimed steps before each block: 2 for fast steps, 1 when a step takes longer than this
SLOW_STEP_S = 0.02
PROFILE_REPEATS = (3, 30)  # bounds of the number of profiled steps (per chunk: at least 3)
ROOFLINE_DEFINITION = (
    "sgemm roofline: the same step's GEMMs alone (dense forward (N,K)x(K,M), dW (K,N)x(N,M), dX "
    "(N,M)x(M,K) except for the first layer; conv layers as their im2col GEMMs, the im2col "
    "itself not timed; inference: the forward GEMMs), float32 NumPy matmul into preallocated "
    "out= arrays (OpenBLAS sgemm) at the same thread count, in its own worker process, "
    "interleaved with the others; % of roofline = roofline median ms / implementation median "
    "ms; roofline GFLOP/s = useful FLOPs / roofline median")


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    """A ``bench._worker`` subprocess and its JSON-lines pipe."""

    def __init__(self, impl, threads):
        self.impl, self.threads = impl, threads
        env = dict(os.environ)
        for var in THREAD_VARS:
            env[var] = str(threads)
        for var in BLAS_GUARD_VARS:
            env.pop(var, None)
        if AVX2_BLAS:  # a CPU without AVX-512: OpenBLAS's and fastnn's AVX2 paths
            env["OPENBLAS_CORETYPE"] = "Haswell"
            env["FASTNN_GEMM"] = "avx2+blas"
        env.update(VARIANT_ENV.get(impl, {}))
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


_PEAK = []


def fma_peak():
    """One core's float32 FMA peak in GFLOP/s (fastnn._gemm.fma_peak_gflops: 12 independent
    chains on the widest vectors), measured once per run in a child process; None if fastnn is
    not importable."""
    if not _PEAK:
        try:
            out = subprocess.run([sys.executable, "-c", "from fastnn._gemm import fma_peak_gflops;"
                                  "print(fma_peak_gflops(0.5))"], capture_output=True, text=True,
                                 cwd=REPO_ROOT, timeout=60, check=True)
            _PEAK.append(float(out.stdout.strip().splitlines()[-1]))
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            _PEAK.append(None)
    return _PEAK[0]


def machine_facts():
    facts = {"platform": platform.platform(), "python": platform.python_version(),
             "cpu_count": os.cpu_count(), "executable": sys.executable,
             "fma_peak_gflops": fma_peak()}
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


def loadavg1():
    """The 1-minute load average, or None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return None


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def profile_repeats(step_s, prof):
    """Number of steps of a per-layer profile: about ``profile_seconds`` of steps, bounded."""
    lo, hi = PROFILE_REPEATS
    if step_s <= 0:
        return lo
    return int(min(hi, max(lo, round(prof["profile_seconds"] / step_s))))


#: samples in an end-to-end epoch (Fashion-MNIST's training set; full batches only)
EPOCH_SAMPLES = 60000


def case_flops(spec, mode, batch):
    """Useful FLOPs of one step of ``mode`` ("train": a train step, "predict": a forward pass,
    "epoch": the train steps of one Fashion-MNIST epoch)."""
    if mode == "epoch":
        return train_step_flops(spec, batch) * (EPOCH_SAMPLES // batch)
    return train_step_flops(spec, batch) if mode == "train" else forward_flops(spec, batch)


def bench_threads(impls, threads, spec, cases, prof, seed, loads=None):
    """Benchmark every implementation at one thread count.

    ``cases``: ``(mode, batch)`` pairs, ``mode`` "train" (a train step, timed in blocks of
    ``block_seconds``) or "predict" (one inference call, blocks of ``predict_block_seconds``).
    Returns ``(results, profiles, workers_info, errors)``: one result row per (case,
    implementation), with its ``mode``; ``loads`` (a list), if given, gets a 1-minute load
    average sample after every case.
    """
    results, profiles, infos, errors = [], [], {}, {}
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
        for mode, batch in cases:
            flops = case_flops(spec, mode, batch)
            # an epoch case times whole epochs, one per block, no untimed one before
            block_s = {"train": prof["block_seconds"], "epoch": 0.0}.get(
                mode, prof["predict_block_seconds"])
            setups = {}
            for impl in list(workers):
                try:
                    reply = workers[impl].request(
                        "setup", spec=spec, batch=batch, seed=seed, mode=mode,
                        warmup_s=prof["warmup_seconds"], warmup_min=prof["warmup_min"])
                except WorkerError as exc:
                    errors[impl] = str(exc)
                    workers.pop(impl).close()
                    continue
                if "unsupported" in reply:
                    log(f"  {impl}: no {mode} step ({reply['unsupported']})")
                    continue
                setups[impl] = reply
                if threads > 1:
                    workers[impl].settle()
            order = [impl for impl in workers if impl in setups]
            samples = {impl: [] for impl in order}
            block_medians = {impl: [] for impl in order}
            values = {}
            settle_s = 0.0
            pre = {impl: 0 if mode == "epoch" else 1 if setups[impl]["step_s"] > SLOW_STEP_S
                   else 2 for impl in order}
            for r in range(prof["rounds"]):
                k = r % len(order) if order else 0
                for impl in order[k:] + order[:k]:
                    if impl not in workers:
                        continue
                    try:
                        reply = workers[impl].request("run", seconds=block_s, pre=pre[impl],
                                                      min_reps=1 if mode == "epoch" else 3)
                    except WorkerError as exc:
                        errors[impl] = str(exc)
                        workers.pop(impl).close()
                        continue
                    if threads > 1:  # let its helper threads go to sleep before the next block
                        settle_s += workers[impl].settle()
                    ms = [t / 1e6 for t in reply["times_ns"]]
                    samples[impl] += ms
                    block_medians[impl].append(quantiles(ms)[1])
                    values[impl] = reply["value"]
            for impl in order:
                if impl not in workers or not samples[impl]:
                    continue
                q1, med, q3 = quantiles(samples[impl])
                # the step's result: the loss (train) or the sum of the output (predict)
                what = "loss" if mode == "train" else "output_sum"
                results.append({
                    "mode": mode, "batch": batch, "threads": threads, "impl": impl,
                    "median_ms": med, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1,
                    "min_ms": min(samples[impl]), "n_steps": len(samples[impl]),
                    "n_blocks": len(block_medians[impl]),
                    "block_medians_ms": block_medians[impl],
                    "useful_flops": flops, "gflops": flops / (med * 1e-3) / 1e9,
                    f"{what}_first": setups[impl]["value_first"],
                    f"{what}_last": values[impl],
                    "settle_s_all_impls": settle_s,
                })
                log(f"  {mode:7s} batch {batch:4d} threads {threads}  {impl:7s} "
                    f"{med:8.3f} ms  (IQR {q3 - q1:.3f}, {len(samples[impl])} calls)")
            if mode == "train" and spec["kind"] != "mlp":
                profiles += profile_layers(workers, setups, threads, spec, batch, prof, errors)
            if loads is not None:
                loads.append(loadavg1())
        for impl, w in workers.items():
            try:
                infos[impl] = w.request("info")
            except WorkerError as exc:
                errors[impl] = str(exc)
    finally:
        for w in workers.values():
            w.close()
    return results, profiles, infos, errors


def profile_layers(workers, setups, threads, spec, batch, prof, errors):
    """Per-layer profiles of every worker that can, in ``profile_chunks`` interleaved chunks
    (A B, B A, ...); each row's forward and backward ms is the median of its chunk medians."""
    chunks = {}
    order = [impl for impl in workers if impl in setups]
    n_chunks = max(1, prof["profile_chunks"])
    for c in range(n_chunks):
        k = c % len(order) if order else 0
        for impl in order[k:] + order[:k]:
            if impl not in workers or chunks.get(impl, []) is None:
                continue
            repeats = max(PROFILE_REPEATS[0],
                          profile_repeats(setups[impl]["step_s"], prof) // n_chunks)
            try:
                reply = workers[impl].request("profile", repeats=repeats)
            except WorkerError as exc:
                errors[impl] = str(exc)
                workers.pop(impl).close()
                chunks.pop(impl, None)
                continue
            if threads > 1:
                workers[impl].settle()
            chunks[impl] = None if reply["rows"] is None else chunks.get(impl, []) + [reply]
    out = []
    for impl, replies in chunks.items():
        if not replies:
            continue
        rows = []
        for k, row in enumerate(replies[0]["rows"]):
            merged = dict(row)
            for key in ("forward_ms", "backward_ms"):
                merged[key] = quantiles([r["rows"][k][key] for r in replies])[1]
            if "fastnn_gflops" in merged:  # fastnn.profile's own FLOP count of the layer
                g = merged.pop("fastnn_gflops")
                merged["fastnn_flops"] = (None if g is None else
                                          g * 1e9 * (row["forward_ms"] + row["backward_ms"]) * 1e-3)
            rows.append(merged)
        out.append({"batch": batch, "threads": threads, "impl": impl,
                    "repeats": sum(r["repeats"] for r in replies), "chunks": len(replies),
                    "rows": add_layer_flops(rows, spec, batch)})
    return out


def _net_list(text):
    nets = [x for x in text.split(",") if x]
    unknown = [n for n in nets if n not in MODELS]
    if unknown or not nets:
        raise argparse.ArgumentTypeError(f"unknown net(s) {unknown}; choose among "
                                         f"{','.join(MODELS)}")
    return nets


def _int_list(text):
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Train-step and inference benchmark of fastnn against a pure-NumPy baseline "
                    "(and PyTorch when importable), with the sgemm roofline measured in the same "
                    "run. Tables to stdout; JSON and a PNG chart to bench/results/.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="fewer, shorter repetitions (about 2-3 minutes for all nets)")
    mode.add_argument("--smoke", action="store_true",
                      help="minimal run that checks everything works (< 1 minute); numbers are "
                           "rough")
    p.add_argument("--nets", type=_net_list,
                   help=f"comma-separated networks among {','.join(MODELS)} "
                        f"(default {','.join(DEFAULT_NETS)})")
    p.add_argument("--model", choices=sorted(MODELS),
                   help="one network (same as --nets NAME)")
    p.add_argument("--batches", type=_int_list,
                   help="comma-separated train-step batch sizes for every net (default per net: "
                        "mlp 32,64,128,256; cnn 64,128; dqn 32,64)")
    p.add_argument("--predict-batches", type=_int_list,
                   help="comma-separated inference (predict) batch sizes for every net "
                        "(default 1,32)")
    p.add_argument("--no-predict", action="store_true", help="no inference rows")
    p.add_argument("--epoch", action="store_true",
                   help="end-to-end mode instead of the step tables: one Fashion-MNIST training "
                        "epoch (batch 128, shuffling and per-batch gathering included) of the MLP "
                        "and the small CNN, fastnn fit vs a NumPy loop vs a PyTorch loop, 1 and 2 "
                        "threads (needs Debian's dataset-fashion-mnist; ~5 min)")
    p.add_argument("--busy", action="store_true",
                   help="busy-machine mode: with one competing pure-Python process spinning "
                        "(started and stopped by the bench), fastnn fit steps per second at the "
                        "default thread count and at 1 thread, MLP and small CNN at batch 128 "
                        "(~2 min)")
    p.add_argument("--no-extras", action="store_true",
                   help="the full run (no --quick / --smoke) without its closing --epoch and "
                        "--busy sections")
    p.add_argument("--avx2-blas", action="store_true",
                   help="run every worker with OPENBLAS_CORETYPE=Haswell and "
                        "FASTNN_GEMM=avx2+blas: OpenBLAS's and fastnn's AVX2 paths, as on CPUs "
                        "without AVX-512 (by "
                        "default the workers unset "
                        f"{' and '.join(BLAS_GUARD_VARS)})")
    p.add_argument("--threads", type=_int_list,
                   help="comma-separated thread counts (default 1,2)")
    p.add_argument("--impls", type=lambda s: [x for x in s.split(",") if x],
                   help="comma-separated implementations among "
                        f"{','.join(IMPLEMENTATIONS)} (default: all that are importable; "
                        f"{ROOFLINE} is the roofline: the step's GEMMs alone)")
    p.add_argument("--block-seconds", type=float,
                   help="target duration of one timed block of train steps")
    p.add_argument("--predict-block-seconds", type=float,
                   help="target duration of one timed block of inference calls")
    p.add_argument("--rounds", type=int, help="number of interleaved rounds of blocks")
    p.add_argument("--profile-seconds", type=float,
                   help="seconds of steps per per-layer profile (0: the minimum, 3 steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON output path, with one net only (default "
                                 "bench/results/<net>.json; --quick: <net>-quick.json; "
                                 "--smoke: none); the chart goes beside it (.png)")
    p.add_argument("--out-dir", help="directory of the JSON files and charts "
                                     "<net>[-quick].json/.png (default bench/results; --smoke "
                                     "writes <net>-smoke.json/.png only when given one)")
    p.add_argument("--no-json", action="store_true", help="do not write JSON files")
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG charts")
    args = p.parse_args(argv)
    if args.model and args.nets:
        p.error("give --nets or --model, not both")
    args.nets_given = bool(args.model or args.nets)
    args.nets = [args.model] if args.model else (args.nets or list(DEFAULT_NETS))
    if args.out and len(args.nets) > 1:
        p.error("--out takes one net; use --out-dir for several")
    if args.no_predict and args.predict_batches:
        p.error("give --predict-batches or --no-predict, not both")
    if args.no_predict:
        args.predict_batches = []
    return args


def run_net(net, impls, prof, profile, args, user_set=(), skipped=None):
    """Benchmark one network; print its tables; returns (payload, errors).

    ``prof``: the run profile's settings; the net's own ``settings`` for this profile override
    them, except the keys in ``user_set`` (given on the command line). ``skipped``: the
    implementations left out of the run, and why (recorded in the payload).
    """
    spec = MODELS[net]
    prof = dict(prof)
    for key, value in spec.get("settings", {}).get(profile, {}).items():
        if key not in user_set:
            prof[key] = value
    batches = prof["batches"] or spec["batches"][profile]
    predict_batches = (prof["predict_batches"] if prof["predict_batches"] is not None
                       else spec["predict_batches"][profile])
    cases = [("train", b) for b in batches] + [("predict", b) for b in predict_batches]
    facts = machine_facts()
    log(f"{net}: {spec['description']}; {profile} profile; train batches {batches}, predict "
        f"batches {predict_batches}, threads {prof['threads']}; {facts.get('cpu_model')}, "
        f"{facts['cpu_count']} CPUs")
    t0 = time.perf_counter()
    loads = [loadavg1()]
    results, profiles, workers, errors = [], [], [], {}
    for threads in prof["threads"]:
        res, profs, infos, errs = bench_threads(impls, threads, spec, cases, prof, args.seed,
                                                loads)
        results += res
        profiles += profs
        workers += list(infos.values())
        errors.update({f"{impl} ({threads} threads)": e for impl, e in errs.items()})
    elapsed = time.perf_counter() - t0
    try:
        facts["loadavg_end"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    loads = [x for x in loads if x is not None]
    facts["loadavg1_samples"] = loads
    add_roofline(results)
    train = [r for r in results if r["mode"] == "train"]
    infer = [r for r in results if r["mode"] == "predict"]

    real = [i for i in impls if i != ROOFLINE]
    note = (f"; ratio = median / {REFERENCE} median (> 1: {REFERENCE} faster)"
            if REFERENCE in real and len(real) > 1 else "")
    roof_note = (f"; roofline = the step's GEMMs alone ({ROOFLINE}: float32 NumPy matmul, same "
                 f"threads), % roofline = roofline ms / ms (100%: nothing but the GEMMs)"
                 if ROOFLINE in impls else "")
    table = format_table(train, impls)
    itable = format_table(infer, impls, gflops=False) if infer else ""
    ptable = format_profile_table(profiles, impls)
    print(f"\n## {net}\n\n{spec['description']}: ms per train step, median (IQR){note}"
          f"{roof_note}\n")
    print(table)
    peak = facts.get("fma_peak_gflops")
    if peak:
        pct = [f"B={r['batch']} {r['threads']}T {100 * r['gflops'] / (peak * r['threads']):.0f}%"
               for r in train if r["impl"] == "fastnn"]
        print(f"\nfastnn's useful GFLOP/s as a share of the FMA peak ({peak:.0f} GFLOP/s per core, "
              f"measured in this run; threads x peak for 2 threads): {', '.join(pct)}")
    if itable:
        what = ", ".join(INFERENCE_CALLS[i] for i in real if i in INFERENCE_CALLS)
        print(f"\nInference ({net}), ms per call, median (IQR): {what}{note}"
              f"{'; roofline = the forward GEMMs alone' if roof_note else ''}\n")
        print(itable)
    if ptable:
        print(f"\nPer layer ({net}): medians of profiled steps; GFLOP/s = useful FLOPs of "
              f"forward + backward / their time; the other implementations' ms are forward + "
              f"backward; roofline ms = the layer's GEMMs alone\n")
        print(ptable)
    load_range = (f", {min(loads):.2f}-{max(loads):.2f} during the run" if loads else "")
    print(f"\n{facts.get('cpu_model')}, {facts.get('cpus_available', facts['cpu_count'])} CPUs "
          f"available; 1-min load average {_load(facts, 'loadavg_start')} at start"
          f"{load_range}, {_load(facts, 'loadavg_end')} at end (other processes make times "
          f"noisy); {elapsed:.0f} s")
    payload = {
        "benchmark": "train_step+predict", "net": net, "model": spec, "profile": profile,
        "settings": {"batches": batches, "predict_batches": predict_batches,
                     **{k: prof[k] for k in ("threads", "block_seconds", "predict_block_seconds",
                                             "rounds", "warmup_seconds", "warmup_min",
                                             "profile_seconds", "profile_chunks")}},
        "implementations": impls, "skipped": dict(skipped or {}), "errors": errors,
        "reference": REFERENCE, "roofline": ROOFLINE if ROOFLINE in impls else None,
        "roofline_definition": ROOFLINE_DEFINITION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": elapsed, "machine": facts, "workers": workers,
        "results": train, "ratios": add_ratios(train, impls),
        "inference_results": infer, "inference_ratios": add_ratios(infer, impls),
        "layer_profiles": profiles,
        "table_markdown": table, "inference_table_markdown": itable,
        "layer_table_markdown": ptable,
    }
    return payload, errors


def save_chart(payload, path):
    """Draw the run's chart to ``path`` (:func:`bench.chart.write_chart`).

    Never raises: returns ``(path, None)``, or ``(None, reason)`` when the chart was skipped
    (matplotlib not importable, or drawing failed), after printing one line saying so.
    """
    try:
        if __package__ in (None, ""):
            from bench.chart import write_chart
        else:
            from .chart import write_chart
        write_chart(payload, path)
    except ImportError as exc:
        reason = (f"matplotlib is not importable ({exc}); pip install matplotlib, or the "
                  f"'bench' extra")
    except Exception as exc:  # a chart must never fail a benchmark run
        reason = f"{type(exc).__name__}: {exc}"
    else:
        log(f"wrote {path}")
        return path, None
    log(f"chart skipped: {reason}")
    return None, reason


def main(argv=None):
    global AVX2_BLAS
    args = parse_args(sys.argv[1:] if argv is None else argv)
    AVX2_BLAS = args.avx2_blas
    if args.epoch or args.busy:
        from . import modes

        sys.exit(modes.main(args))
    profile = "smoke" if args.smoke else "quick" if args.quick else "default"
    prof = dict(PROFILES[profile], batches=None, predict_batches=None)
    user_set = set()
    for key in ("batches", "predict_batches", "threads", "block_seconds",
                "predict_block_seconds", "rounds", "profile_seconds"):
        if getattr(args, key) is not None:
            prof[key] = getattr(args, key)
            user_set.add(key)
    if (any(b < 1 for b in (prof["batches"] or []) + (prof["predict_batches"] or []))
            or any(t < 1 for t in prof["threads"])):
        sys.exit("batch sizes and thread counts must be >= 1")

    skipped = {}
    if args.impls:
        unknown = [i for i in args.impls if i not in IMPLEMENTATIONS]
        if unknown:
            sys.exit(f"unknown implementation(s) {unknown}; choose among {list(IMPLEMENTATIONS)}")
        impls = list(args.impls)
    else:
        impls = []
        for impl, package in IMPLEMENTATIONS.items():
            if impl in OPT_IN:
                continue
            if importlib.util.find_spec(package) is None:
                skipped[impl] = f"{package} is not installed"
            else:
                impls.append(impl)
    for impl, why in skipped.items():
        log(f"skipping {impl}: {why}")

    t0 = time.perf_counter()
    failed = False
    for net in args.nets:
        payload, errors = run_net(net, impls, prof, profile, args, user_set, skipped)
        for name, err in errors.items():
            log(f"ERROR {net} {name}: {err}")
        failed = failed or bool(errors)
        out = args.out
        if out is None and (profile != "smoke" or args.out_dir):
            suffix = "" if profile == "default" else f"-{profile}"
            out = os.path.join(args.out_dir or os.path.join(BENCH_DIR, "results"),
                               f"{net}{suffix}.json")
        payload["chart"] = payload["chart_skipped"] = None
        if out and not args.no_chart:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            png = os.path.splitext(out)[0] + ".png"
            payload["chart"], payload["chart_skipped"] = save_chart(payload, png)
        if out and not args.no_json:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            with open(out, "w") as f:
                json.dump(payload, f, indent=1)
                f.write("\n")
            log(f"wrote {out}")
    if profile == "default" and not args.no_extras:
        # the full run ends with the end-to-end and busy-machine rows (bench.modes)
        from . import modes

        if any(MODELS[n]["loss"] != "mse" for n in args.nets):
            failed = modes.run_epoch(args) != 0 or failed
        failed = modes.run_busy(args) != 0 or failed
    if len(args.nets) > 1:
        print(f"\nall nets: {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
