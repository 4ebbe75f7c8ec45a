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


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length ``(size + 2 pad - kernel) // stride + 1`` (PyTorch's ``Conv2d`` formula with
    dilation 1), or 0 when the kernel does not fit."""
    if size + 2 * pad < kernel:
        return 0
    return (size + 2 * pad - kernel) // stride + 1


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
