"""Type stub of the compiled module fastnn._optim (src_cython/optim.pyx). Memoryview arguments
are flat C-contiguous float32 or float64 arrays of one dtype."""
import numpy as np

def sgd_update(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, learning_rate: float,
               momentum: float, nesterov: bool, weight_decay: float, num_threads: int) -> None: ...
def adam_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray,
                learning_rate: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                step: int, num_threads: int) -> None: ...
