"""Type stub of the compiled module fastnn._losses (src_cython/losses.pyx). Memoryview arguments
are C-contiguous float32 or float64 arrays of one dtype (``labels``: int64; ``row_loss``,
``block_loss``, ``sample_weight`` and the KL ``target``: float64)."""
import numpy as np

def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, dlogits: np.ndarray,
                          row_loss: np.ndarray, scale: float, num_threads: int,
                          sample_weight: np.ndarray | None = None,
                          label_smoothing: float = 0.0) -> float: ...
def softmax(logits: np.ndarray, prob: np.ndarray, num_threads: int) -> None: ...
def sigmoid_binary_cross_entropy(logits: np.ndarray, target: np.ndarray, dlogits: np.ndarray,
                                 block_loss: np.ndarray, scale: float, num_threads: int,
                                 sample_weight: np.ndarray | None = None,
                                 row_len: int = 1) -> float: ...
def mean_squared_error(pred: np.ndarray, target: np.ndarray, dpred: np.ndarray,
                       block_loss: np.ndarray, scale: float, num_threads: int,
                       sample_weight: np.ndarray | None = None, row_len: int = 1) -> float: ...
def huber(pred: np.ndarray, target: np.ndarray, dpred: np.ndarray, block_loss: np.ndarray,
          scale: float, delta: float, num_threads: int, sample_weight: np.ndarray | None = None,
          row_len: int = 1) -> float: ...
def kl_divergence(logits: np.ndarray, target: np.ndarray, dlogits: np.ndarray,
                  row_loss: np.ndarray, scale: float, num_threads: int,
                  sample_weight: np.ndarray | None = None) -> float: ...
