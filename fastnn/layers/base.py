"""The Layer interface every fastnn layer follows."""
import numpy as np

from .. import _validation as V


class Layer:
    """Base class: ``forward(X)`` caches what ``backward(grad_output)`` needs.

    Attributes
    ----------
    params : dict of str -> ndarray
        Trainable arrays (e.g. ``"weight"``, ``"bias"``); empty for layers without parameters.
    grads : dict of str -> ndarray
        Same keys and shapes as ``params``, filled by ``backward``.
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

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.dtype = None
        self.built = False

    # -- construction -------------------------------------------------------------------------
    def build(self, dtype=np.float32, rng=None):
        """Create parameters in ``dtype`` from ``rng`` (a ``numpy.random.Generator``)."""
        self.dtype = V.check_dtype(dtype)
        self.built = True
        return self

    def _ensure_built(self, dtype=np.float32):
        if not self.built:
            self.build(dtype)

    def output_shape(self, input_shape):
        """Per-sample output shape for a per-sample ``input_shape`` (no batch dimension).

        Raises
        ------
        ValueError
            If ``input_shape`` is not valid for this layer.
        """
        return tuple(input_shape)

    def get_config(self):
        """JSON-serialisable constructor arguments (used by ``save``)."""
        return {}

    # -- computation --------------------------------------------------------------------------
    def forward(self, X, training=True):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def __call__(self, X, training=True):
        return self.forward(X, training=training)

    # -- helpers ------------------------------------------------------------------------------
    def _buffer(self, key, shape, dtype=None):
        """A reusable C-contiguous work array (of this layer's dtype unless ``dtype`` is given),
        reallocated only when the shape changes."""
        bufs = self.__dict__.setdefault("_buffers", {})
        buf = bufs.get(key)
        if buf is None or buf.shape != tuple(shape):
            buf = np.empty(shape, dtype=self.dtype if dtype is None else dtype)
            bufs[key] = buf
        return buf

    def _check_input(self, X, name="X"):
        """Layer-level check: X must be an ndarray whose per-sample shape fits this layer; it is
        converted (copied) to the layer's dtype and made C-contiguous if needed."""
        self._ensure_built()
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

    def _check_grad(self, grad_output, expected_shape, name="grad_output"):
        """Layer-level check of a backward input against ``expected_shape``, the shape of the
        last forward's output (``None``: no forward yet, RuntimeError); converted and made
        C-contiguous and writable like ``_check_input``."""
        if expected_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
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

    def __getstate__(self):  # the flat parameter group (fastnn._flat) is rebuilt when needed
        state = self.__dict__.copy()
        state.pop("_param_group", None)
        return state

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
