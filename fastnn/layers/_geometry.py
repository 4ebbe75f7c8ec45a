"""Geometry of channels-last image layers (convolution, pooling): sizes, pairs, shape checks."""
from __future__ import annotations

from collections.abc import Sequence

from .. import _validation as V


def pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each ``>= minimum``, as a tuple ``(h, w)``.

    Raises
    ------
    TypeError
        If a value is not an int (bool is refused).
    ValueError
        If a value is below ``minimum`` or a sequence does not have two entries.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (V.check_int(value[0], f"{name}[0]", minimum=minimum),
                V.check_int(value[1], f"{name}[1]", minimum=minimum))
    v = V.check_int(value, name, minimum=minimum)
    return (v, v)


#: the padding names Conv2D and the pools accept (besides ints), as in Keras / TensorFlow
PADDING_MODES = ("valid", "same")

#: what a layer stores for its padding: a mode name or a pair ``(padding_h, padding_w)``
Padding = str | tuple[int, int]


def padding_arg(value: str | int | Sequence[int], name: str = "padding") -> Padding:
    """A padding argument checked and normalised: ``"same"`` / ``"valid"`` (any case, stored
    lower-case) or an int or pair of ints ``>= 0`` as ``(padding_h, padding_w)``.

    Raises
    ------
    ValueError
        If a string is not one of :data:`PADDING_MODES` (the message names them), an int is
        negative or a sequence does not have two entries.
    TypeError
        If the value is neither a string nor ints (bool is refused).
    """
    if isinstance(value, str):
        mode = value.lower()
        if mode not in PADDING_MODES:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, PADDING_MODES))}, an int "
                             f"or a pair (h, w) of ints >= 0, got {value!r}")
        return mode
    return pair(value, name, 0)


def axis_pads(padding: Padding, size: int, kernel: int, stride: int,
              axis: int) -> tuple[int, int]:
    """Padding ``(before, after)`` of one axis (0: height, 1: width) of length ``size``.

    - ``"valid"``: ``(0, 0)``.
    - ``"same"``: TensorFlow's arithmetic, ``out = ceil(size / stride)``,
      ``total = max((out - 1) stride + kernel - size, 0)``, ``before = total // 2`` and
      ``after = total - before`` (the odd row or column goes to the bottom / right).
    - a pair ``(p_h, p_w)``: ``(p, p)`` for this axis (symmetric, as PyTorch).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return (total // 2, total - total // 2)
    return (padding[axis], padding[axis])


def conv_out(size: int, kernel: int, stride: int, pad: int, pad_end: int | None = None) -> int:
    """Output length ``(size + pad + pad_end - kernel) // stride + 1`` (PyTorch's ``Conv2d``
    formula with dilation 1; ``pad_end`` defaults to ``pad``), or 0 when the kernel does not fit."""
    pad_end = pad if pad_end is None else pad_end
    if size + pad + pad_end < kernel:
        return 0
    return (size + pad + pad_end - kernel) // stride + 1


def check_image_shape(layer: str, input_shape: Sequence[int],
                      channels: int | None) -> tuple[int, int, int]:
    """Per-sample input shape ``(H, W, C)`` (``C == channels`` unless ``channels`` is None);
    returns it as ints.

    Raises
    ------
    ValueError
        Naming ``layer``, if the shape is not 3-D, is empty, or has the wrong channel count.
    """
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{layer} expects input of shape (N, H, W, C) (channels-last), got (N, "
                         f"{', '.join(map(str, shape))})")
    H, W, C = (int(s) for s in shape)
    if H < 1 or W < 1 or C < 1:
        raise ValueError(f"{layer} expects a non-empty image, got input of shape (N, {H}, {W}, "
                         f"{C})")
    if channels is not None and C != channels:
        raise ValueError(f"{layer} expects {channels} input channels (last axis, channels-last), "
                         f"got input of shape (N, {H}, {W}, {C})")
    return H, W, C
