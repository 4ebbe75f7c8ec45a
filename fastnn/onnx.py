"""ONNX export of a :class:`~fastnn.Sequential` model (inference form), for onnxruntime and
other ONNX runtimes.

``pip install fastnn[onnx]`` installs ``onnx`` (needed to export) and ``onnxruntime`` (to run the
file; the tests compare the two). ``import fastnn`` does not import either: this module imports
``onnx`` inside :func:`export` only.

The exported graph takes the array ``model.predict`` takes: float32 ``(N, *input_shape)``,
channels-last images ``(N, H, W, C)``, with a dynamic batch axis ``N``; its first output,
``"output"``, is what ``model.predict`` returns (logits when the last layer has no activation).
With ``probabilities=True`` a second output ``"probabilities"`` is what ``model.predict_proba``
returns (a row softmax, or an elementwise sigmoid for a model compiled with BinaryCrossEntropy).

How each layer is written (ONNX operators of the default domain, opset ``>= 17``):

================  ============================================================================
layer             ONNX
================  ============================================================================
Dense             ``Gemm(X, weight, bias)`` (weight ``(in, out)``, ``transB=0``), then the
                  activation
Conv2D            ``Conv`` on NCHW with the weight transposed from ``(kh, kw, in, out)`` to
                  ``(out, in, kh, kw)``; explicit ``pads`` ``[top, left, bottom, right]`` (so
                  TensorFlow's asymmetric "same" padding is exact), then the activation
MaxPool2D         ``MaxPool`` (padded positions ignored, as fastnn's)
AvgPool2D         ``AveragePool(count_include_pad=0)`` (divides by the real inputs, as fastnn's)
GlobalAvgPool2D   ``GlobalAveragePool`` then ``Flatten`` -> ``(N, C)``
Flatten           ``Flatten(axis=1)`` in fastnn's channels-last order (see below)
BatchNorm         ``BatchNormalization`` with the running statistics (inference form) on
                  ``(N, C)`` or channels-first ``(N, C, ...)``
LayerNorm         ``LayerNormalization(axis=-1)`` (opset 17)
Dropout           nothing (the identity at inference, as ``predict``)
Activation        relu ``Relu``; leaky_relu ``LeakyRelu(alpha)``; elu ``Elu(alpha)``; sigmoid
                  ``Sigmoid``; tanh ``Tanh``; softplus ``Softplus``; gelu (exact)
                  ``0.5 x (1 + Erf(x / sqrt 2))``; silu ``x / (1 + Exp(-x))``; softmax
                  ``Softmax(axis=-1)``; identity nothing
================  ============================================================================

Layout: fastnn is channels-last and ONNX's ``Conv`` and pools are channels-first, so the graph
transposes an image to NCHW (``Transpose(perm=[0, 3, 1, 2])``) before the first convolution or
pool of a run of them and keeps it there through BatchNorm, elementwise activations and further
convolutions; it transposes back only where channels-last order matters (LayerNorm, the output).
A ``Flatten`` of an NCHW tensor yields the features in ``(C, H, W)`` order where fastnn has
``(H, W, C)``; the export flattens without transposing and instead permutes the rows of the
following Dense layer's weight (or, if no Dense follows, gathers the features back into fastnn's
order), so the results are those of fastnn's channels-last flatten.

Models of float64 are exported with float32 weights (the graph computes in float32): their
outputs equal ``predict``'s to float32 precision.

References
----------
ONNX operator specifications (https://onnx.ai/onnx/operators/): Gemm, Conv, MaxPool,
AveragePool, GlobalAveragePool, BatchNormalization, LayerNormalization, Transpose, Flatten,
Gather; ``onnx.helper`` and ``onnx.checker`` (https://onnx.ai/onnx/api/).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from math import prod, sqrt
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _validation as V
from . import losses as losses_mod
from .layers import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LayerNorm, MaxPool2D)
from .model import Sequential

if TYPE_CHECKING:
    import onnx

__all__ = ["export", "MIN_OPSET", "SUPPORTED_LAYERS"]

#: the lowest opset the export writes: LayerNormalization appeared in opset 17
MIN_OPSET = 17

#: name of the graph's input, its output (``predict``) and the optional probabilities output
INPUT_NAME, OUTPUT_NAME, PROBA_NAME = "input", "output", "probabilities"


class _Graph:
    """The nodes and initialisers of the graph being written, and the state of the tensor that
    flows through it.

    Attributes
    ----------
    cur : str
        Name of the current tensor (the output of the layers converted so far).
    shape : tuple of int
        Its per-sample shape in fastnn's (channels-last) terms, as ``layer.output_shape`` gives.
    channels_first : bool
        Whether ``cur`` is stored channels-first ``(N, C, ...)`` (only for per-sample ranks
        ``>= 2``; ``(N, F)`` tensors are always channels-last).
    perm : ndarray of int64 or None
        For a flattened ``(N, F)`` tensor whose features are in channels-first order: ``cur[:, j]``
        holds fastnn's feature ``perm[j]``.
    """

    def __init__(self, onnx_mod: Any, shape: tuple[int, ...]) -> None:
        self.onnx = onnx_mod
        self.helper = onnx_mod.helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.cur = INPUT_NAME
        self.shape = shape
        self.channels_first = False
        self.perm: np.ndarray | None = None
        self.prefix = "input"
        self._used: set[str] = {INPUT_NAME}

    # -- names, constants, nodes ----------------------------------------------------------------
    def _name(self, base: str) -> str:
        name, k = f"{self.prefix}/{base}", 1
        while name in self._used:
            k += 1
            name = f"{self.prefix}/{base}_{k}"
        self._used.add(name)
        return name

    def const(self, base: str, value: np.ndarray, dtype: Any = np.float32) -> str:
        """Add ``value`` (cast to ``dtype``) as an initialiser; return its name."""
        name = self._name(base)
        arr = np.ascontiguousarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        """Add an ``op`` node on ``inputs``; return the name of its (single) output."""
        out = self._name(op)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def apply(self, op: str, *extra: str, **attrs: Any) -> None:
        """``cur = op(cur, *extra)``."""
        self.cur = self.node(op, [self.cur, *extra], **attrs)

    # -- layout ---------------------------------------------------------------------------------
    def to_channels_first(self) -> None:
        """Transpose ``(N, d1, ..., dk, C)`` to ``(N, C, d1, ..., dk)`` unless already so."""
        self.materialize()
        r = len(self.shape) + 1
        if r > 2 and not self.channels_first:
            self.apply("Transpose", perm=[0, r - 1, *range(1, r - 1)])
            self.channels_first = True

    def to_channels_last(self) -> None:
        """Transpose back to fastnn's ``(N, d1, ..., dk, C)``, and gather permuted features back
        into fastnn's order."""
        self.materialize()
        r = len(self.shape) + 1
        if r > 2 and self.channels_first:
            self.apply("Transpose", perm=[0, *range(2, r), 1])
            self.channels_first = False

    def materialize(self) -> None:
        """Undo a pending feature permutation (see :attr:`perm`) with a ``Gather`` on axis 1."""
        if self.perm is not None:
            inverse = np.argsort(self.perm).astype(np.int64)
            self.apply("Gather", self.const("fastnn_order", inverse, np.int64), axis=1)
            self.perm = None

    # -- activations ----------------------------------------------------------------------------
    def activation(self, name: str, alpha: float) -> None:
        """Apply fastnn's activation ``name`` elementwise (softmax over the last axis)."""
        if name == "identity":
            return
        if name == "softmax":  # permutation-equivariant: a pending permutation can stay
            self.apply("Softmax", axis=-1)
        elif name in _SIMPLE_ACTIVATIONS:
            self.apply(_SIMPLE_ACTIVATIONS[name])
        elif name == "leaky_relu":
            self.apply("LeakyRelu", alpha=float(alpha))
        elif name == "elu":
            self.apply("Elu", alpha=float(alpha))
        elif name == "silu":  # x / (1 + exp(-x)): onnxruntime's Sigmoid has an absolute error
            x = self.cur      # near 1e-7, which x * Sigmoid(x) multiplies by |x| (2e-6 at -18)
            denom = self.node("Add", [self.node("Exp", [self.node("Neg", [x])]),
                                      self.const("one", np.array(1.0))])
            self.cur = self.node("Div", [x, denom])
        elif name == "gelu":
            x = self.cur
            scaled = self.node("Mul", [x, self.const("inv_sqrt2", np.array(1.0 / sqrt(2.0)))])
            one_plus = self.node("Add", [self.node("Erf", [scaled]),
                                         self.const("one", np.array(1.0))])
            half_x = self.node("Mul", [x, self.const("half", np.array(0.5))])
            self.cur = self.node("Mul", [half_x, one_plus])
        else:  # pragma: no cover - every name of fastnn.activations is handled above
            raise ValueError(f"activation {name!r} has no ONNX form")


_SIMPLE_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
                       "softplus": "Softplus"}


# ---- one converter per layer class ---------------------------------------------------------------

def _dense(g: _Graph, layer: Dense) -> None:
    weight = np.asarray(layer.params["weight"])
    if g.perm is not None:  # features in channels-first order: permute the weight's rows to match
        weight = weight[g.perm]
        g.perm = None
    g.apply("Gemm", g.const("weight", weight), g.const("bias", layer.params["bias"]))
    g.activation(layer.activation, layer.alpha)


def _conv2d(g: _Graph, layer: Conv2D) -> None:
    H, W, _ = g.shape
    pt, pb, pl, pr = layer.pads(H, W)
    weight = np.asarray(layer.params["weight"]).transpose(3, 2, 0, 1)  # -> (out, in, kh, kw)
    g.to_channels_first()
    g.apply("Conv", g.const("weight", weight), g.const("bias", layer.params["bias"]),
            kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
            pads=[pt, pl, pb, pr], dilations=[1, 1], group=1)
    g.activation(layer.activation, layer.alpha)


def _pool(op: str, **extra: Any) -> Callable[[_Graph, Any], None]:
    def convert(g: _Graph, layer: MaxPool2D | AvgPool2D) -> None:
        H, W, _ = g.shape
        pt, pb, pl, pr = layer.pads(H, W)
        g.to_channels_first()
        g.apply(op, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                pads=[pt, pl, pb, pr], ceil_mode=0, **extra)
    return convert


def _global_avgpool(g: _Graph, layer: GlobalAvgPool2D) -> None:
    g.to_channels_first()
    g.apply("GlobalAveragePool")
    g.apply("Flatten", axis=1)
    g.channels_first = False


def _flatten(g: _Graph, layer: Flatten) -> None:
    if len(g.shape) == 1:
        return  # already (N, F)
    if g.channels_first:  # flatten in (C, d1, ...) order; the next Dense permutes its rows
        order = np.arange(prod(g.shape), dtype=np.int64).reshape(g.shape)
        g.perm = order.transpose(len(g.shape) - 1, *range(len(g.shape) - 1)).ravel()
        g.channels_first = False
    g.apply("Flatten", axis=1)


def _activation(g: _Graph, layer: Activation) -> None:
    g.activation(layer.activation, layer.alpha)


def _dropout(g: _Graph, layer: Dropout) -> None:
    return  # the identity at inference


def _batchnorm(g: _Graph, layer: BatchNorm) -> None:
    g.to_channels_first()  # (N, C) stays as it is; (N, ..., C) becomes (N, C, ...)
    g.apply("BatchNormalization", g.const("weight", layer.params["weight"]),
            g.const("bias", layer.params["bias"]),
            g.const("running_mean", layer.buffers["running_mean"]),
            g.const("running_var", layer.buffers["running_var"]), epsilon=float(layer.eps))


def _layernorm(g: _Graph, layer: LayerNorm) -> None:
    g.to_channels_last()
    g.apply("LayerNormalization", g.const("weight", layer.params["weight"]),
            g.const("bias", layer.params["bias"]), axis=-1, epsilon=float(layer.eps))


#: layer class -> converter; a layer is converted only if its class is exactly one of these (a
#: subclass may compute something else)
_CONVERTERS: dict[type[Layer], Callable[[_Graph, Any], None]] = {
    Dense: _dense,
    Conv2D: _conv2d,
    MaxPool2D: _pool("MaxPool"),
    AvgPool2D: _pool("AveragePool", count_include_pad=0),
    GlobalAvgPool2D: _global_avgpool,
    Flatten: _flatten,
    Activation: _activation,
    Dropout: _dropout,
    BatchNorm: _batchnorm,
    LayerNorm: _layernorm,
}

#: names of the layer classes :func:`export` converts
SUPPORTED_LAYERS: tuple[str, ...] = tuple(cls.__name__ for cls in _CONVERTERS)


# ---- the export ----------------------------------------------------------------------------------

def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("fastnn.onnx.export needs the onnx package: pip install "
                          "'fastnn[onnx]' (or pip install onnx onnxruntime)") from exc
    return onnx


def _probability_op(model: Sequential) -> str:
    """``predict_proba``'s function: Sigmoid for BinaryCrossEntropy, Softmax otherwise."""
    return "Sigmoid" if isinstance(model.loss, losses_mod.BinaryCrossEntropy) else "Softmax"


def _resolve_input_shape(model: Sequential,
                         input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is None:
        if model.input_shape is None:
            raise ValueError("the model has no input_shape: give export(..., input_shape=(H, W, "
                             "C)) (the per-sample shape, without the batch axis), or build the "
                             "model with Sequential(..., input_shape=...)")
        shape = tuple(model.input_shape)
    else:
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
            raise TypeError(f"input_shape must be a tuple of ints, got "
                            f"{type(input_shape).__name__} {input_shape!r}")
        shape = tuple(V.check_int(s, f"input_shape[{i}]", minimum=1)
                      for i, s in enumerate(input_shape))
        if model.input_shape is not None and shape != tuple(model.input_shape):
            raise ValueError(f"input_shape {shape} differs from the model's input_shape "
                             f"{tuple(model.input_shape)}")
    if not shape:
        raise ValueError("input_shape must have at least one dimension (per sample)")
    model.output_shape(shape)  # ValueError naming the first layer that does not fit
    return shape


def export(model: Sequential, path: str | os.PathLike[str] | None, opset: int = MIN_OPSET,
           probabilities: bool = False,
           input_shape: Sequence[int] | None = None) -> onnx.ModelProto:
    """Write ``model`` as an ONNX file whose graph computes ``model.predict``.

    Parameters
    ----------
    model : Sequential
        The model; every layer's class must be one of :data:`SUPPORTED_LAYERS` (exactly, not a
        subclass). BatchNorm uses its running statistics and Dropout is left out, as in
        ``predict``.
    path : str or os.PathLike or None
        The ``.onnx`` file to write; ``None`` writes nothing (the model is returned).
    opset : int, default=17
        The ONNX opset of the default domain, ``17 <= opset <=`` the installed onnx package's
        newest (``onnx.defs.onnx_opset_version()``). The file's IR version is the lowest that
        opset allows, so older runtimes can read it.
    probabilities : bool, default=False
        Add a second output ``"probabilities"``, ``(N, K)``: what ``model.predict_proba``
        returns, a row softmax of the output (``Softmax(axis=-1)``), or its elementwise sigmoid
        for a model compiled with BinaryCrossEntropy. Needs a 2-D output ``(N, K)``.
    input_shape : tuple of int, optional
        The per-sample input shape, e.g. ``(28, 28, 1)``; needed when the model has none (a
        convolutional model built without ``input_shape=``), and must equal it otherwise. Image
        sizes are fixed in the graph (convolution padding is computed for them); the batch axis
        is dynamic.

    Returns
    -------
    onnx.ModelProto
        The model written (already checked by ``onnx.checker.check_model(full_check=True)``).

    Shape
    -----
    - Graph input ``"input"``: float32 ``(N, *input_shape)``, e.g. ``(N, 784)`` or channels-last
      ``(N, H, W, C)``: the array ``model.predict`` takes; ``N`` is dynamic.
    - Output ``"output"``: float32 ``(N, *output_shape)``, ``model.predict(X)``.
    - Output ``"probabilities"`` (``probabilities=True``): float32 ``(N, K)``.

    Raises
    ------
    TypeError
        If ``model`` is not a Sequential; if a layer cannot be exported (the message names its
        index and class: e.g. a layer class of your own, or a subclass of a fastnn layer); a bad
        argument type.
    ValueError
        If ``opset`` is out of range; if the model has no input shape and none is given, or the
        given one does not fit; if ``probabilities=True`` and the output is not 2-D.
    ImportError
        If the ``onnx`` package is not installed (``pip install 'fastnn[onnx]'``).

    Notes
    -----
    The graph computes in float32 with onnxruntime's own kernels: its results equal
    ``predict``'s up to float32 rounding (the tests compare them at 1e-5 relative).

    Examples
    --------
    >>> import fastnn, onnxruntime as ort
    >>> from fastnn.onnx import export
    >>> model = fastnn.models.small_cnn(seed=0)
    >>> export(model, "cnn.onnx")             # or model.export_onnx("cnn.onnx")  # doctest: +SKIP
    >>> sess = ort.InferenceSession("cnn.onnx")                     # doctest: +SKIP
    >>> logits = sess.run(None, {"input": X})[0]    # == model.predict(X)  # doctest: +SKIP
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
    if not isinstance(probabilities, (bool, np.bool_)):
        raise TypeError(f"probabilities must be a bool, got {type(probabilities).__name__}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, an os.PathLike or None, got {type(path).__name__}")
    for i, layer in enumerate(model.layers):
        if type(layer) not in _CONVERTERS:
            sub = next((c.__name__ for c in _CONVERTERS if isinstance(layer, c)), None)
            why = (f"it subclasses {sub}, and a subclass may compute something else" if sub else
                   "fastnn.onnx converts only fastnn's own layers")
            raise TypeError(f"layer {i} ({type(layer).__name__}) cannot be exported to ONNX: "
                            f"{why}; supported: {', '.join(SUPPORTED_LAYERS)}")
    onnx_mod = _import_onnx()
    newest = int(onnx_mod.defs.onnx_opset_version())
    opset = V.check_int(opset, "opset", minimum=MIN_OPSET, maximum=newest)
    shape = _resolve_input_shape(model, input_shape)
    out_shape = model.output_shape(shape)
    if probabilities and len(out_shape) != 1:
        raise ValueError(f"probabilities=True needs a 2-D output (N, K); the model outputs (N, "
                         f"{', '.join(map(str, out_shape))})")

    g = _Graph(onnx_mod, shape)
    for i, layer in enumerate(model.layers):
        g.prefix = f"{i}_{type(layer).__name__}"
        _CONVERTERS[type(layer)](g, layer)
        g.shape = tuple(layer.output_shape(g.shape))
    g.prefix = "output"
    g.to_channels_last()
    if g.nodes and g.nodes[-1].output[0] == g.cur:
        g.nodes[-1].output[0] = OUTPUT_NAME  # the last node writes the graph's output
    else:  # no node (a model of Dropout / identity layers)
        g.nodes.append(g.helper.make_node("Identity", [g.cur], [OUTPUT_NAME], name="output"))
    helper, TensorProto = onnx_mod.helper, onnx_mod.TensorProto
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", *out_shape])]
    if probabilities:
        g.nodes.append(helper.make_node(_probability_op(model), [OUTPUT_NAME], [PROBA_NAME],
                                        name=PROBA_NAME, **({"axis": -1} if _probability_op(model)
                                                           == "Softmax" else {})))
        outputs.append(helper.make_tensor_value_info(PROBA_NAME, TensorProto.FLOAT,
                                                     ["N", *out_shape]))
    graph = helper.make_graph(
        g.nodes, "fastnn_sequential",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *shape])],
        outputs, initializer=g.initializers)
    opset_ids = [helper.make_opsetid("", opset)]
    from . import __version__

    proto = helper.make_model(graph, opset_imports=opset_ids, producer_name="fastnn",
                              producer_version=__version__,
                              doc_string=f"fastnn {__version__}: {model!r}"[:2000],
                              ir_version=helper.find_min_ir_version_for(opset_ids))
    helper.set_model_props(proto, {"fastnn_config": json.dumps(model.get_config())})
    onnx_mod.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx_mod.save(proto, os.fspath(path))
    return proto
