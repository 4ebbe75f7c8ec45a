"""Type stub of the compiled module fastnn._optim (src_cython/optim.pyx). Memoryview arguments
are flat C-contiguous float32 or float64 arrays of one dtype. ``grad_scale`` and ``clip_value``
(defaults 1 and inf) clip the gradient as the update reads it: ``clamp(grad * grad_scale,
-clip_value, clip_value)``; the gradient array is not written."""
import numpy as np

def sgd_update(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, learning_rate: float,
               momentum: float, nesterov: bool, weight_decay: float, num_threads: int,
               grad_scale: float = ..., clip_value: float = ...) -> None: ...
def adam_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray,
                learning_rate: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                step: int, num_threads: int, grad_scale: float = ...,
                clip_value: float = ...) -> None: ...
def adamw_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray,
                 learning_rate: float, beta1: float, beta2: float, eps: float,
                 weight_decay: float, step: int, num_threads: int, grad_scale: float = ...,
                 clip_value: float = ...) -> None: ...
def rmsprop_update(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
                   grad_avg: np.ndarray, momentum_buffer: np.ndarray, learning_rate: float,
                   rho: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                   num_threads: int, grad_scale: float = ..., clip_value: float = ...) -> None: ...
def adagrad_update(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray,
                   learning_rate: float, eps: float, weight_decay: float, lr_decay: float,
                   step: int, num_threads: int, grad_scale: float = ...,
                   clip_value: float = ...) -> None: ...
def grad_norm(grad: np.ndarray, num_threads: int) -> float: ...
