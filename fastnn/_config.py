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
    """Print fastnn's version, OpenMP status, thread count, BLAS, the SIMD path and the float32
    GEMM kernel in use (``gemm_kernel``: see :func:`set_gemm_kernel`)."""
    info = config()
    out = file or sys.stdout
    for key in ("fastnn", "python", "openmp", "openmp_version", "num_threads", "cpu_count",
                "simd_path", "gemm_kernel", "blas_thread_control", "blas_library"):
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
