"""Type stub of the compiled module fastnn._norm (src_cython/norm.pyx). Memoryview arguments are
C-contiguous float32 or float64 arrays of one dtype (``mask``: uint8; ``mean``, ``var`` and
``invstd``: float64)."""
import numpy as np

def dropout_forward(X: np.ndarray, Y: np.ndarray, mask: np.ndarray, rate: float, seed: int,
                    step: int, num_threads: int) -> None: ...
def dropout_backward(dY: np.ndarray, mask: np.ndarray, dX: np.ndarray, rate: float,
                     num_threads: int) -> None: ...
def batchnorm_forward(X: np.ndarray, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                      var: np.ndarray, invstd: np.ndarray, Y: np.ndarray, eps: float,
                      training: bool, num_threads: int) -> None: ...
def batchnorm_backward(X: np.ndarray, dY: np.ndarray, weight: np.ndarray, mean: np.ndarray,
                       invstd: np.ndarray, dX: np.ndarray | None, dweight: np.ndarray,
                       dbias: np.ndarray, training: bool, num_threads: int) -> None: ...
def layernorm_forward(X: np.ndarray, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                      invstd: np.ndarray, Y: np.ndarray, eps: float, num_threads: int) -> None: ...
def layernorm_backward(X: np.ndarray, dY: np.ndarray, weight: np.ndarray, mean: np.ndarray,
                       invstd: np.ndarray, dX: np.ndarray | None, dweight: np.ndarray,
                       dbias: np.ndarray, num_threads: int) -> None: ...
