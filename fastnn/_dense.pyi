"""Type stub of the compiled module fastnn._dense (src_cython/dense.pyx). Memoryview arguments
are C-contiguous float32 or float64 arrays of one dtype."""
import numpy as np

def forward(X: np.ndarray, W: np.ndarray, b: np.ndarray, A: np.ndarray, kind: int, alpha: float,
            num_threads: int) -> None: ...
def backward(X: np.ndarray, W: np.ndarray, A: np.ndarray, dA: np.ndarray, dZ: np.ndarray,
             dW: np.ndarray, db: np.ndarray, dX: np.ndarray | None, kind: int, alpha: float,
             num_threads: int) -> None: ...
def install_blas_hook(addr: int) -> None: ...
