"""sgemm roofline of the cnn train step and forward pass: see :mod:`bench._sgemm`."""
from ._sgemm import build, build_predict, configure_threads, versions  # noqa: F401
