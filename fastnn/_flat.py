"""One flat buffer behind many arrays: the parameters of a model, their gradients, each optimizer
slot. An optimizer then updates the whole model with one kernel call (one parallel region).

Each array becomes a C-contiguous view of a slice of the buffer; slices start on 64-byte
boundaries, and the padding between them stays 0 (the updates map 0 to 0).
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from numpy.typing import DTypeLike

if TYPE_CHECKING:
    from .layers.base import Layer
    from .model import Sequential

ALIGN_BYTES = 64


def _layout(shapes: Iterable[tuple[int, ...]], itemsize: int) -> tuple[list[int], int]:
    """Element offsets of arrays of ``shapes`` packed with 64-byte aligned starts, and the total."""
    step = max(1, ALIGN_BYTES // itemsize)
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        size = int(np.prod(shape, dtype=np.int64))
        total += -(-size // step) * step
    return offsets, total


def empty_like_layout(shapes: Sequence[tuple[int, ...]],
                      dtype: DTypeLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """A zeroed, 64-byte aligned 1-D buffer and its C-contiguous views of ``shapes``."""
    dtype = np.dtype(dtype)
    offsets, total = _layout(shapes, dtype.itemsize)
    raw = np.zeros(total * dtype.itemsize + ALIGN_BYTES, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN_BYTES
    flat = raw[start:start + total * dtype.itemsize].view(dtype)
    views = [flat[o:o + int(np.prod(s, dtype=np.int64))].reshape(s)
             for o, s in zip(offsets, shapes)]
    return flat, views


def pack(arrays: Sequence[np.ndarray],
         dtype: DTypeLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """Copy ``arrays`` into one new flat buffer; returns ``(flat, views)``, ``views[i]`` holding
    the values of ``arrays[i]`` with its shape."""
    flat, views = empty_like_layout([a.shape for a in arrays], dtype)
    for v, a in zip(views, arrays):
        np.copyto(v, a, casting="same_kind")
    return flat, views


class ParamDict(dict):
    """The parameters (gradients, optimizer slots) of one layer: a dict whose arrays change in place
    only.

    Assigning ``layer.params[name] = value`` copies ``value`` into the existing array (converted
    to the layer's dtype, any memory order), so the arrays stay views of the model's flat buffer
    and stay C-contiguous for the kernels. New names cannot be added and names
    cannot be removed.

    Raises
    ------
    KeyError
        Assigning a name the layer does not have.
    ValueError
        Assigning an array of another shape.
    TypeError
        Assigning something that is not numeric, or removing an entry.
    """

    def __init__(self, owner: str, arrays: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(arrays or {})
        self._owner = owner

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self:
            raise KeyError(f"{self._owner} has no parameter {name!r} (it has {sorted(self)})")
        target = dict.__getitem__(self, name)
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self._owner}.{name} must be a numeric array, got "
                            f"{type(value).__name__} ({exc})") from None
        if value.shape != target.shape:
            raise ValueError(f"{self._owner}.{name} must have shape {target.shape}, got "
                             f"{value.shape}")
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{self._owner}.{name} must be a real numeric array, got dtype "
                            f"{value.dtype}")
        np.copyto(target, value, casting="unsafe" if value.dtype.kind in "biu" else "same_kind")

    def _rebind(self, name: str, array: np.ndarray) -> None:
        """Point ``name`` at another array of the same values (the flat buffer's view)."""
        dict.__setitem__(self, name, array)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"the parameters of {self._owner} can be changed in place only")

    __delitem__ = pop = popitem = clear = setdefault = _refuse

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __reduce__(self) -> tuple:
        return (type(self), (self._owner, dict(self)))


class ParamGroup:
    """The parameters of ``layers`` in one flat buffer and their gradients in another.

    Building it rebinds every ``layer.params[name]`` and ``layer.grads[name]`` to a view of the
    buffers (values kept). The views stay the layers' arrays for good: a layer's ``params`` is a
    :class:`~fastnn.layers.base.ParamDict`, which changes values in place only.
    ``Sequential`` builds its group when it is constructed and owns it.

    Attributes
    ----------
    layers : tuple of Layer
    params, grads : 1-D ndarray
        The flat buffers, of the parameters' dtype.
    entries : list of (layer, name, param view, grad view)
        In layer order, then the order of each layer's ``params``.

    Raises
    ------
    TypeError
        If the parameters do not share one dtype.
    """

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = tuple(layers)
        # a weakref to the model that owns the group, set by the model
        self.owner: weakref.ref[Sequential] | None = None
        names = [(layer, name) for layer in self.layers for name in layer.params]
        params = [layer.params[name] for layer, name in names]
        dtypes = {np.dtype(p.dtype) for p in params}
        if len(dtypes) > 1:
            raise TypeError(f"the parameters must share one dtype, got {sorted(map(str, dtypes))}")
        dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        self.params, pviews = pack(params, dtype)
        self.grads, gviews = pack([layer.grads[name] for layer, name in names], dtype)
        self.entries: list[tuple[Layer, str, np.ndarray, np.ndarray]]
        self.entries = []
        for (layer, name), pv, gv in zip(names, pviews, gviews):
            layer.params._rebind(name, pv)
            layer.grads._rebind(name, gv)
            self.entries.append((layer, name, pv, gv))
        for layer in self.layers:
            layer._param_group = self

    def keys(self) -> list[str]:
        """``"<layer index>.<name>"`` for each entry (the names used in files and optimizer
        state)."""
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        return [f"{index[id(layer)]}.{name}" for layer, name, _, _ in self.entries]


def param_group(layers: Iterable[Layer]) -> ParamGroup:
    """The :class:`ParamGroup` of exactly ``layers`` (in this order): the one they already
    belong to, or a new one (which copies the current values into new flat buffers)."""
    layers = tuple(layers)
    group = getattr(layers[0], "_param_group", None) if layers else None
    if group is not None and len(group.layers) == len(layers) \
            and all(a is b for a, b in zip(group.layers, layers)):
        return group
    return ParamGroup(layers)
