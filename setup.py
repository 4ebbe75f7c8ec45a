"""Build fastnn's Cython kernels (src_cython/) as extension modules of the fastnn package.

Environment switches
--------------------
FASTNN_DEBUG=1      Cython bounds/wraparound/initialized checks on, ``-O1 -g``.
FASTNN_NO_OPENMP=1  build without OpenMP (serial kernels, same results).

Compiler directives are set here only (never in the .pyx files) so the debug switch works.
No ``-march=native`` and no ``-ffast-math``: the hot C helpers in ``src_cython/simd.h`` carry
``target_clones`` and are dispatched at run time (x86-64 baseline, v3 = AVX2+FMA, v4 = AVX-512).
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTNN_DEBUG", "0") == "1"
NO_OPENMP = os.environ.get("FASTNN_NO_OPENMP", "0") == "1"

if sys.platform == "win32":
    compile_args = ["/O2"] + ([] if NO_OPENMP else ["/openmp"])
    link_args = []
elif sys.platform == "darwin":
    compile_args = ["-O3"] + ([] if NO_OPENMP else ["-Xpreprocessor", "-fopenmp"])
    link_args = [] if NO_OPENMP else ["-lomp"]
else:
    compile_args = (["-O1", "-g"] if DEBUG else ["-O3"]) + ([] if NO_OPENMP else ["-fopenmp"])
    link_args = [] if NO_OPENMP else ["-fopenmp"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "freethreading_compatible": False,
}

KERNELS = ["_threads", "activations", "dense", "softmax_ce", "optim", "conv"]

extensions = [
    Extension(
        f"fastnn._{name.lstrip('_')}" if not name.startswith("_") else f"fastnn.{name}",
        [f"src_cython/{name}.pyx"],
        include_dirs=[numpy.get_include(), "src_cython"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("FASTNN_NO_OPENMP", "1")] if NO_OPENMP else []),
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in KERNELS
    if os.path.exists(f"src_cython/{name}.pyx")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["src_cython"],
        compile_time_env={"FASTNN_OPENMP": not NO_OPENMP},
    ),
)
