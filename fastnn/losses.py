"""Losses on the fused kernels of ``src_cython/losses.pyx``.

Each loss is called as ``loss.forward(output, target) -> float`` (the mean over the batch) and
then ``loss.backward() -> grad`` (d mean-loss / d output, same shape as ``output``). The model's
last layer should output raw scores (logits) for the cross-entropies and the KL divergence: the
softmax/sigmoid is fused into the loss, which is both faster and numerically stable.

Sample weights: ``forward(output, target, sample_weight=w)`` with ``w`` an ``(N,)`` array of
non-negative weights gives the weighted mean over samples ``sum_n w_n l_n / sum_n w_n``, where
``l_n`` is sample n's loss (for the elementwise losses the mean over its K elements), and its
gradient. This is PyTorch's weighted-mean convention (as ``CrossEntropyLoss(weight=...)`` with
class weights, ``reduction="mean"``: divided by the sum of the weights; Keras' default
``"sum_over_batch_size"`` divides the weighted sum by N instead). ``sample_weight=None`` is the
plain mean, computed exactly as without weights; weights of 1 give bit-identical results for
SoftmaxCrossEntropy, MeanSquaredError, Huber and KLDivergence.

Also :func:`entropy` and :func:`kl_divergence` of probability arrays (NumPy, no gradient).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _losses
from . import _validation as V
from ._config import get_num_threads
from ._registry import Registry, auto_register

#: name -> loss class: class names and each class's ``aliases``; every Loss subclass registers
#: itself when it is defined (so a user's own loss saves and loads with the model)
LOSSES: Registry[Loss] = Registry("loss")

#: how far a row of probabilities may sum from 1 (KLDivergence targets, entropy, kl_divergence)
PROB_ATOL = 1e-5


class Loss:
    """Base class of losses. Subclasses define ``prepare_target``, ``forward`` (which sets
    ``self._grad``), and optionally ``metric``/``score``, ``aliases`` and ``get_config`` (their
    constructor arguments, if any: ``fastnn.load`` calls ``cls(**get_config())``).

    A subclass registers itself in :data:`LOSSES` under its class name and its ``aliases`` when
    it is defined; a model compiled with it saves, and loads again once the module defining it
    has been imported.

    Sample weights: a subclass whose ``forward`` accepts ``sample_weight=None`` (an ``(N,)``
    float64 array, checked by :meth:`check_sample_weight`) sets ``supports_sample_weight =
    True``. For any other subclass :meth:`check_sample_weight` and ``loss(..., sample_weight=w)``
    raise a TypeError naming the class (a weighted ``fit`` / ``train_on_batch`` stops at its
    first step, before any update).
    """

    #: name of the metric reported by ``fit``/``evaluate`` besides the loss (or None)
    metric: str | None = None
    #: other names ``compile(loss=...)`` accepts for this class
    aliases: tuple[str, ...] = ()
    #: whether ``forward`` takes ``sample_weight=`` (the built-in losses do)
    supports_sample_weight: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(LOSSES, cls, cls.__dict__.get("aliases", ()))

    def __init__(self) -> None:
        self._grad: np.ndarray | None = None

    def __call__(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                 sample_weight: ArrayLike | None = None) -> float:
        """``forward(output, target, prepared)``, with ``sample_weight=`` only when it is given
        (so a subclass without sample-weight support works unweighted).

        Raises
        ------
        TypeError
            ``sample_weight`` given to a loss whose ``supports_sample_weight`` is False.
        """
        if sample_weight is None:
            return self.forward(output, target, prepared)
        if not self.supports_sample_weight:
            raise TypeError(self._no_weights_message())
        return self.forward(output, target, prepared, sample_weight=sample_weight)

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                sample_weight: ArrayLike | None = None) -> float:
        """Mean loss over the batch (float); caches ``d loss / d output`` for :meth:`backward`.

        Parameters
        ----------
        output : ndarray, shape ``(N, K)``
            float32 or float64 (logits for the cross-entropies).
        target : array_like
            As the subclass documents; ``prepared=True`` means it already passed
            :meth:`prepare_target`.
        sample_weight : array_like, shape ``(N,)``, optional
            Per-sample weights (:meth:`check_sample_weight`): the loss is then the weighted mean
            ``sum_n w_n l_n / sum_n w_n``. Only for subclasses with ``supports_sample_weight =
            True``; others may leave the argument out of their ``forward`` (call them through
            ``loss(...)``, which passes it only when given).

        Raises
        ------
        ValueError, TypeError
            Bad output or target shapes, dtypes or values; bad sample weights.
        """
        raise NotImplementedError

    def _no_weights_message(self) -> str:
        name = type(self).__name__
        return (f"{name} does not support sample_weight (nor fit's class_weight): its forward "
                f"must accept sample_weight=None, an (N,) float64 array, and {name} must set "
                f"supports_sample_weight = True")

    def check_sample_weight(self, sample_weight: ArrayLike, n: int) -> np.ndarray:
        """Validate per-sample weights for a batch of ``n`` samples.

        Parameters
        ----------
        sample_weight : array_like, shape ``(n,)``
            Real, finite, ``>= 0``, not all 0.
        n : int
            The number of samples ``N``.

        Returns
        -------
        ndarray, shape ``(n,)``, float64, C-contiguous

        Raises
        ------
        TypeError
            If this loss does not support sample weights (``supports_sample_weight`` is False),
            or the weights are not numeric.
        ValueError
            Wrong shape, NaN or inf, a negative weight, or all weights 0.
        """
        if not self.supports_sample_weight:
            raise TypeError(self._no_weights_message())
        if isinstance(sample_weight, (numbers.Number, np.generic)) \
                or (isinstance(sample_weight, np.ndarray) and sample_weight.ndim == 0):
            raise ValueError(f"sample_weight must have shape ({n},) (one weight per sample), got "
                             f"a scalar")
        w = V.as_float_array(sample_weight, "sample_weight", np.float64, allow_empty=True,
                             check_finite=False)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},) (one weight per sample), got "
                             f"{w.shape}")
        if not np.isfinite(w).all():
            raise ValueError("sample_weight contains NaN or inf")
        if n and w.min() < 0:
            raise ValueError(f"sample_weight must be >= 0, got a minimum of {w.min()}")
        if not np.any(w > 0):
            raise ValueError("sample_weight is all 0: the weighted mean is undefined")
        return w

    def _weights_and_scale(self, sample_weight: ArrayLike | None, n: int,
                           k: int) -> tuple[np.ndarray | None, float]:
        """(checked weights or None, the kernels' scale): ``1 / (n k)`` unweighted, else
        ``1 / (k sum(w))`` (the weighted mean over samples of the mean over k elements)."""
        if sample_weight is None:
            return None, 1.0 / (n * k)
        w = self.check_sample_weight(sample_weight, n)
        return w, 1.0 / (k * float(w.sum()))

    def backward(self) -> np.ndarray:
        """Gradient of the last ``forward``'s mean loss with respect to ``output``.

        Raises
        ------
        RuntimeError
            If ``forward`` was not called first.
        """
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._grad

    def _buffer(self, key: str, shape: Sequence[int], dtype: DTypeLike) -> np.ndarray:
        bufs = self.__dict__.setdefault("_buffers", {})
        buf = bufs.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            bufs[key] = buf
        return buf

    def check_output(self, output: ArrayLike) -> np.ndarray:
        if not isinstance(output, np.ndarray) or output.dtype not in V.FLOAT_DTYPES:
            output = V.as_float_array(output, "output", np.float32, check_finite=False)
        if not output.flags.c_contiguous:
            output = np.ascontiguousarray(output)
        if output.ndim != 2:
            raise ValueError(f"output must have shape (N, K), got {output.shape}")
        if output.shape[0] == 0:
            raise ValueError("output is empty (0 samples)")
        return output

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        """Validate ``target`` for an output of ``output_shape``; returns the checked array."""
        raise NotImplementedError

    def score(self, output: np.ndarray, target: np.ndarray) -> float | None:
        """The metric for already-prepared targets (e.g. accuracy), or None."""
        return None

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (saved with the model); ``{}`` by default."""
        return {}


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused (as ``torch.nn.CrossEntropyLoss``).

    With the target distribution ``t_n = (1 - eps) onehot(y_n) + eps / K`` (``eps`` =
    ``label_smoothing``; 0: the one-hot) and weights ``w_n`` (1 without ``sample_weight``)::

        l_n  = logsumexp(z_n) - sum_k t_nk z_nk
        loss = sum_n w_n l_n / sum_n w_n
        d loss / d z_n = w_n (softmax(z_n) - t_n) / sum_n w_n

    Without smoothing and weights: ``mean_n [logsumexp(z_n) - z_n[y_n]]``, gradient
    ``(softmax(z) - onehot(y)) / N``. Stable for any finite logits (max subtracted).

    Parameters
    ----------
    label_smoothing : float, default=0.0
        ``eps`` in ``[0, 1]``: PyTorch's ``CrossEntropyLoss(label_smoothing=eps)`` (Szegedy et
        al. 2016), for integer labels and one-hot targets alike. Saved with the model.

    Shape
    -----
    - output (logits): ``(N, K)``, float32 or float64.
    - target: ``(N,)`` integer labels in ``[0, K)`` (int dtype, or floats without fraction), or a
      one-hot ``(N, K)`` matrix.
    - sample_weight: ``(N,)``, optional (see :meth:`Loss.check_sample_weight`).

    Raises
    ------
    ValueError
        Labels out of range, wrong length, or a 2-D target that is not one-hot;
        ``label_smoothing`` outside ``[0, 1]``; bad sample weights.
    TypeError
        Non-integer label dtype; ``label_smoothing`` not a real number.

    References
    ----------
    Bishop, "Pattern Recognition and Machine Learning", 2006, eq. 4.108-4.109. Szegedy et al.,
    "Rethinking the Inception Architecture for Computer Vision", CVPR 2016 (label smoothing).
    PyTorch ``torch.nn.CrossEntropyLoss`` (``label_smoothing``, ``weight``: the weighted mean).
    """

    metric = "accuracy"
    aliases = ("softmax_cross_entropy", "categorical_crossentropy", "cross_entropy")
    supports_sample_weight = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = V.check_float(label_smoothing, "label_smoothing", minimum=0.0,
                                             maximum=1.0)

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        return V.check_labels(target, "y", output_shape[0], output_shape[1])

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                sample_weight: ArrayLike | None = None) -> float:
        z = self.check_output(output)
        # prepared: ``target`` is the array prepare_target returned
        y = cast(np.ndarray, target) if prepared else self.prepare_target(target, z.shape)
        N = z.shape[0]
        w, scale = self._weights_and_scale(sample_weight, N, 1)
        grad = self._buffer("grad", z.shape, z.dtype)
        rows = self._buffer("rows", (N,), np.float64)
        loss = _losses.softmax_cross_entropy(z, y, grad, rows, scale, get_num_threads(), w,
                                             self.label_smoothing)
        self._grad = grad
        return loss

    def score(self, output: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean(np.argmax(output, axis=1) == target))

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        """Row softmax of logits ``(N, K)``."""
        prob = np.empty_like(output)
        _losses.softmax(np.ascontiguousarray(output), prob, get_num_threads())
        return prob


class BinaryCrossEntropy(Loss):
    """Sigmoid followed by binary cross-entropy on logits, fused (as torch's BCEWithLogitsLoss).

    ``loss = mean over all elements of max(z, 0) - z y + log(1 + exp(-|z|))``, gradient
    ``(sigmoid(z) - y) / (N K)``. With ``sample_weight`` ``w``: ``sum_n w_n l_n / sum_n w_n``,
    ``l_n`` the mean over sample n's K elements; gradient ``w_n (sigmoid(z) - y) / (K sum w)``.

    Shape
    -----
    - output (logits): ``(N, K)`` (``K = 1`` for binary classification, ``K > 1`` multi-label).
    - target: same shape, or ``(N,)`` when ``K = 1``; values in ``[0, 1]``.
    - sample_weight: ``(N,)``, optional.

    Raises
    ------
    ValueError
        Wrong target shape, or values outside [0, 1], NaN or inf; bad sample weights.
    """

    metric = "accuracy"
    aliases = ("binary_cross_entropy", "binary_crossentropy")
    supports_sample_weight = True

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        N, K = output_shape
        t = V.as_float_array(target, "y", np.float64, ndim=(1, 2))
        if t.ndim == 1 and K == 1:
            t = t.reshape(N, 1) if t.shape[0] == N else t
        if t.shape != (N, K):
            raise ValueError(f"y must have shape ({N}, {K})" + (f" or ({N},)" if K == 1 else "")
                             + f" to match the output, got {np.shape(target)}")
        if t.min() < 0 or t.max() > 1:
            raise ValueError(f"y must be in [0, 1] for binary cross-entropy, got values in "
                             f"[{t.min()}, {t.max()}]")
        return t

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                sample_weight: ArrayLike | None = None) -> float:
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        t = np.ascontiguousarray(t, dtype=z.dtype)
        N, K = z.shape
        L = z.size
        w, scale = self._weights_and_scale(sample_weight, N, K)
        grad = self._buffer("grad", z.shape, z.dtype)
        blocks = self._buffer("blocks", ((L + 4095) // 4096,), np.float64)
        loss = _losses.sigmoid_binary_cross_entropy(z.reshape(-1), t.reshape(-1),
                                                    grad.reshape(-1), blocks, scale,
                                                    get_num_threads(), w, K)
        self._grad = grad
        return loss

    def score(self, output: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean((output > 0) == (target >= 0.5)))

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        """Elementwise sigmoid of logits, stable for both signs."""
        out = np.empty_like(output)
        pos = output >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-output[pos]))
        e = np.exp(output[~pos])
        out[~pos] = e / (1.0 + e)
        return out


def _regression_target(target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
    """``(N, K)`` float64 targets (``(N,)`` accepted when K = 1), finite."""
    N, K = output_shape
    t = V.as_float_array(target, "y", np.float64, ndim=(1, 2))
    if t.ndim == 1 and K == 1 and t.shape[0] == N:
        t = t.reshape(N, 1)
    if t.shape != (N, K):
        raise ValueError(f"y must have shape ({N}, {K}) to match the output, got "
                         f"{np.shape(target)}")
    return t


class MeanSquaredError(Loss):
    """Mean squared error over all elements: ``mean((output - target)^2)`` (as torch's MSELoss).

    Gradient ``2 (output - target) / (N K)``. With ``sample_weight`` ``w``:
    ``sum_n w_n l_n / sum_n w_n``, ``l_n`` the mean over sample n's K elements; gradient
    ``2 w_n (output - target) / (K sum w)``.

    Shape
    -----
    - output: ``(N, K)``.
    - target: same shape, or ``(N,)`` when ``K = 1``.
    - sample_weight: ``(N,)``, optional.

    Raises
    ------
    ValueError
        Wrong target shape, NaN or inf; bad sample weights.
    """

    aliases = ("mse", "mean_squared_error")
    supports_sample_weight = True

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        return _regression_target(target, output_shape)

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                sample_weight: ArrayLike | None = None) -> float:
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        t = np.ascontiguousarray(t, dtype=z.dtype)
        N, K = z.shape
        L = z.size
        w, scale = self._weights_and_scale(sample_weight, N, K)
        grad = self._buffer("grad", z.shape, z.dtype)
        blocks = self._buffer("blocks", ((L + 4095) // 4096,), np.float64)
        loss = _losses.mean_squared_error(z.reshape(-1), t.reshape(-1), grad.reshape(-1),
                                          blocks, scale, get_num_threads(), w, K)
        self._grad = grad
        return loss


class Huber(Loss):
    """Huber loss, mean over all elements (as ``torch.nn.HuberLoss(delta=delta)``).

    With ``d = output - target``, elementwise::

        h(d) = 0.5 d^2                    if |d| < delta
               delta (|d| - 0.5 delta)    otherwise
        loss = mean over the N K elements of h(d)
        d loss / d output = h'(d) / (N K),  h'(d) = d if |d| < delta else delta sign(d)

    Quadratic near 0, linear beyond ``delta``: a squared error whose gradient is clipped to
    ``[-delta, delta]`` (the DQN's "error clipping"). With ``sample_weight`` ``w``:
    ``sum_n w_n l_n / sum_n w_n``, ``l_n`` the mean of ``h`` over sample n's K elements; gradient
    ``w_n h'(d) / (K sum w)``. No metric (``fit`` reports the loss; ``metrics=["mae"]`` adds one).

    Parameters
    ----------
    delta : float, default=1.0
        Where the quadratic part turns linear, ``> 0``. Saved with the model.

    Shape
    -----
    - output: ``(N, K)``, float32 or float64.
    - target: same shape, or ``(N,)`` when ``K = 1``.
    - sample_weight: ``(N,)``, optional.

    Raises
    ------
    ValueError
        ``delta <= 0`` or not finite; wrong target shape, NaN or inf; bad sample weights.
    TypeError
        ``delta`` not a real number.

    References
    ----------
    Huber, "Robust Estimation of a Location Parameter", Ann. Math. Statist. 1964. PyTorch
    ``torch.nn.HuberLoss``; Keras ``keras.losses.Huber`` (the same values for ``delta``).
    Mnih et al., "Human-level control through deep reinforcement learning", Nature 2015.
    """

    aliases = ("huber", "huber_loss")
    supports_sample_weight = True

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = V.check_float(delta, "delta", minimum=0.0, min_inclusive=False)

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta}

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        return _regression_target(target, output_shape)

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                sample_weight: ArrayLike | None = None) -> float:
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        t = np.ascontiguousarray(t, dtype=z.dtype)
        N, K = z.shape
        L = z.size
        w, scale = self._weights_and_scale(sample_weight, N, K)
        grad = self._buffer("grad", z.shape, z.dtype)
        blocks = self._buffer("blocks", ((L + 4095) // 4096,), np.float64)
        loss = _losses.huber(z.reshape(-1), t.reshape(-1), grad.reshape(-1), blocks, scale,
                             self.delta, get_num_threads(), w, K)
        self._grad = grad
        return loss


def _as_float64(p: ArrayLike, name: str, axis: int,
                ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """float64 array of at least 1 dimension (a scalar is refused before the conversion, which
    would make it 1-D)."""
    if isinstance(p, (numbers.Number, np.generic)) or (isinstance(p, np.ndarray) and p.ndim == 0):
        raise ValueError(f"{name} must have at least 1 dimension (probability vectors along "
                         f"axis {axis}), got a scalar")
    return V.as_float_array(p, name, np.float64, ndim=ndim, allow_empty=True)


def _check_probabilities(p: ArrayLike, name: str, axis: int = -1,
                         ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """float64 array of probability vectors along ``axis``: finite, >= 0, summing to 1 within
    :data:`PROB_ATOL`."""
    a = _as_float64(p, name, axis, ndim)
    axis = V.check_int(axis, "axis")
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with {a.ndim} dimensions")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be probabilities (>= 0), got a minimum of {a.min()}")
    sums = a.sum(axis=axis)
    if sums.size:
        err = np.abs(sums - 1.0)
        worst = np.unravel_index(np.argmax(err), sums.shape)
        if err[worst] > PROB_ATOL:
            where = f" at index {tuple(int(i) for i in worst)}" if sums.ndim else ""
            raise ValueError(f"{name} must hold probability vectors along axis {axis} summing to "
                             f"1 (within {PROB_ATOL}), got a sum of {sums[worst]!r}{where}")
    return a


def _float_or_array(out: np.ndarray) -> float | np.ndarray:
    return float(out) if out.ndim == 0 else out


def entropy(p: ArrayLike, axis: int = -1) -> float | np.ndarray:
    """Shannon entropy in nats, ``H(p) = -sum_k p_k log p_k`` with ``0 log 0 = 0``.

    As ``scipy.stats.entropy(p, axis=axis)``, except that ``p`` must already be normalised.

    Parameters
    ----------
    p : array_like, shape ``(..., K, ...)``
        Probability vectors along ``axis``: finite, ``>= 0``, summing to 1 within
        :data:`PROB_ATOL`.
    axis : int, default=-1
        The axis of the K probabilities.

    Returns
    -------
    float or ndarray
        float64; ``p``'s shape without ``axis`` (a float for 1-D ``p``). In ``[0, log K]``.

    Raises
    ------
    ValueError
        NaN or inf, negative entries, sums away from 1, ``axis`` out of range.
    TypeError
        Non-numeric ``p``, non-integer ``axis``.
    """
    a = _check_probabilities(p, "p", axis)
    pos = a > 0
    terms = np.zeros_like(a)
    terms[pos] = -a[pos] * np.log(a[pos])
    return _float_or_array(terms.sum(axis=axis))


def kl_divergence(p: ArrayLike, q: ArrayLike, axis: int = -1) -> float | np.ndarray:
    """Kullback-Leibler divergence in nats, ``KL(p || q) = sum_k p_k (log p_k - log q_k)``.

    ``0 log 0 = 0`` (entries with ``p_k = 0`` add nothing); ``q_k = 0`` where ``p_k > 0`` gives
    ``inf``. As ``scipy.special.rel_entr(p, q).sum(axis)`` and ``scipy.stats.entropy(p, q)`` for
    normalised inputs. :class:`KLDivergence` is the loss (on logits, with a gradient).

    Parameters
    ----------
    p, q : array_like
        Probability vectors along ``axis`` (finite, ``>= 0``, summing to 1 within
        :data:`PROB_ATOL`); shapes that broadcast against each other.
    axis : int, default=-1
        The axis of the K probabilities (of the broadcast shape).

    Returns
    -------
    float or ndarray
        float64, ``>= 0``; the broadcast shape without ``axis`` (a float for 1-D inputs).

    Raises
    ------
    ValueError
        NaN or inf, negative entries, sums away from 1, shapes that do not broadcast, ``axis``
        out of range.
    TypeError
        Non-numeric input, non-integer ``axis``.
    """
    a = _as_float64(p, "p", axis)
    b = _as_float64(q, "q", axis)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"p of shape {a.shape} and q of shape {b.shape} do not broadcast "
                         f"against each other") from None
    a = _check_probabilities(np.broadcast_to(a, shape), "p", axis)
    b = _check_probabilities(np.broadcast_to(b, shape), "q", axis)
    pos = a > 0
    terms = np.zeros(shape)
    with np.errstate(divide="ignore"):  # q = 0 where p > 0: log 0 = -inf, the term is inf
        terms[pos] = a[pos] * (np.log(a[pos]) - np.log(b[pos]))
    return _float_or_array(terms.sum(axis=axis))


class KLDivergence(Loss):
    """Softmax followed by the Kullback-Leibler divergence from target distributions, fused.

    ``KL(t || softmax(z))`` per sample, mean over the batch (PyTorch's
    ``KLDivLoss(reduction="batchmean")`` on ``log_softmax(z)``; Keras' ``KLDivergence`` on
    ``softmax(z)``)::

        l_n  = sum_k t_nk (log t_nk - log_softmax(z_n)_k),   0 log 0 = 0
        loss = sum_n w_n l_n / sum_n w_n                      (w_n = 1: the mean over N)
        d loss / d z_n = w_n (softmax(z_n) sum_k t_nk - t_n) / sum_n w_n

    One-hot targets give finite values (then ``l_n`` is the cross-entropy). The loss is
    non-negative, 0 where ``softmax(z_n) = t_n``; it differs from the soft-target cross-entropy
    by the target's entropy, a constant.

    Shape
    -----
    - output (logits): ``(N, K)``, float32 or float64.
    - target: ``(N, K)`` probability rows: finite, ``>= 0``, each summing to 1 within
      :data:`PROB_ATOL`.
    - sample_weight: ``(N,)``, optional.

    Raises
    ------
    ValueError
        Wrong target shape, NaN or inf, negative entries, rows not summing to 1; bad sample
        weights.

    References
    ----------
    Kullback and Leibler, "On Information and Sufficiency", Ann. Math. Statist. 1951. PyTorch
    ``torch.nn.KLDivLoss`` (``reduction="batchmean"`` is the mathematically correct KL).
    """

    aliases = ("kl_divergence", "kld", "KLD", "kullback_leibler_divergence", "kl_div")
    supports_sample_weight = True

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        N, K = output_shape
        t = V.as_float_array(target, "y", np.float64, ndim=2)
        if t.shape != (N, K):
            raise ValueError(f"y must have shape ({N}, {K}) (a probability row per sample) to "
                             f"match the output, got {t.shape}")
        return _check_probabilities(t, "y", axis=1)

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False,
                sample_weight: ArrayLike | None = None) -> float:
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        t = np.ascontiguousarray(t, dtype=np.float64)
        N = z.shape[0]
        w, scale = self._weights_and_scale(sample_weight, N, 1)
        grad = self._buffer("grad", z.shape, z.dtype)
        rows = self._buffer("rows", (N,), np.float64)
        loss = _losses.kl_divergence(z, t, grad, rows, scale, get_num_threads(), w)
        self._grad = grad
        return loss

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        """Row softmax of logits ``(N, K)`` (the predicted distributions)."""
        return SoftmaxCrossEntropy.probabilities(output)


def get(loss: Any) -> Loss:
    """A Loss instance from an instance, a class or a registered name (see ``LOSSES``).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"unknown loss {loss!r}; use a Loss instance or one of {sorted(LOSSES)}")
