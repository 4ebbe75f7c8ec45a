"""fastnn: fast neural-network training on the CPU (Cython + OpenMP kernels, Keras-like API)."""
__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
