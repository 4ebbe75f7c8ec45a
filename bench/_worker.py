"""Benchmark worker: one process per (implementation, thread count), driven over a pipe.

Started by :mod:`bench.run` as ``python -m bench._worker IMPL THREADS`` with the thread
environment variables already set, so every thread pool is sized before anything is imported.
Requests and replies are one JSON object per line on the original stdout/stdin; anything else
the libraries print goes to stderr. Requests:

``{"cmd": "setup", "spec": {...}, "batch": N, "seed": 0, "warmup_s": 0.5, "warmup_min": 5,
"mode": "train"}``
    build the model for ``spec`` and batch ``N`` with the implementation's module
    (:data:`MODULES`), warm up; reply with the step time estimate. ``mode="train"``: a step is a
    train step (the module's ``build``); ``mode="predict"``: one inference call (its
    ``build_predict``); a module without ``build_predict`` replies ``{"unsupported": ...}``.
``{"cmd": "run", "seconds": S, "pre": k}``
    ``k`` untimed steps, then steps timed one by one for about ``S`` seconds; reply ``times_ns``
    and ``value``: the last step's loss (train), the sum of its output (predict; computed after
    the timing) or None (the sgemm roofline).
``{"cmd": "profile", "repeats": R}``
    per-layer forward/backward ms (medians of ``R`` steps) of the model last set up, when the
    implementation's step has a ``profile`` attribute; ``{"rows": null}`` otherwise.
``{"cmd": "info"}``
    versions, threadpoolctl's view of the loaded thread pools, and implementation extras.
``{"cmd": "quit"}``
"""
import faulthandler
import gc
import importlib
import json
import os
import sys
import time
import traceback

#: implementation -> the module that builds its steps, for every spec of bench.models
MODULES = {"numpy": "bench.numpy_net", "fastnn": "bench.fastnn_net", "torch": "bench.torch_net",
           "sgemm": "bench._sgemm",
           # variants: the same module in a different environment (bench.run.VARIANT_ENV)
           "fastnn-blas": "bench.fastnn_net", "torch-malloc": "bench.torch_net",
           "fastnn-bf16": "bench.fastnn_net", "torch-bf16": "bench.torch_net"}


def _threadpools():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "num_threads", "version", "threading_layer",
            "architecture", "filepath")
    return [{k: d.get(k) for k in keys if k in d} for d in threadpool_info()]


class Worker:
    def __init__(self, impl, threads):
        self.impl = impl
        self.threads = threads
        self._module = None
        self.step = None
        self.mode = "train"

    def module(self):
        """The implementation's module, imported (and its threads configured) on first use."""
        if self._module is None:
            mod = importlib.import_module(MODULES[self.impl])
            mod.configure_threads(self.threads)
            self._module = mod
        return self._module

    def value(self, out):
        """A float summary of a step's result (the loss, or the sum of an inference output)."""
        if out is None:
            return None
        if self.mode == "predict":
            import numpy as np

            return float(np.sum(np.asarray(out, dtype=np.float64)))
        return float(out)

    def setup(self, spec, batch, seed=0, warmup_s=0.5, warmup_min=5, mode="train"):
        self.step = None
        gc.collect()
        if mode not in ("train", "predict", "epoch"):
            raise ValueError(f"mode must be 'train', 'predict' or 'epoch', got {mode!r}")
        module = self.module()
        name = {"train": "build", "predict": "build_predict", "epoch": "build_epoch"}[mode]
        builder = getattr(module, name, None)
        if builder is None:
            return {"unsupported": f"{module.__name__} has no {name}"}
        self.mode = mode
        step = builder(spec, int(batch), seed=int(seed))
        if mode == "epoch":  # a step is a whole epoch: the builder warmed up on a few batches
            self.step = step
            return {"step_s": 1.0, "warmup_steps": 0, "warmup_s": 0.0, "value_first": None,
                    "value_after_warmup": None}
        loss0 = self.value(step())
        n, t0 = 1, time.perf_counter()
        while n < warmup_min or time.perf_counter() - t0 < warmup_s:
            step()
            n += 1
        t1 = time.perf_counter()
        # estimate from the second half of the warm-up (the first steps fault pages in)
        m = max(3, n // 4)
        t2 = time.perf_counter()
        for _ in range(m):
            loss = step()
        est = (time.perf_counter() - t2) / m
        self.step = step
        return {"step_s": est, "warmup_steps": n + m, "warmup_s": t1 - t0,
                "value_first": loss0, "value_after_warmup": self.value(loss)}

    def run(self, seconds, pre=2, min_reps=3, max_reps=20000):
        """``pre`` untimed steps, then timed steps until ``seconds`` have passed (at least
        ``min_reps``, at most ``max_reps``): a block lasts about the same on a loaded machine."""
        step = self.step
        clock = time.perf_counter_ns
        times = []
        budget = int(seconds * 1e9)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(int(pre)):
                step()
            start = clock()
            while len(times) < max_reps:
                t = clock()
                loss = step()
                end = clock()
                times.append(end - t)
                if end - start >= budget and len(times) >= min_reps:
                    break
        finally:
            if gc_was_enabled:
                gc.enable()
        return {"times_ns": times, "value": self.value(loss)}

    def profile(self, repeats=10):
        prof = getattr(self.step, "profile", None)
        if prof is None:
            return {"rows": None}
        gc.collect()
        t0 = time.perf_counter()
        rows = prof(max(1, int(repeats)))
        return {"rows": rows, "repeats": int(repeats), "seconds": time.perf_counter() - t0}

    def info(self):
        out = {"impl": self.impl, "threads": self.threads, "pid": os.getpid(),
               "python": sys.version.split()[0], "versions": {}, "extra": {}}
        mod = self._module
        if mod is not None:
            out["versions"].update(mod.versions())
            if hasattr(mod, "extra_info"):
                out["extra"].update(mod.extra_info())
        out["threadpools"] = _threadpools()
        out["env"] = {k: os.environ.get(k) for k in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
            "OMP_WAIT_POLICY")}
        return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    impl, threads = argv[0], int(argv[1])
    faulthandler.enable()  # a crash in a kernel prints the Python stack to stderr
    # Keep the protocol channel private: the libraries' own prints go to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(impl, threads)
    proto.write(json.dumps({"ok": True, "hello": impl, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        cmd = req.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": True, **getattr(worker, cmd)(**req)}
        except Exception as exc:  # report, keep serving: the driver decides what to skip
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
