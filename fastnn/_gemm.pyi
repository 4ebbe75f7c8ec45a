"""Type stub of the compiled module fastnn._gemm (src_cython/gemm.pyx). Memoryview arguments
are C-contiguous float32 or float64 arrays of one dtype."""
import numpy as np

def gemm(A: np.ndarray, B: np.ndarray, C: np.ndarray, trans_a: bool, trans_b: bool,
         accumulate: bool) -> None: ...
def gemm_kernel(level: int = ...) -> str: ...
