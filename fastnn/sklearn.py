"""scikit-learn estimators on fastnn's kernels: :class:`MLPClassifier` and :class:`MLPRegressor`.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` (their
parameter names, defaults and training semantics: Glorot-uniform initialisation from
``random_state``, mini-batches of ``min(200, n)``, the L2 penalty ``alpha``, ``tol`` /
``n_iter_no_change`` stopping, ``early_stopping`` on a held-out split, ``loss_curve_``), trained
in float32 by fastnn's fused OpenMP kernels, plus ``dropout`` and ``n_threads``.

Needs the optional extra ``pip install fastnn[sklearn]`` (scikit-learn >= 1.6);
``import fastnn`` does not import this module or scikit-learn.
"""
from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import _config, _optim
from .layers import Dense, Dropout
from .losses import BinaryCrossEntropy, Loss, MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .optimizers import SGD, Adam, Optimizer

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's activation names -> fastnn's
_ACTIVATIONS = {"identity": None, "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}

#: checks of ``check_estimator`` these estimators cannot pass, with the reason (pass as
#: ``expected_failed_checks=`` to ``check_estimator`` / ``parametrize_with_checks``)
EXPECTED_FAILED_CHECKS: dict[str, str] = {
    "check_sample_weight_equivalence_on_dense_data": (
        "mini-batch training: repeating a sample changes the batches (and scikit-learn's own "
        "MLP passes this check only with solver='lbfgs', which fastnn does not have)"),
    "check_sample_weight_equivalence_on_sparse_data": (
        "mini-batch training: repeating a sample changes the batches (as on dense data)"),
}


#: the thread tuners of fits with a given n_threads, so that what one fit learned carries over
_TUNERS: dict[int, _config.ThreadTuner] = {}


@contextlib.contextmanager
def _thread_limit(n_threads: int | None, tune: bool = False) -> Iterator[
        _config.ThreadTuner | None]:
    """Run fastnn's kernels on at most ``n_threads`` threads, never more than the OpenMP limit
    in force (``OMP_NUM_THREADS``, threadpoolctl's ``threadpool_limits``, joblib's workers).

    With ``tune`` (``fit``), yields a :class:`fastnn._config.ThreadTuner` choosing between that
    count and 1 as ``Sequential.fit`` does (on a machine where another process keeps a core
    busy, 2 threads can be many times slower than 1; results do not depend on the count).
    ``n_threads=None``: fastnn's default count (and the process's tuner), or the count fixed by
    ``fastnn.set_num_threads``.
    """
    old = _config._num_threads
    if n_threads is None:
        if tune and old is None:
            with _config.ThreadTuner.shared() as shared:
                yield shared
        else:
            yield None
        return
    n = min(int(n_threads), max(1, _config._threads.omp_max_threads()))
    tuner = None
    if tune and n > 1 and _config._threads.openmp_enabled():
        tuner = _TUNERS.get(n)
        if tuner is None:
            tuner = _TUNERS[n] = _config.ThreadTuner()
            tuner.choices = (n, 1)
            tuner.current = n
            tuner.active = True
    try:
        if tuner is not None:
            with tuner:
                yield tuner
        else:
            _config.set_num_threads(n)
            yield None
    finally:
        _config._num_threads = old


def _check_param(value: Any, name: str, kind: type | tuple[type, ...], low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False) -> None:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise TypeError(f"{name} must be {getattr(kind, '__name__', kind)}, got "
                        f"{type(value).__name__} {value!r}")
    if kind is bool:
        return
    v = float(cast(Any, value))
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or low_open and v == low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or high_open and v == high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


class _BaseMLP(BaseEstimator):
    """Shared training code of :class:`MLPClassifier` and :class:`MLPRegressor`."""

    def __init__(self, hidden_layer_sizes: int | Sequence[int] = (100,),
                 activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: int | str = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, dropout: float = 0.0,
                 n_threads: int | None = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.n_threads = n_threads

    # -- what the subclasses define -------------------------------------------------------------
    def _validate_input(self, X: Any, y: Any, incremental: bool,
                        reset: bool) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _make_loss(self) -> tuple[Loss, float, float]:
        """(fastnn loss, scale of its value, scale of its gradient) giving scikit-learn's."""
        raise NotImplementedError

    def _score(self, X: np.ndarray, y: Any, sample_weight: np.ndarray | None) -> float:
        raise NotImplementedError

    # -- checks -----------------------------------------------------------------------------
    def _hidden_sizes(self) -> list[int]:
        sizes: Any = self.hidden_layer_sizes
        if isinstance(sizes, (numbers.Integral, np.integer)) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints, got "
                            f"{type(sizes).__name__}") from None
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)):
                raise TypeError(f"hidden_layer_sizes must hold ints, got {s!r}")
            if s <= 0:
                raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _validate_params(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"solver must be 'adam' or 'sgd' (fastnn has no 'lbfgs'), got "
                             f"{self.solver!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError(f"learning_rate must be 'constant', 'invscaling' or 'adaptive', "
                             f"got {self.learning_rate!r}")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_param(self.batch_size, "batch_size", (numbers.Integral, np.integer), 1)
        real = (numbers.Real, np.floating, np.integer)
        _check_param(self.alpha, "alpha", real, 0.0)
        _check_param(self.learning_rate_init, "learning_rate_init", real, 0.0, low_open=True)
        _check_param(self.power_t, "power_t", real, 0.0)
        _check_param(self.max_iter, "max_iter", (numbers.Integral, np.integer), 1)
        _check_param(self.tol, "tol", real, 0.0)
        _check_param(self.momentum, "momentum", real, 0.0, 1.0, high_open=True)
        _check_param(self.validation_fraction, "validation_fraction", real, 0.0, 1.0,
                     low_open=True, high_open=True)
        _check_param(self.beta_1, "beta_1", real, 0.0, 1.0, high_open=True)
        _check_param(self.beta_2, "beta_2", real, 0.0, 1.0, high_open=True)
        _check_param(self.epsilon, "epsilon", real, 0.0, low_open=True)
        _check_param(self.n_iter_no_change, "n_iter_no_change",
                     (numbers.Integral, np.integer), 1)
        _check_param(self.dropout, "dropout", real, 0.0, 1.0, high_open=True)
        if self.n_threads is not None:
            _check_param(self.n_threads, "n_threads", (numbers.Integral, np.integer), 1)

    # -- the network ------------------------------------------------------------------------
    def _initialize(self, n_features: int, n_outputs: int) -> None:
        """Build ``model_`` with scikit-learn's initialisation (``_init_coef``: weights and
        biases uniform in ``+-sqrt(f / (fan_in + fan_out))``, ``f = 2`` for logistic, else 6,
        drawn from ``random_state`` in the same order) and reset the training record."""
        sizes = [n_features] + self._hidden_sizes() + [n_outputs]
        act = _ACTIVATIONS[self.activation]
        layers: list[Any] = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            layers.append(Dense(sizes[i], sizes[i + 1], activation=None if last else act))
            if not last and self.dropout > 0:
                seed = int(self._random_state.randint(0, 2**31 - 1))
                layers.append(Dropout(float(self.dropout), seed=seed))
        model = Sequential(layers, dtype="float32", seed=0)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for layer in self._dense_layers(model):
            fan_in, fan_out = layer.in_features, layer.out_features
            bound = np.sqrt(factor / (fan_in + fan_out))
            layer.params["weight"][...] = self._random_state.uniform(-bound, bound,
                                                                     (fan_in, fan_out))
            layer.params["bias"][...] = self._random_state.uniform(-bound, bound, fan_out)
        self.model_ = model
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_outputs
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = -np.inf
            self.best_loss_: float | None = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf
        self._best_weights = model.get_weights()

    @staticmethod
    def _dense_layers(model: Sequential) -> list[Dense]:
        return [layer for layer in model.layers if isinstance(layer, Dense)]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices ``(fan_in, fan_out)`` of each layer, float64 copies (as
        scikit-learn's ``coefs_``; the model itself computes in float32)."""
        check_is_fitted(self, "model_")
        return [np.array(d.weight, dtype=np.float64) for d in self._dense_layers(self.model_)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors ``(fan_out,)`` of each layer, float64 copies."""
        check_is_fitted(self, "model_")
        return [np.array(d.bias, dtype=np.float64) for d in self._dense_layers(self.model_)]

    def _make_optimizer(self) -> Optimizer:
        if self.solver == "adam":
            return Adam(float(self.learning_rate_init), beta1=float(self.beta_1),
                        beta2=float(self.beta_2), eps=float(self.epsilon))
        momentum = float(self.momentum)
        return SGD(float(self.learning_rate_init), momentum=momentum,
                   nesterov=bool(self.nesterovs_momentum) and momentum > 0)

    # -- training -----------------------------------------------------------------------------
    @staticmethod
    def _check_sample_weight(sample_weight: Any, n: int) -> np.ndarray:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(n, float(w))
        if w.shape != (n,):
            raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)!")
        if not np.isfinite(w).all():
            raise ValueError("sample_weight contains NaN or infinity")
        if n and w.min() < 0:
            raise ValueError("Negative values in data passed to sample_weight")
        if n and not np.any(w > 0):
            raise ValueError("Sample weights must contain at least one non-zero number.")
        return w

    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False) -> Any:
        self._validate_params()
        first_pass = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        Xc, yc = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = Xc.shape
        sw = None if sample_weight is None else self._check_sample_weight(sample_weight,
                                                                         n_samples)
        if yc.ndim == 1:
            yc = yc.reshape((-1, 1))
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(n_features, yc.shape[1])
        else:
            sizes = [d.out_features for d in self._dense_layers(self.model_)]
            if yc.shape[1] != self.n_outputs_ or sizes[:-1] != self._hidden_sizes():
                raise ValueError(f"the fitted network has hidden layers {sizes[:-1]} and "
                                 f"{self.n_outputs_} outputs; hidden_layer_sizes="
                                 f"{self.hidden_layer_sizes} and y with {yc.shape[1]} outputs "
                                 f"need a new fit (warm_start=False)")
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer()
        loss, loss_scale, grad_scale = self._make_loss()
        self.model_.compile(self._optimizer, loss)
        with _thread_limit(self.n_threads, tune=True) as tuner:
            self._fit_stochastic(Xc, yc, sw, incremental, loss_scale, grad_scale, tuner)
        if not all(np.isfinite(d.weight).all() and np.isfinite(d.bias).all()
                   for d in self._dense_layers(self.model_)):
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        return self

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Training targets as the loss takes them (subclasses override)."""
        return np.ascontiguousarray(y, dtype=np.float32)

    def _fit_stochastic(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                        incremental: bool, loss_scale: float, grad_scale: float,
                        tuner: _config.ThreadTuner | None) -> None:
        import time

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = bool(self.early_stopping)
        X_val = y_val = sw_val = None
        if early_stopping:
            stratify = y if isinstance(self, ClassifierMixin) and y.shape[1] == 1 else None
            arrays = [X, y] + ([sample_weight] if sample_weight is not None else [])
            split = train_test_split(*arrays, random_state=self._random_state,
                                     test_size=self.validation_fraction, stratify=stratify)
            X, X_val, y, y_val = split[:4]
            if sample_weight is not None:
                sample_weight, sw_val = split[4], split[5]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            X = np.ascontiguousarray(X)
            X_val = np.ascontiguousarray(X_val)
            y_val = self._decode(y_val)
        model = self.model_
        assert model.loss is not None and model.optimizer is not None
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped", stacklevel=3)
            batch_size = int(np.clip(self.batch_size, 1, n))
        target = self._targets(y)
        dense = self._dense_layers(model)
        weights = [d.params["weight"].reshape(-1) for d in dense]
        biases = [(d.params["bias"], d.grads["bias"]) for d in dense]
        alpha = float(self.alpha)
        opt = model.optimizer
        assert isinstance(opt, (SGD, Adam))
        xbuf = np.empty((batch_size, X.shape[1]), dtype=np.float32)
        tbuf = np.empty((batch_size,) + target.shape[1:], dtype=target.dtype)
        wbuf = np.empty(batch_size, dtype=np.float64)
        idx_all = np.arange(n)
        self.n_iter_ = 0
        for _ in range(int(self.max_iter)):
            if self.shuffle:  # as sklearn.utils.shuffle(idx_all, random_state): compounded
                idx_all = idx_all[self._random_state.permutation(n)]
            accumulated = 0.0
            for start in range(0, n, batch_size):
                idx = idx_all[start:start + batch_size]
                m = idx.shape[0]
                xb, tb = xbuf[:m], tbuf[:m]
                np.take(X, idx, axis=0, out=xb)
                np.take(target, idx, axis=0, out=tb)
                wb = None
                sw_sum = float(m)
                if sample_weight is not None:
                    wb = wbuf[:m]
                    np.take(sample_weight, idx, out=wb)
                    sw_sum = float(wb.sum())
                    if sw_sum <= 0:  # nothing to learn from (scikit-learn would divide by 0)
                        continue
                t0 = time.perf_counter()
                out = model._forward(xb, training=True)
                batch_loss = model.loss(out, tb, prepared=True, sample_weight=wb) * loss_scale
                if not np.isfinite(batch_loss):
                    raise ValueError("Solver produced non-finite parameter weights. The input "
                                     "data may contain large values and need to be "
                                     "preprocessed.")
                grad = model.loss.backward()
                if grad_scale != 1.0:
                    grad *= grad_scale
                model.backward(grad)
                if alpha > 0:
                    # scikit-learn's L2 term: + alpha/2 sum(W^2) / sum(w) over the weights, not
                    # the biases; its gradient alpha W / sum(w) is the optimizer's weight decay
                    # (fused into its kernel), taken back out of the few bias gradients
                    c = alpha / sw_sum
                    opt.weight_decay = c
                    for b, gb in biases:
                        gb -= c * b
                    nt = _config.get_num_threads()  # the same sum at any thread count
                    sq = sum(_optim.grad_norm(w, nt) ** 2 for w in weights)
                    batch_loss += 0.5 * alpha * sq / sw_sum
                model.optimizer.step(model.layers)
                if tuner is not None:
                    tuner.step_done(time.perf_counter() - t0)
                accumulated += batch_loss * m
            self.n_iter_ += 1
            self.loss_ = accumulated / n
            self.t_ += n
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                model.optimizer.learning_rate = (float(self.learning_rate_init)
                                                 / (self.t_ + 1) ** float(self.power_t))
            if self._no_improvement_count > self.n_iter_no_change:
                if early_stopping:
                    msg = ("Validation score did not improve more than tol=%f for %d "
                           "consecutive epochs." % (self.tol, self.n_iter_no_change))
                else:
                    msg = ("Training loss did not improve more than tol=%f for %d consecutive "
                           "epochs." % (self.tol, self.n_iter_no_change))
                if self._trigger_stopping(msg):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                              "optimization hasn't converged yet." % self.max_iter,
                              ConvergenceWarning, stacklevel=3)
        if early_stopping:
            model.set_weights(self._best_weights)

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's ``trigger_stopping``: stop, or with sgd and ``learning_rate=
        'adaptive'`` divide the rate by 5 (stop once it is <= 1e-6)."""
        opt = self.model_.optimizer
        assert opt is not None
        if self.solver == "sgd" and self.learning_rate == "adaptive":
            lr = float(opt.current_learning_rate)
            if lr <= 1e-6:
                if self.verbose:
                    print(msg + " Learning rate too small. Stopping.")
                return True
            opt.learning_rate = lr / 5.0
            if self.verbose:
                print(msg + " Setting learning rate to %f" % (lr / 5.0))
            return False
        if self.verbose:
            print(msg + " Stopping.")
        return True

    def _update_no_improvement_count(self, early_stopping: bool, X_val: Any, y_val: Any,
                                     sw_val: Any) -> None:
        if early_stopping:
            score = self._score(X_val, y_val, sw_val)
            assert self.validation_scores_ is not None and self.best_validation_score_ is not None
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_weights = self.model_.get_weights()
        else:
            assert self.best_loss_ is not None
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _decode(self, y: np.ndarray) -> Any:
        return y

    # -- inference ------------------------------------------------------------------------------
    def _check_X_predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=np.float32, reset=False)
        return _dense32(X)

    def _raw_output(self, X: np.ndarray) -> np.ndarray:
        """The network's output (logits) ``(N, n_outputs_)`` float32 for checked X."""
        with _thread_limit(self.n_threads):
            return self.model_.predict(X, check_finite=False)

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Any:
        """Fit the network to ``X`` ``(n_samples, n_features)`` and ``y``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Converted to float32 (sparse input to dense).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classifier; a 2-D indicator matrix for multi-label) or targets.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights: each batch's loss is ``sum w l / sum w``, and the L2 term
            is divided by ``sum w`` (as scikit-learn).

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            A bad parameter (named), X or y of the wrong shape, NaN or inf, weights that
            diverge to non-finite values.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _dense32(X: Any) -> np.ndarray:
    if sp.issparse(X):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=np.float32)


_COMMON_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Width of each hidden layer (all ``> 0``).
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Of the hidden layers (fastnn's ``None``, ``"sigmoid"``, ``"tanh"``, ``"relu"``, fused
        into each Dense layer).
    solver : {"adam", "sgd"}, default="adam"
        ``"adam"``: fastnn's ``Adam`` (torch's update, whose ``eps`` is added to
        ``sqrt(v_hat)``; scikit-learn adds it to ``sqrt(v)``, a difference of order ``eps``).
        ``"sgd"``: fastnn's ``SGD(momentum, nesterov)``, the same update as scikit-learn's for
        a constant rate. No ``"lbfgs"``.
    alpha : float, default=0.0001
        L2 penalty as scikit-learn's: each batch's loss gets ``alpha / 2 * sum(W**2) / n_b``
        over the weight matrices (not the biases), ``n_b`` the batch's size (or its sum of
        sample weights), and its gradient ``alpha * W / n_b``. It is added to the weight
        gradients before the optimizer step (not the optimizers' ``weight_decay``, which
        would also decay the biases and not scale with the batch).
    batch_size : int or "auto", default="auto"
        ``"auto"``: ``min(200, n_samples)``; larger values are clipped with a warning.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Rate schedule of ``solver="sgd"`` (as scikit-learn: ``invscaling`` sets
        ``learning_rate_init / (t + 1) ** power_t`` after each epoch, ``t`` the samples seen;
        ``adaptive`` divides the rate by 5 instead of stopping).
    learning_rate_init : float, default=0.001
        ``> 0``.
    power_t : float, default=0.5
        Exponent of ``invscaling``.
    max_iter : int, default=200
        Epochs (``fit``); a ConvergenceWarning when all run without meeting ``tol``.
    shuffle : bool, default=True
        Shuffle the samples every epoch (from ``random_state``).
    random_state : int, RandomState or None, default=None
        Initial weights (Glorot uniform as scikit-learn's, drawn in the same order: the same
        seed gives scikit-learn's initial weights), shuffling, the early-stopping split and
        the dropout seeds.
    tol : float, default=1e-4
        Training stops when the loss (or the validation score with ``early_stopping``) has not
        improved by ``tol`` for more than ``n_iter_no_change`` epochs.
    verbose : bool, default=False
        Print the loss of every epoch.
    warm_start : bool, default=False
        ``fit`` continues from the current weights (with a new optimizer state).
    momentum : float, default=0.9
        SGD momentum, in ``[0, 1)``.
    nesterovs_momentum : bool, default=True
        Nesterov momentum (with ``momentum > 0``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified for single-output
        classification), stop on its score (accuracy or R^2), keep the best weights.
    validation_fraction : float, default=0.1
        In ``(0, 1)``.
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's decay rates, in ``[0, 1)``.
    epsilon : float, default=1e-8
        Adam's ``eps``, ``> 0``.
    n_iter_no_change : int, default=10
        ``>= 1``.
    dropout : float, default=0.0
        fastnn's: inverted dropout of this rate after each hidden layer in training (its masks a
        counter-based hash of the seed, so the same at any thread count); in ``[0, 1)``.
    n_threads : int or None, default=None
        fastnn's: at most this many OpenMP threads in ``fit`` / ``predict``, never more than
        the OpenMP limit in force (``OMP_NUM_THREADS``, threadpoolctl's ``threadpool_limits``,
        joblib's limits in its workers, so fastnn's threads never oversubscribe joblib's).
        ``fit`` runs at the faster of that count and 1 thread, re-checked as it trains
        (fastnn's thread tuning: on a machine where another process keeps a core busy, 2
        threads can be many times slower than 1; results are the same at any count).
        ``None``: fastnn's default count (or the one fixed by ``fastnn.set_num_threads``).
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier, scikit-learn's ``MLPClassifier`` on fastnn's kernels.

    Dense layers with ``activation``, then a linear output layer: softmax with cross-entropy
    for more than two classes, one logistic output with binary cross-entropy for two, one
    logistic output per label for a multi-label indicator ``y`` (binary cross-entropy summed
    over the labels, averaged over samples, as scikit-learn). Trained in float32.
    """ + _COMMON_DOC + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) (or (n_labels,) for multi-label)
    n_features_in_ : int
    loss_ : float
        The last epoch's mean loss (with the L2 term).
    loss_curve_ : list of float
        ``loss_`` of every epoch.
    best_loss_, validation_scores_, best_validation_score_ : as scikit-learn's
    n_iter_ : int
        Epochs run by the last ``fit`` (``partial_fit``: 1).
    t_ : int
        Training samples seen.
    coefs_, intercepts_ : list of ndarray
        ``(fan_in, fan_out)`` and ``(fan_out,)`` float64 copies of each layer's weights.
    n_layers_, n_outputs_ : int
    out_activation_ : {"softmax", "logistic"}
    model_ : fastnn.Sequential
        The trained network (its output is the logits).

    Shape
    -----
    - X: ``(N, n_features)``, any real dtype or sparse, converted to float32.
    - ``predict``: ``(N,)`` (``(N, n_labels)`` multi-label); ``predict_proba``:
      ``(N, n_classes)`` float64.

    Raises
    ------
    ValueError
        Continuous targets (``"Unknown label type"``), a single class, unknown classes in
        ``partial_fit``, bad parameters (named).

    References
    ----------
    scikit-learn's ``sklearn/neural_network/_multilayer_perceptron.py`` (the training
    semantics copied here); Glorot & Bengio, AISTATS 2010 (initialisation); Kingma & Ba,
    ICLR 2015 (Adam).

    Examples
    --------
    >>> from fastnn.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=10, random_state=0)
    >>> clf.fit(X_train, y_train).score(X_test, y_test)  # doctest: +SKIP
    """

    def _validate_input(self, X: Any, y: Any, incremental: bool,
                        reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=np.float32, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(f"warm_start can only be used where `y` has the same "
                                     f"classes as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        if len(self.classes_) < 2:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes, got 1 class: "
                             f"{self.classes_}")
        yb = self._label_binarizer.transform(y)
        self._y_type = self._label_binarizer.y_type_
        self.out_activation_ = "softmax" if self._y_type == "multiclass" else "logistic"
        return _dense32(X), np.asarray(yb)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.int64)
        return np.ascontiguousarray(y, dtype=np.float32)

    def _make_loss(self) -> tuple[Loss, float, float]:
        if self.out_activation_ == "softmax":
            return SoftmaxCrossEntropy(), 1.0, 1.0
        k = float(self.n_outputs_)  # fastnn averages over the K labels; scikit-learn sums
        return BinaryCrossEntropy(), k, k

    def _decode(self, y: np.ndarray) -> Any:
        return self._label_binarizer.inverse_transform(y)

    def _predict_checked(self, X: np.ndarray) -> np.ndarray:
        out = self._raw_output(X)
        if self.out_activation_ == "softmax":
            return np.asarray(self.classes_[np.argmax(out, axis=1)])
        ind = (out > 0).astype(np.int64)
        if self.n_outputs_ == 1:
            ind = ind.ravel()
        return np.asarray(self._label_binarizer.inverse_transform(ind))

    def _score(self, X: np.ndarray, y: Any, sample_weight: np.ndarray | None) -> float:
        return float(accuracy_score(y, self._predict_checked(X), sample_weight=sample_weight))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted classes ``(N,)`` (an indicator matrix ``(N, n_labels)`` for multi-label).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            X with another number of features than ``fit`` saw, NaN or inf.
        """
        return self._predict_checked(self._check_X_predict(X))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` float64, columns in ``classes_`` order:
        softmax of the logits, or ``[1 - p, p]`` with ``p = sigmoid(logit)`` for two classes
        (per label for multi-label, ``(N, n_labels)``)."""
        X = self._check_X_predict(X)
        out = self._raw_output(X)
        loss = SoftmaxCrossEntropy if self.out_activation_ == "softmax" else BinaryCrossEntropy
        p = np.asarray(loss.probabilities(out), dtype=np.float64)
        if self.n_outputs_ == 1:
            p = p.ravel()
            return np.column_stack([1.0 - p, p])
        return p

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """``log(predict_proba(X))``, ``(N, n_classes)`` float64."""
        p = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(p, out=p)

    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                    classes: ArrayLike | None = None) -> MLPClassifier:
        """One epoch over ``(X, y)``, continuing the weights and the optimizer's state.

        Parameters
        ----------
        X, y, sample_weight
            As :meth:`fit`.
        classes : array-like of shape (n_classes,), optional
            Every class of the task: required on the first call, ignored afterwards.

        Raises
        ------
        ValueError
            ``classes`` missing on the first call (or differing later), classes of ``y`` not
            in ``classes_``, ``early_stopping=True``.
        """
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            classes = unique_labels(classes)
            if not first and not np.array_equal(self.classes_, classes):
                raise ValueError(f"`classes={classes}` is not the same as on last call to "
                                 f"partial_fit, was: {self.classes_}")
        if first:
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        self._fit(X, y, sample_weight=sample_weight, incremental=True)
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor, scikit-learn's ``MLPRegressor`` on fastnn's kernels.

    Dense layers with ``activation``, then a linear output layer, trained on scikit-learn's
    squared error: the reported loss is ``0.5 * mean((y - pred)**2)`` over samples and outputs,
    the gradient ``(pred - y) / n`` per output (scikit-learn's, fastnn's ``MeanSquaredError``
    rescaled). Trained in float32.
    """ + _COMMON_DOC + """
    loss : {"squared_error"}, default="squared_error"
        The only loss (scikit-learn also has ``"poisson"``).

    Attributes
    ----------
    n_features_in_, loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_,
    n_iter_, t_, coefs_, intercepts_, n_layers_, n_outputs_, model_ : as :class:`MLPClassifier`
    out_activation_ : "identity"

    Shape
    -----
    - X: ``(N, n_features)``, converted to float32; y: ``(N,)`` or ``(N, n_outputs)``.
    - ``predict``: ``(N,)`` for one output, else ``(N, n_outputs)``, float64.

    Raises
    ------
    ValueError
        Bad parameters (named), X or y of the wrong shape, NaN or inf.

    References
    ----------
    scikit-learn's ``sklearn/neural_network/_multilayer_perceptron.py``.
    """

    def __init__(self, hidden_layer_sizes: int | Sequence[int] = (100,),
                 activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: int | str = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200,
                 shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, dropout: float = 0.0,
                 n_threads: int | None = None, loss: str = "squared_error") -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, dropout=dropout,
            n_threads=n_threads)
        self.loss = loss

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error', got {self.loss!r}")

    def _validate_input(self, X: Any, y: Any, incremental: bool,
                        reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=np.float32, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self.out_activation_ = "identity"
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        return _dense32(X), y

    def _make_loss(self) -> tuple[Loss, float, float]:
        # fastnn: mean((p - y)^2) over N K elements, gradient 2 (p - y) / (N K);
        # scikit-learn: 0.5 mean((p - y)^2), gradient (p - y) / N
        return MeanSquaredError(), 0.5, 0.5 * self.n_outputs_

    def _predict_checked(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self._raw_output(X), dtype=np.float64)
        return out.ravel() if out.shape[1] == 1 else out

    def _score(self, X: np.ndarray, y: Any, sample_weight: np.ndarray | None) -> float:
        pred = self._predict_checked(X)
        if not np.isfinite(pred).all():
            return float("nan")
        return float(r2_score(y, pred, sample_weight=sample_weight))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted targets, ``(N,)`` for one output, else ``(N, n_outputs)``, float64.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            X with another number of features than ``fit`` saw, NaN or inf.
        """
        return self._predict_checked(self._check_X_predict(X))

    def partial_fit(self, X: ArrayLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None) -> MLPRegressor:
        """One epoch over ``(X, y)``, continuing the weights and the optimizer's state.

        Raises
        ------
        ValueError
            As :meth:`fit`, and with ``early_stopping=True``.
        """
        self._fit(X, y, sample_weight=sample_weight, incremental=True)
        return self
