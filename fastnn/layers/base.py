"""The Layer interface every fastnn layer follows, the base of the layers with parameters, and the
layer registry (``LAYERS``) that ``fastnn.load`` rebuilds layers through."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _gemm
from .._config import get_num_threads
from .. import _validation as V
from .. import activations as act
from .. import init as initializers
from .._flat import ParamDict, ParamGroup
from .._registry import Registry, auto_register

if TYPE_CHECKING:
    from typing_extensions import Self

#: class name -> layer class; every Layer subclass registers itself when it is defined
LAYERS: Registry[Layer] = Registry("layer")


class Layer:
    """Base class: ``forward(X)`` caches what ``backward(grad_output)`` needs.

    Attributes
    ----------
    params : dict of str -> ndarray
        Trainable arrays (e.g. ``"weight"``, ``"bias"``); empty for layers without parameters.
    grads : dict of str -> ndarray
        Same keys and shapes as ``params``, filled by ``backward``.
    buffers : dict of str -> ndarray
        Non-trainable arrays of the layer's dtype (e.g. BatchNorm's ``"running_mean"``), saved
        and loaded with the model but not in the optimizer's flat buffer (PyTorch's
        ``register_buffer``); empty for most layers.
    dtype : numpy dtype
        float32 (default) or float64, fixed by :meth:`build`.

    Notes
    -----
    Arrays returned by ``forward`` and ``backward`` are buffers owned by the layer and reused
    (overwritten) by the next call with the same batch size: no allocation per step. Copy them if
    you keep them. ``Sequential.predict`` and ``Sequential.forward`` return copies.
    """

    #: whether backward must compute the gradient with respect to the input
    need_input_grad = True
    #: the mixed-precision policy: set on every layer by ``Sequential(dtype="mixed_bfloat16")``;
    #: Dense and Conv2D then round their GEMMs' inputs to bfloat16 (float32 sums)
    compute_bf16 = False
    #: the model's flat parameter group, once a model owns the layer (set by ``ParamGroup``)
    _param_group: ParamGroup

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(LAYERS, cls)

    def __init__(self) -> None:
        self._params = ParamDict(type(self).__name__)
        self._grads = ParamDict(type(self).__name__)
        self.dtype: np.dtype | None = None
        self.built = False

    @property
    def params(self) -> ParamDict:
        """Trainable arrays by name; assigning to an entry copies into it (:class:`ParamDict`)."""
        return self._params

    @property
    def grads(self) -> ParamDict:
        """Gradients of the last ``backward``, same names and shapes as ``params``."""
        return self._grads

    @property
    def buffers(self) -> ParamDict:
        """Non-trainable arrays by name (:meth:`buffer_shapes`); assigning to an entry copies into
        it, as for ``params``."""
        return self.__dict__.get("_state_buffers") or ParamDict(type(self).__name__)

    def _set_buffers(self, buffers: dict[str, np.ndarray]) -> None:
        """Install the non-trainable arrays (in ``build``), converted to the layer's dtype."""
        self._state_buffers = ParamDict(type(self).__name__, {
            k: np.array(v, dtype=self.dtype, order="C") for k, v in buffers.items()})

    def _set_params(self, params: dict[str, np.ndarray]) -> None:
        """Install freshly created parameters (in ``build``) and zeroed gradients of their shape."""
        name = type(self).__name__
        self._params = ParamDict(name, {k: np.ascontiguousarray(v, dtype=self.dtype)
                                        for k, v in params.items()})
        self._grads = ParamDict(name, {k: np.zeros_like(v) for k, v in self._params.items()})

    # -- construction -------------------------------------------------------------------------
    def build(self, dtype: DTypeLike = np.float32,
              rng: np.random.Generator | None = None) -> Self:
        """Create parameters in ``dtype`` from ``rng`` (a ``numpy.random.Generator``)."""
        self.dtype = V.check_dtype(dtype)
        self.built = True
        return self

    def _ensure_built(self, dtype: DTypeLike = np.float32) -> None:
        if not self.built:
            self.build(dtype)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample ``input_shape`` (no batch dimension).

        Raises
        ------
        ValueError
            If ``input_shape`` is not valid for this layer.
        """
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (used by ``save``)."""
        return {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters :meth:`build` creates, known before building (``fastnn.load``
        checks a file's arrays against them before reading any). ``{}``: no parameters; a layer
        with parameters overrides it."""
        return {}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the non-trainable arrays (:attr:`buffers`) :meth:`build` creates, known
        before building, like :meth:`param_shapes`; ``{}`` for most layers."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable training state that is neither a constructor argument nor an array
        (Dropout's step counter), saved with the model; ``{}`` for most layers."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (``fastnn.load`` calls it).

        Raises
        ------
        ValueError
            If ``state`` has a key the layer does not know or a bad value.
        """
        if not isinstance(state, dict):
            raise ValueError(f"{type(self).__name__} state must be a mapping, got {state!r}")
        if state:
            raise ValueError(f"{type(self).__name__} has no state entries {sorted(state)}")

    # -- computation --------------------------------------------------------------------------
    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        raise NotImplementedError

    def __call__(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        return self.forward(X, training=training)

    # -- helpers ------------------------------------------------------------------------------
    def _buffer(self, key: str, shape: Sequence[int],
                dtype: DTypeLike | None = None) -> np.ndarray:
        """A reusable C-contiguous work array (of this layer's dtype unless ``dtype`` is given),
        reallocated only when the shape changes."""
        bufs = self.__dict__.setdefault("_buffers", {})
        buf = bufs.get(key)
        if buf is None or buf.shape != tuple(shape):
            buf = np.empty(shape, dtype=self.dtype if dtype is None else dtype)
            bufs[key] = buf
        return buf

    def _packed_bf16(self, key: str, W: np.ndarray, trans: bool) -> np.ndarray | None:
        """Under the mixed_bfloat16 policy, the float32 matrix W (K, N) (its transpose when
        ``trans``) rounded to bfloat16 and packed for the bfloat16 GEMM, in a reused buffer:
        converted once per call and shared by every block of the kernel; else None."""
        if not self.compute_bf16 or W.dtype != np.float32:
            return None
        K, N = (W.shape[1], W.shape[0]) if trans else W.shape
        buf = self._buffer(key, (_gemm.packed_bf16_size(K, N),), np.uint16)
        _gemm.pack_bf16(W, trans, buf, get_num_threads())
        return buf

    def _packed_bf16_weight(self, W: np.ndarray, training: bool) -> np.ndarray | None:
        """The forward's packed W (K, N) under the mixed_bfloat16 policy (else None). In training,
        when an input gradient will follow, W^T is packed from the same read of W and kept for
        :meth:`_packed_bf16_transposed` (the weights the forward used)."""
        self.__dict__.pop("_wtpk_fresh", None)
        if not self.compute_bf16 or W.dtype != np.float32:
            return None
        K, N = W.shape
        if not (training and self.need_input_grad):
            return self._packed_bf16("Wpk", W, False)
        Wpk = self._buffer("Wpk", (_gemm.packed_bf16_size(K, N),), np.uint16)
        WTpk = self._buffer("WTpk", (_gemm.packed_bf16_size(N, K),), np.uint16)
        _gemm.pack_bf16_pair(W, Wpk, WTpk, get_num_threads())
        self._wtpk_fresh = True
        return Wpk

    def _packed_bf16_transposed(self, W: np.ndarray) -> np.ndarray | None:
        """The backward's packed W^T (N, K): the one the training forward packed, else packed
        now (None outside the mixed_bfloat16 policy)."""
        buf = self.__dict__.get("_buffers", {}).get("WTpk")
        if self.__dict__.pop("_wtpk_fresh", False) and buf is not None:
            return buf
        return self._packed_bf16("WTpk", W, True)

    def _check_input(self, X: Any, name: str = "X") -> np.ndarray:
        """Layer-level check: X must be an ndarray whose per-sample shape fits this layer; it is
        converted (copied) to the layer's dtype and made C-contiguous if needed. A layer not built
        yet (used outside a model) is built in X's dtype if X is float32 or float64."""
        if not self.built:  # used on its own: the layer takes a float input's dtype
            dtype = getattr(X, "dtype", None)
            self._ensure_built(dtype if dtype in V.FLOAT_DTYPES else np.float32)
        assert self.dtype is not None  # set by build
        if not isinstance(X, np.ndarray) or X.dtype != self.dtype or not X.flags.c_contiguous \
                or not X.flags.aligned:
            X = V.as_float_array(X, name, self.dtype, check_finite=False, allow_empty=True)
        if X.ndim < 1:
            raise ValueError(f"{name} must have a batch dimension, got shape {X.shape}")
        for buf in self.__dict__.get("_buffers", {}).values():
            if np.may_share_memory(X, buf):  # e.g. layer(layer(x)): the output buffer is reused
                X = X.copy()
                break
        self.output_shape(X.shape[1:])  # raises ValueError on a mismatch
        return X

    def _check_grad(self, grad_output: Any, expected_shape: Sequence[int] | None,
                    name: str = "grad_output") -> np.ndarray:
        """Layer-level check of a backward input against ``expected_shape``, the shape of the
        last forward's output (``None``: no forward yet, RuntimeError); converted and made
        C-contiguous and writable like ``_check_input``."""
        if expected_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        assert self.dtype is not None  # built by the forward pass
        if not isinstance(grad_output, np.ndarray) or grad_output.dtype != self.dtype \
                or not grad_output.flags.c_contiguous:
            grad_output = V.as_float_array(grad_output, name, self.dtype, check_finite=False,
                                           allow_empty=True)
        if grad_output.shape != tuple(expected_shape):
            raise ValueError(f"{name} must have shape {tuple(expected_shape)} (the output of the "
                             f"last forward), got {grad_output.shape}")
        if not grad_output.flags.writeable:  # kernels may compute dZ in place of it
            grad_output = grad_output.copy()
        return grad_output

    # the flat parameter group (fastnn._flat) is rebuilt by its owner; the work arrays of
    # _buffer are not state (a copy loaded read-only, e.g. joblib's memmap, could not reuse them)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_param_group", None)
        state.pop("_buffers", None)
        return state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ParamLayer(Layer):
    """Base of the layers with a ``weight``, a ``bias`` and a fused activation (Dense, Conv2D).

    It resolves the activation and the initialisers, creates the parameters in :meth:`build`
    from :meth:`param_shapes` and :meth:`fans`, writes :meth:`get_config`, and does the common
    start of ``backward`` (:meth:`_begin_backward`). A subclass gives its own size arguments
    (:meth:`_size_config`), the shapes, and the forward/backward kernel calls.

    Parameters
    ----------
    activation : str or None
        A name of :mod:`fastnn.activations` (``None``: identity).
    weight_init : str or callable, optional
        Default from the activation (He normal for the ReLU family, Glorot uniform otherwise).
    bias_init : str or callable
    alpha : float or None
        leaky_relu's negative slope or elu's scale, ``> 0``; ``None``: the activation's default
        (:data:`fastnn.activations.ACTIVATIONS`: leaky_relu 0.01, elu 1.0). Saved with the model
        for those two.

    Notes
    -----
    For the activations whose derivative needs the pre-activation (``from_z``: gelu, silu) the
    forward kernel also writes ``Z = X @ weight + bias`` (or the convolution) into a buffer of the
    layer, in the activation's own loop, and the backward kernel reads it in place of the output;
    the other activations keep only the output, as before.

    Raises
    ------
    ValueError
        Unknown activation or initialiser name; softmax where the layer does not allow it.
    """

    _abstract = True
    #: whether ``activation="softmax"`` (a row operation over a 2-D output) is allowed
    allow_softmax = True

    def __init__(self, activation: str | None = None, weight_init: Any = None,
                 bias_init: Any = "zeros", alpha: float | None = None) -> None:
        super().__init__()
        self.activation, self._kind, self.alpha = act.resolve(activation, alpha)
        if self._kind < 0 and not self.allow_softmax:
            raise ValueError(f"{type(self).__name__} does not take activation='softmax'; flatten "
                             f"and use a Dense layer (or the loss) for it")
        self.weight_init = (weight_init if weight_init is not None
                            else act.default_init(self.activation))
        self.bias_init = bias_init
        initializers.get(self.weight_init)
        initializers.get(self.bias_init)
        self._X: np.ndarray | None = None
        self._A: np.ndarray | None = None
        self._Z: np.ndarray | None = None

    # -- what a subclass defines --------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"weight": shape, "bias": shape}``."""
        raise NotImplementedError

    def fans(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` for the initialisers."""
        raise NotImplementedError

    def _size_config(self) -> dict[str, Any]:
        """The constructor's size arguments (the first entries of ``get_config``)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def build(self, dtype: DTypeLike = np.float32,
              rng: np.random.Generator | None = None) -> Self:
        """Create ``weight`` and ``bias`` in ``dtype`` from ``rng`` (a ``numpy.random.Generator``;
        a fresh unseeded one if None) with the layer's initialisers."""
        super().build(dtype, rng)
        assert self.dtype is not None  # set by Layer.build
        rng = rng if rng is not None else np.random.default_rng()
        shapes = self.param_shapes()
        fan_in, fan_out = self.fans()
        self._set_params({
            "weight": initializers.initialize(self.weight_init, shapes["weight"], fan_in, fan_out,
                                              rng, self.dtype),
            "bias": initializers.initialize(self.bias_init, shapes["bias"], fan_in, fan_out, rng,
                                            self.dtype, what="bias"),
        })
        return self

    @property
    def weight(self) -> np.ndarray:
        """The weight array (shape as the subclass documents), the layer's dtype."""
        return self.params["weight"]

    @property
    def bias(self) -> np.ndarray:
        """The bias, one entry per output feature or channel, the layer's dtype."""
        return self.params["bias"]

    def get_config(self) -> dict[str, Any]:
        cfg = self._size_config()
        cfg.update({
            "activation": None if self.activation == "identity" else self.activation,
            "weight_init": self.weight_init if isinstance(self.weight_init, str) else None,
            "bias_init": self.bias_init if isinstance(self.bias_init, str) else "zeros"})
        if act.ACTIVATIONS[self.activation].has_alpha:
            cfg["alpha"] = self.alpha
        return cfg

    def _z_buffer(self, shape: Sequence[int]) -> np.ndarray | None:
        """The buffer the forward kernel keeps the pre-activation in (``Z``), for the activations
        whose derivative needs it (gelu, silu); ``None`` for the others (no buffer, no write)."""
        if not act.ACTIVATIONS[self.activation].from_z:
            return None
        return self._buffer("Z", shape)

    def _begin_backward(self, grad_output: ArrayLike) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, int]:
        """The common start of ``backward``: check that forward ran and ``grad_output`` fits, then
        the buffers. Returns ``(X, A, dA, dZ, dX, kind)``: the last input and output (for gelu and
        silu the kept pre-activation Z instead of the output, which is what their backward
        kernels take), the gradient
        with respect to the output (for softmax already the gradient with respect to the logits,
        with ``kind`` identity), the ``dZ`` buffer (``dA`` itself for the identity), and the
        ``dX`` buffer (``None`` when ``need_input_grad`` is False).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X, A = self._X, self._A
        dA = self._check_grad(grad_output, None if A is None else A.shape)
        assert X is not None and A is not None  # set by forward (_check_grad raised otherwise)
        kind = self._kind
        if kind < 0:
            dA = act.softmax_backward(A, dA, self._buffer("dZ", A.shape))
            kind = act.IDENTITY
        dZ = dA if kind == act.IDENTITY else self._buffer("dZ", A.shape)
        dX = self._buffer("dX", X.shape) if self.need_input_grad else None
        if act.ACTIVATIONS[self.activation].from_z:
            assert self._Z is not None and self._Z.shape == A.shape  # kept by forward
            A = self._Z
        return X, A, dA, dZ, dX, kind
