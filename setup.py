"""Build fastnn's Cython kernels (src_cython/<name>.pyx) as extension modules fastnn._<name>.

Environment switches
--------------------
FASTNN_DEBUG=1      Cython bounds/wraparound/initialized checks on, ``-O1 -g`` (MSVC ``/Od /Zi``);
                    release builds use ``-O3 -g0`` (MSVC ``/O2``).
FASTNN_NO_OPENMP=1  build a serial library (same results, one thread). gcc/clang still get
                    ``-fopenmp-simd``, so the ``#pragma omp simd`` loops stay vectorised.
FASTNN_NO_CLONES=1  no run-time SIMD dispatch: the C helpers are built for the baseline only.

Compiler flags by compiler (detected from the compiler setuptools chose, not from the platform);
gcc and clang also get ``-O3 -g0 -fno-trapping-math -fno-math-errno`` (see ``configure``),
MSVC ``/O2``:

==============  =====================================  =========================================
compiler        OpenMP                                  FASTNN_NO_OPENMP=1
==============  =====================================  =========================================
gcc             -fopenmp (compile and link)             -fopenmp-simd
clang           -fopenmp (compile and link)             -fopenmp-simd
Apple clang     -Xpreprocessor -fopenmp, link -lomp     -fopenmp-simd (if accepted)
MSVC            /openmp                                 (nothing)
==============  =====================================  =========================================

Before compiling, a probe builds a tiny OpenMP program with those flags. If it fails, the build
stops with a message that says how to install OpenMP or how to build the serial library.

Compiler directives are set here only (never in the .pyx files) so the debug switch works.
No ``-march=native`` and no ``-ffast-math``: the hot C helpers in ``src_cython/simd.h`` carry gcc
``target_clones`` and are dispatched at run time (x86-64 baseline, v3 = AVX2+FMA, v4 = AVX-512).
A probe checks that the compiler accepts them (gcc >= 12 with ifunc support); otherwise the
helpers are built for the baseline only.

The flags actually used are written to ``fastnn/_build_info.py`` (generated, not in git), which
``fastnn.show_config()`` prints.
"""
import contextlib
import glob
import os
import platform
import pprint
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.errors import CompileError, LinkError
except ImportError:  # pragma: no cover - old setuptools
    from distutils.errors import CompileError, LinkError


def _env_flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


DEBUG = _env_flag("FASTNN_DEBUG")
NO_OPENMP = _env_flag("FASTNN_NO_OPENMP")
NO_CLONES = _env_flag("FASTNN_NO_CLONES")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "freethreading_compatible": False,
}


def _module_name(pyx_path):
    """src_cython/dense.pyx -> fastnn._dense; src_cython/_threads.pyx -> fastnn._threads."""
    name = os.path.splitext(os.path.basename(pyx_path))[0]
    return "fastnn._" + name.lstrip("_")


extensions = [
    Extension(
        _module_name(path),
        [path.replace(os.sep, "/")],
        include_dirs=[numpy.get_include(), "src_cython"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for path in sorted(glob.glob(os.path.join("src_cython", "*.pyx")))
]


# ---- compiler detection and probes ----------------------------------------------------------

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
#ifndef _OPENMP
#error "_OPENMP is not defined: the compiler did not enable OpenMP"
#endif
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d %d\n", n, omp_get_max_threads());
    return 0;
}
"""

SIMD_PRAGMA_PROBE = r"""
float fnn_probe_sum(const float *x, long n) {
    float s = 0.0f;
    #pragma omp simd reduction(+:s)
    for (long i = 0; i < n; i++) s += x[i];
    return s;
}
"""

# the same attribute as FNN_CLONES in src_cython/simd.h
CLONES_PROBE = r"""
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void fnn_probe_scale(float *x, long n) { for (long i = 0; i < n; i++) x[i] *= 2.0f; }
int fnn_probe_level(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4") + __builtin_cpu_supports("x86-64-v3");
}
"""

COMPILER_ID_PROBE = r"""
#if defined(__apple_build_version__)
#error FASTNN_COMPILER=apple-clang
#elif defined(__clang__)
#error FASTNN_COMPILER=clang
#elif defined(__INTEL_COMPILER)
#error FASTNN_COMPILER=intel
#elif defined(__GNUC__)
#error FASTNN_COMPILER=gcc
#else
#error FASTNN_COMPILER=unknown
#endif
"""


@contextlib.contextmanager
def _captured_output():
    """Send this process's stdout/stderr (and so the compiler's) to a file; yield a reader."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = tempfile.TemporaryFile(mode="w+b")
    text = []
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        yield text
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.seek(0)
        text.append(log.read().decode(errors="replace"))
        log.close()


def _try_build(compiler, code, compile_args=(), link_args=None, name="probe"):
    """Compile ``code`` (and, when ``link_args`` is not None, link it as the extensions are linked:
    a shared object, with the same linker and LDFLAGS).

    Returns ``(ok, output)``. Nothing is run: the probes must also work when cross-compiling.
    """
    tmp = tempfile.mkdtemp(prefix="fastnn-probe-")
    try:
        src = os.path.join(tmp, name + ".c")
        with open(src, "w") as f:
            f.write(code)
        with _captured_output() as out:
            try:
                objects = compiler.compile([src], output_dir=tmp,
                                           extra_postargs=list(compile_args))
                if link_args is not None:
                    compiler.link_shared_object(
                        objects, compiler.library_filename(name, lib_type="shared"),
                        output_dir=tmp, extra_postargs=list(link_args))
                ok = True
            except (CompileError, LinkError):
                ok = False
        return ok, out[0] if out else ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compiler_kind(compiler):
    if compiler.compiler_type == "msvc":
        return "msvc"
    _, output = _try_build(compiler, COMPILER_ID_PROBE, name="compiler_id")
    for kind in ("apple-clang", "clang", "intel", "gcc"):
        if f"FASTNN_COMPILER={kind}" in output:
            return kind
    return "unknown"


def _compiler_version(compiler, kind):
    if kind == "msvc":
        return getattr(compiler, "_MSVCCompiler__version", None) or "MSVC"
    cmd = list(getattr(compiler, "compiler_so", None) or ["cc"])
    if os.path.basename(cmd[0]) in ("ccache", "sccache") and len(cmd) > 1:
        cmd = cmd[1:]
    try:
        out = subprocess.run([cmd[0], "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return cmd[0]


def _openmp_flags(kind):
    """(compile args, link args) that turn OpenMP on for this compiler."""
    if kind == "msvc":
        return ["/openmp"], []
    if kind == "apple-clang":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    if kind == "intel":
        return ["-qopenmp"], ["-qopenmp"]
    return ["-fopenmp"], ["-fopenmp"]  # gcc, clang, and a guess for anything else


def _missing_openmp_message(kind, version, compile_flags, link_flags, output):
    hints = {
        "gcc": "gcc ships OpenMP as libgomp; install the compiler's full package "
               "(Debian/Ubuntu: apt-get install gcc; Fedora: dnf install gcc libgomp).",
        "clang": "clang needs LLVM's OpenMP runtime: apt-get install libomp-dev "
                 "(or the libomp-<version>-dev matching your clang).",
        "apple-clang": "Apple clang needs LLVM's OpenMP runtime: brew install libomp, then\n"
                       '      export CPPFLAGS="-I$(brew --prefix libomp)/include"\n'
                       '      export LDFLAGS="-L$(brew --prefix libomp)/lib -Wl,-rpath,'
                       '$(brew --prefix libomp)/lib"',
        "msvc": "MSVC has /openmp built in; use a Visual Studio 2019 or newer build tools.",
    }
    tail = "\n".join(output.strip().splitlines()[-15:])
    return (
        "\n"
        "***********************************************************************************\n"
        "fastnn: OpenMP is not available with this compiler, so the kernels cannot be built\n"
        "with threads.\n"
        f"  compiler: {kind} ({version})\n"
        f"  tried:    compile {' '.join(compile_flags)}; link {' '.join(link_flags) or '-'}\n"
        "Either\n"
        f"  * install OpenMP: {hints.get(kind, 'install the OpenMP runtime of your compiler.')}\n"
        "  * or build the serial library (same results, one thread):\n"
        "      FASTNN_NO_OPENMP=1 pip install fastnn --no-binary fastnn   (or pip install .)\n"
        "The compiler said:\n"
        f"{tail}\n"
        "***********************************************************************************\n"
    )


def configure(compiler):
    """Detect the compiler, run the probes and return the build configuration (a dict)."""
    kind = _compiler_kind(compiler)
    version = _compiler_version(compiler, kind)
    if kind == "msvc":
        opt = ["/Od", "/Zi"] if DEBUG else ["/O2"]
    else:
        # -g0: no debug sections in release builds (they would triple the wheel's size).
        # -fno-trapping-math (clang's default): FP operations may raise exception *flags*
        # speculatively, so gcc can if-convert the clamps and selects of simd.h's expf / sigmoid /
        # tanh / softmax loops and vectorise them at the SSE2 baseline and on the AVX2 clone too
        # (with gcc's default only the AVX-512 clone, which has masks, was vectorised). Results
        # are the same: no reassociation, no flush-to-zero, NaN and inf kept (not fast-math).
        # -fno-math-errno (clang's default on macOS): sqrt need not set errno, so gcc inlines it
        # and vectorises optim.h's Adam loop (2.2x faster measured on AVX-512); same results.
        opt = (["-O1", "-g"] if DEBUG else ["-O3", "-g0"]) + ["-fno-trapping-math",
                                                              "-fno-math-errno"]
    compile_args, link_args, macros = list(opt), [], []
    notes = []

    if NO_OPENMP:
        macros.append(("FASTNN_NO_OPENMP", "1"))
        openmp = False
        if kind != "msvc":
            ok, _ = _try_build(compiler, SIMD_PRAGMA_PROBE, opt + ["-fopenmp-simd"], name="simd")
            if ok:
                compile_args.append("-fopenmp-simd")
            else:
                notes.append("-fopenmp-simd not accepted: '#pragma omp simd' is ignored")
    else:
        omp_compile, omp_link = _openmp_flags(kind)
        ok, output = _try_build(compiler, OPENMP_PROBE, opt + omp_compile, omp_link, name="omp")
        if not ok:
            sys.stderr.write(_missing_openmp_message(kind, version, omp_compile, omp_link,
                                                     output))
            sys.stderr.flush()
            raise SystemExit("fastnn: OpenMP not found (see the message above); "
                             "set FASTNN_NO_OPENMP=1 for a serial build")
        compile_args += omp_compile
        link_args += omp_link
        openmp = True

    machine = platform.machine().lower()
    x86_64 = machine in ("x86_64", "amd64") and sys.maxsize > 2**32 and \
        "arm64" not in os.environ.get("ARCHFLAGS", "")
    if NO_CLONES:
        clones = False
        notes.append("FASTNN_NO_CLONES=1: C helpers built for the baseline only")
    elif kind == "gcc" and x86_64:
        clones, _ = _try_build(compiler, CLONES_PROBE, opt, name="clones")
        if not clones:
            notes.append("gcc does not accept target_clones for x86-64-v3/v4 "
                         "(gcc >= 12 and ifunc needed): baseline only")
    else:
        clones = False
    if not clones:
        macros.append(("FNN_NO_CLONES", "1"))

    return {
        "compiler": kind,
        "compiler_version": version,
        "compiler_type": compiler.compiler_type,
        "extra_compile_args": compile_args,
        "extra_link_args": link_args,
        "define_macros": macros,
        "openmp": openmp,
        "simd_dispatch": ("target_clones: x86-64-v4, x86-64-v3, baseline" if clones
                          else "none (baseline only)"),
        "debug": DEBUG,
        "env": {k: os.environ[k] for k in ("FASTNN_DEBUG", "FASTNN_NO_OPENMP", "FASTNN_NO_CLONES",
                                           "CC", "CFLAGS", "CPPFLAGS", "LDFLAGS", "ARCHFLAGS")
                if os.environ.get(k)},
        "notes": notes,
    }


def _build_info_source(cfg):
    import Cython

    info = {
        "compiler": cfg["compiler"],
        "compiler_version": cfg["compiler_version"],
        "openmp": cfg["openmp"],
        "simd_dispatch": cfg["simd_dispatch"],
        "debug": cfg["debug"],
        "extra_compile_args": cfg["extra_compile_args"],
        "extra_link_args": cfg["extra_link_args"],
        "define_macros": [f"{k}={v}" if v is not None else k for k, v in cfg["define_macros"]],
        "cython_directives": {k: v for k, v in directives.items() if k != "language_level"},
        "cython": Cython.__version__,
        "numpy_build": numpy.__version__,
        "python_build": platform.python_version(),
        "platform": sysconfig.get_platform(),
        "env": cfg["env"],
        "notes": cfg["notes"],
    }
    return ('"""How this copy of fastnn was compiled (generated by setup.py; do not edit)."""\n'
            f"BUILD_INFO = {pprint.pformat(info, sort_dicts=False, width=99)}\n")


class BuildExt(build_ext):
    """setuptools' build_ext with per-compiler flags, the probes and fastnn/_build_info.py."""

    def build_extensions(self):
        cfg = configure(self.compiler)
        self.fastnn_config = cfg
        print(f"fastnn: compiler {cfg['compiler']} ({cfg['compiler_version']}); "
              f"OpenMP {'on' if cfg['openmp'] else 'off'}; "
              f"compile {' '.join(cfg['extra_compile_args'])}; "
              f"link {' '.join(cfg['extra_link_args']) or '-'}; "
              f"SIMD dispatch {cfg['simd_dispatch']}")
        for note in cfg["notes"]:
            print(f"fastnn: note: {note}")
        for ext in self.extensions:
            ext.extra_compile_args = list(cfg["extra_compile_args"])
            ext.extra_link_args = list(cfg["extra_link_args"])
            ext.define_macros = list(ext.define_macros) + list(cfg["define_macros"])
        # setuptools skips an extension whose output is newer than its sources, whatever the
        # flags: after a switch (FASTNN_NO_OPENMP, FASTNN_DEBUG, ...) rebuild everything
        info_path = os.path.join(self.build_lib, "fastnn", "_build_info.py")
        try:
            with open(info_path) as f:
                same = f.read() == _build_info_source(cfg)
        except OSError:
            same = False
        if not same and not self.force:
            print("fastnn: build flags changed (or first build here): rebuilding all extensions")
            self.force = True
        self._write_build_info(os.path.dirname(info_path))
        super().build_extensions()

    def _write_build_info(self, folder):
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "_build_info.py")
        with open(path, "w") as f:
            f.write(_build_info_source(self.fastnn_config))
        return path

    def run(self):
        super().run()
        # --inplace and editable installs: the extensions were copied beside the sources
        if self.inplace and getattr(self, "fastnn_config", None):
            build_py = self.get_finalized_command("build_py")
            self._write_build_info(build_py.get_package_dir("fastnn"))

    def get_outputs(self):
        outputs = super().get_outputs()
        return outputs + [os.path.join(self.build_lib, "fastnn", "_build_info.py")]


if __name__ == "__main__":  # setuptools' build backend runs this file as __main__ too
    setup(
        ext_modules=cythonize(
            extensions,
            compiler_directives=directives,
            include_path=["src_cython"],
        ),
        cmdclass={"build_ext": BuildExt},
    )
