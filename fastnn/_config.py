"""Thread control and build facts: set_num_threads, get_num_threads, show_config.

fastnn owns parallelism with one OpenMP pool and calls BLAS single-threaded inside its threads
("one pool"): two thread pools alternating on 2 cores fight and run ~2x slower. The per-thread BLAS
limit uses scipy's OpenBLAS ``openblas_set_num_threads_local``; if that symbol cannot be found
(another BLAS), BLAS is limited to one thread through threadpoolctl instead.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import warnings
from typing import IO, Any

from . import _conv, _dense, _gemm, _threads

#: the kernel modules that call BLAS; each keeps its own copy of the hook (src_cython/fnn_omp.h)
_BLAS_MODULES = (_dense, _conv)
#: the modules with fastnn's float32 GEMM (src_cython/gemm.h); each keeps its own kernel setting
_GEMM_MODULES = (_dense, _conv, _gemm)
#: FASTNN_GEMM values, in the level order of gemm.h
GEMM_KERNELS = ("blas", "generic", "avx2", "avx512")
#: the bfloat16 GEMM kernels of Sequential(dtype="mixed_bfloat16"), by level (bgemm.h)
BF16_KERNELS = ("emulated", "avx512_bf16", "amx")
#: None: follow omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl)
_num_threads: int | None = None
_blas_control = "none"


def _find_scipy_openblas_hook() -> tuple[int | None, str | None]:
    """Address of openblas_set_num_threads_local in the OpenBLAS that scipy.linalg.cython_blas
    uses."""
    import scipy.linalg.cython_blas  # noqa: F401  (makes sure the library is loaded)
    import scipy

    base = os.path.dirname(os.path.dirname(scipy.__file__))
    candidates = glob.glob(os.path.join(base, "scipy.libs", "*openblas*"))
    candidates += glob.glob(os.path.join(os.path.dirname(scipy.__file__), ".dylibs", "*openblas*"))
    try:
        from threadpoolctl import threadpool_info

        candidates += [
            info["filepath"] for info in threadpool_info()
            if info.get("internal_api") == "openblas" and "scipy" in info.get("filepath", "")
        ]
    except Exception:  # pragma: no cover - threadpoolctl is a dependency, be tolerant anyway
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            continue
        fn = getattr(lib, "openblas_set_num_threads_local", None)
        if fn is not None:
            return ctypes.cast(fn, ctypes.c_void_p).value, path
    return 0, None


_blas_hook_addr, _blas_path = _find_scipy_openblas_hook()
if _blas_hook_addr:
    for _m in _BLAS_MODULES:
        _m.install_blas_hook(_blas_hook_addr)
    _blas_control = "openblas_set_num_threads_local (per fastnn thread)"
else:  # pragma: no cover - depends on the BLAS scipy was built with
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _blas_control = "threadpoolctl: BLAS limited to 1 thread process-wide"
    except Exception:
        _blas_control = "not controlled (BLAS may start its own threads)"
        warnings.warn("fastnn could not limit BLAS threads; two thread pools may compete.",
                      stacklevel=1)


def set_num_threads(n: int | None) -> None:
    """Set the number of OpenMP threads fastnn's kernels use.

    Parameters
    ----------
    n : int or None
        ``>= 1``. ``None`` returns to the default: ``omp_get_max_threads()``, which follows
        ``OMP_NUM_THREADS`` and threadpoolctl's limits.

    Raises
    ------
    TypeError
        If ``n`` is not an int (bool is refused).
    ValueError
        If ``n < 1``.
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads must be an int >= 1, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    _num_threads = n


def set_gemm_kernel(name: str | None) -> str:
    """Choose the float32 GEMM kernel of every fastnn module (a testing and benchmarking switch).

    Parameters
    ----------
    name : {"blas", "generic", "avx2", "avx512"} or None
        ``None`` returns to the automatic choice (as the ``FASTNN_GEMM`` environment variable
        does at import): fastnn's AVX-512 kernel on AVX-512 CPUs; on AVX2 CPUs fastnn's kernel for
        GEMMs of fewer than 6 rows and the system BLAS for the rest; the system BLAS otherwise.
        A kernel the CPU cannot run falls back to the best one it can.

    Returns
    -------
    str
        The kernel now in use (``"avx2+blas"`` for the automatic AVX2 choice).

    Raises
    ------
    ValueError
        If ``name`` is not one of the above.
    """
    if name is not None and name not in GEMM_KERNELS:
        raise ValueError(f"gemm kernel must be one of {GEMM_KERNELS} or None, got {name!r}")
    level = -1 if name is None else GEMM_KERNELS.index(name)
    return [m.gemm_kernel(level) for m in _GEMM_MODULES][0]


def set_bf16_kernel(name: str | None) -> str:
    """Choose the bfloat16 GEMM kernel of every fastnn module (a testing and benchmarking switch
    for ``Sequential(dtype="mixed_bfloat16")``).

    Parameters
    ----------
    name : {"emulated", "avx512_bf16", "amx"} or None
        ``None`` returns to the automatic choice (as the ``FASTNN_BF16`` environment variable
        does at import): AMX tiles (``tdpbf16ps``) where the CPU and the OS allow them, else the
        AVX512_BF16 pair instruction (``vdpbf16ps``), else the same bfloat16 rounding of the
        inputs with float32 FMAs. A kernel the CPU cannot run falls back to the best one it can.
        The inputs are rounded alike on every path; the order of the float32 sums differs.

    Returns
    -------
    str
        The kernel now in use.

    Raises
    ------
    ValueError
        If ``name`` is not one of the above.
    """
    if name is not None and name not in BF16_KERNELS:
        raise ValueError(f"bf16 kernel must be one of {BF16_KERNELS} or None, got {name!r}")
    level = -1 if name is None else BF16_KERNELS.index(name)
    return [m.bf16_kernel(level) for m in _GEMM_MODULES][0]


def get_num_threads() -> int:
    """Number of OpenMP threads the next kernel call will use (int >= 1)."""
    if _num_threads is not None:
        return _num_threads if _threads.openmp_enabled() else 1
    return max(1, _threads.omp_max_threads())


def config() -> dict[str, Any]:
    """Build and run-time facts as a dict (see :func:`show_config`)."""
    from . import __version__

    info = {
        "fastnn": __version__,
        "python": sys.version.split()[0],
        "openmp": _threads.openmp_enabled(),
        "openmp_version": _threads.openmp_version(),
        "num_threads": get_num_threads(),
        "cpu_count": os.cpu_count(),
        "simd_path": _threads.simd_path(),
        "gemm_kernel": _gemm.gemm_kernel(),
        "bf16_kernel": _gemm.bf16_kernel(),
        "blas_thread_control": _blas_control,
        "blas_library": _blas_path,
    }
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: d.get(k)
             for k in ("user_api", "internal_api", "num_threads", "version", "filepath")}
            for d in threadpool_info()
        ]
    except Exception:  # pragma: no cover
        info["threadpools"] = []
    info["build"] = _build_info()
    return info


def show_config(file: IO[str] | None = None) -> None:
    """Print fastnn's version, OpenMP status, thread count, BLAS, the SIMD path, the float32
    GEMM kernel in use (``gemm_kernel``: see :func:`set_gemm_kernel`) and the bfloat16 one of
    the ``"mixed_bfloat16"`` policy (``bf16_kernel``: see :func:`set_bf16_kernel`)."""
    info = config()
    out = file or sys.stdout
    for key in ("fastnn", "python", "openmp", "openmp_version", "num_threads", "cpu_count",
                "simd_path", "gemm_kernel", "bf16_kernel", "blas_thread_control",
                "blas_library"):
        print(f"{key:20s} {info[key]}", file=out)
    for pool in info["threadpools"]:
        print(f"{'threadpool':20s} {pool['user_api']}/{pool['internal_api']} "
              f"threads={pool['num_threads']} version={pool['version']} {pool['filepath']}",
              file=out)
    _print_build_info(info["build"], out)


# ---- build flags (fastnn/_build_info.py, generated by setup.py; issue 6) --------------------

def _build_info() -> dict[str, Any] | None:
    """How the extensions were compiled (a dict), or None if setup.py did not record it."""
    try:
        from ._build_info import BUILD_INFO
    except ImportError:
        return None
    return BUILD_INFO


def _print_build_info(build: dict[str, Any] | None, out: IO[str]) -> None:
    if build is None:
        print(f"{'build_flags':20s} unknown (no fastnn/_build_info.py: built without setup.py)",
              file=out)
        return
    link = " ".join(build["extra_link_args"]) or "-"
    flags = " ".join(build["extra_compile_args"] + ["-D" + m for m in build["define_macros"]])
    print(f"{'build_compiler':20s} {build['compiler']} ({build['compiler_version']})", file=out)
    print(f"{'build_flags':20s} {flags} | link {link}", file=out)
    print(f"{'build_simd_dispatch':20s} {build['simd_dispatch']}", file=out)
    print(f"{'build_tools':20s} Cython {build['cython']}, numpy {build['numpy_build']}, "
          f"{build['platform']}{' (debug)' if build['debug'] else ''}", file=out)


# ---- thread count while fit trains (issue 11: a busy machine) -------------------------------

class ThreadTuner:
    """Run ``fit`` at the faster of the default thread count and one thread, re-checked as it
    trains.

    fastnn's results do not depend on the thread count (fixed blocks, fixed reduction order), so
    the count may change between steps without changing any result. On a machine where another
    process keeps a core busy, the threads of a parallel loop wait for the one that shares its
    core with it, and 2 threads can run slower than 1 (most steps stay fast, but some take 4x
    and a few stall for a scheduler time slice); on an idle machine 2 are faster. So, while the
    user has not fixed the count (:func:`set_num_threads`), ``fit`` times its steps and every so
    often runs the other count for a while ("probe", at least :attr:`PROBE_STEPS` steps and
    :attr:`PROBE_S` seconds, or only the steps when they are :attr:`CLEARLY_SLOWER`; its first
    step, which wakes the threads, is not counted): it keeps
    whichever has the lower mean step time (the throughput; a median would hide the stalls). The
    interval between probes doubles after each one, up to :attr:`MAX_INTERVAL_S`, and is
    never shorter than :attr:`MIN_INTERVAL_STEPS` steps or :attr:`MIN_INTERVAL_MEANS` mean step
    times, so probing costs a few percent at most.

    Use as a context manager around the training loop and call :meth:`step_done` with each train
    step's seconds. Inactive (a no-op) when the count is fixed, OpenMP is off, or the default
    count is 1.
    """

    PROBE_STEPS = 5
    PROBE_S = 0.2
    WINDOW = 64
    MIN_INTERVAL_S = 0.1
    MAX_INTERVAL_S = 8.0
    MIN_INTERVAL_STEPS = 16
    MIN_INTERVAL_MEANS = 10
    MARGIN = 1.05
    CLEARLY_SLOWER = 1.5

    def __init__(self) -> None:
        default = get_num_threads()
        self.active = _num_threads is None and _threads.openmp_enabled() and default > 1
        self.choices = (default, 1)
        self.current = default
        self.switches = 0
        self.probes = 0
        self._recent: list[float] = []
        self._probe: list[float] = []
        self._probing = False
        self._probe_first = False
        self._interval = self.MIN_INTERVAL_S
        self._since_steps = 0
        self._since_s = 0.0

    _shared: ThreadTuner | None = None

    @classmethod
    def shared(cls) -> ThreadTuner:
        """The process's tuner, so that what one ``fit`` call learned carries over to the next
        (a new one when the default count or the fixed/unfixed state changed)."""
        t = cls._shared
        if t is None or t.choices[0] != get_num_threads() or t.active != (
                _num_threads is None and _threads.openmp_enabled() and get_num_threads() > 1):
            t = cls._shared = cls()
        return t

    def __enter__(self) -> ThreadTuner:
        global _num_threads
        if self.active:
            if self._probing:  # a fit that ended during a probe: start it again
                self._probe = []
                self._probe_first = True
                _num_threads = self._other()
            else:
                _num_threads = self.current
        return self

    def __exit__(self, *exc: object) -> None:
        global _num_threads
        if self.active:
            _num_threads = None

    @property
    def threads(self) -> int:
        """The count the next step runs with."""
        return _num_threads if self.active and _num_threads is not None else get_num_threads()

    def _mean(self) -> float:
        return sum(self._recent) / len(self._recent)

    def _other(self) -> int:
        return self.choices[1] if self.current == self.choices[0] else self.choices[0]

    def step_done(self, seconds: float) -> None:
        """Record one train step's duration (seconds) and choose the next step's thread count."""
        global _num_threads
        if not self.active:
            return
        if self._probing:
            if self._probe_first:  # the step that woke the threads (or let them go)
                self._probe_first = False
            else:
                self._probe.append(seconds)
            n = len(self._probe)
            if n >= self.PROBE_STEPS and (
                    sum(self._probe) >= self.PROBE_S
                    or sum(self._probe) / n > self.CLEARLY_SLOWER * self._mean()):
                self._decide()
            return
        self._recent.append(seconds)
        del self._recent[:-self.WINDOW]
        self._since_steps += 1
        self._since_s += seconds
        mean = self._mean()
        if (self._since_steps >= self.MIN_INTERVAL_STEPS and len(self._recent) >= 16
                and self._since_s >= max(self._interval, self.MIN_INTERVAL_MEANS * mean)):
            self._probe = []
            self._probing = self._probe_first = True
            self.probes += 1
            _num_threads = self._other()

    def _decide(self) -> None:
        global _num_threads
        mine = self._mean()
        theirs = sum(self._probe) / len(self._probe)
        if theirs * self.MARGIN < mine:
            self.current = self._other()
            self.switches += 1
            self._recent = list(self._probe)
        self._interval = min(2 * self._interval, self.MAX_INTERVAL_S)
        _num_threads = self.current
        self._probing = False
        self._since_steps = 0
        self._since_s = 0.0
